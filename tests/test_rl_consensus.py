"""``--rl-consensus``: the mean of a network and RL, fitted by least squares, wired into run."""

from __future__ import annotations

import numpy as np
import pytest

from deconv.exporters.sources import resolve_source
from deconv.io import read_image, write_image
from deconv.metrics import evaluate
from deconv.runtime.rl_consensus import rl_consensus
from deconv.synth import SynthConfig, simulate_pair
from tests.test_cli import call

MODEL = "rln2d.widefield-synthetic"


def test_consensus_matches_a_polyfit_reference(rng):
    network = rng.random((12, 20)).astype(np.float32)
    rl = 40.0 * network + 3.0 + rng.normal(0, 2.0, network.shape)
    gain, offset = np.polyfit(network.ravel(), rl.ravel(), 1)
    for weight in (0.0, 0.3, 0.5, 1.0):
        expected = weight * (gain * network + offset) + (1 - weight) * rl
        np.testing.assert_allclose(rl_consensus(network, rl, weight), expected, rtol=1e-5)


def test_a_network_that_is_an_affine_copy_of_rl_leaves_rl_unchanged(rng):
    rl = rng.random((6, 8, 8)) * 100.0
    np.testing.assert_allclose(rl_consensus(0.01 * rl - 0.2, rl), rl, rtol=1e-5)


def test_mismatched_inputs_raise(rng):
    with pytest.raises(ValueError, match="differ in shape"):
        rl_consensus(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        rl_consensus(np.zeros((4, 4)), np.zeros((4, 4)), weight=1.5)


@pytest.fixture(scope="module")
def rings(tmp_path_factory):
    """A held-out 2D image of the class the shipped 2D network never saw, and the model's PSF."""
    psf = resolve_source(MODEL).psf
    raw, gt = simulate_pair((256, 256), psf.data, 424_243, SynthConfig(structures=("shells",)))
    folder = tmp_path_factory.mktemp("rings")
    image = write_image(folder / "rings.tif", raw, voxel_size=psf.voxel_size)
    psf_file = write_image(folder / "psf.tif", psf.data, voxel_size=psf.voxel_size)
    return image, psf_file, gt


def run_each(capsys, folder, image, variants: dict[str, list[str]]) -> dict:
    """``deconv run`` of ``image`` once per named argument list (background 30), read back."""
    outputs = {}
    for name, args in variants.items():
        out = folder / f"{name}.tif"
        code, _, err = call(capsys, "run", str(image), "-o", str(out), *args,
                            "--background", "30", "-q")  # fmt: skip
        assert code == 0, err
        outputs[name] = read_image(out)
    return outputs


def test_run_writes_the_mean_of_the_network_run_and_the_rl_run(tmp_path, capsys, rings):
    image, psf_file, gt = rings
    outputs = run_each(capsys, tmp_path, image, {
        "network": ["--model", MODEL],
        "rl": ["--model", "rl", "--psf", str(psf_file), "--iterations", "100"],
        "consensus": ["--model", MODEL, "--rl-consensus", "100"],
    })  # fmt: skip
    network, rl = outputs["network"].data, outputs["rl"].data
    consensus = outputs["consensus"]
    np.testing.assert_allclose(consensus.data, rl_consensus(network, rl), rtol=1e-4,
                               atol=1e-4 * float(np.abs(rl).max()))  # fmt: skip
    run = consensus.extra["deconv.run"]
    assert run["rl_consensus"] == 100 and run["rl"]["iterations"] == 100
    assert run["rl"]["background"] == 30.0
    # the point of it: better than either alone on a class the network never saw
    scores = {name: evaluate(image.data, gt)["psnr"] for name, image in outputs.items()}
    assert scores["consensus"] > max(scores["network"], scores["rl"]) + 0.2, scores


def test_consensus_refuses_what_it_cannot_do(tmp_path, capsys, rings):
    image, psf_file, _ = rings
    out = str(tmp_path / "o.tif")
    code, _, err = call(capsys, "run", str(image), "-o", out, "--model", "rl", "--psf",
                        str(psf_file), "--rl-consensus", "50")  # fmt: skip
    assert code == 2 and "--model rl is RL alone" in err
    code, _, err = call(capsys, "run", str(image), "-o", str(tmp_path / "o.zarr"), "--model",
                        MODEL, "--rl-consensus", "50")  # fmt: skip
    assert code == 2 and "needs it in memory" in err
    code, _, err = call(capsys, "run", str(image), "-o", out, "--model", MODEL,
                        "--rl-consensus", "0")  # fmt: skip
    assert code == 2 and "--rl-consensus" in err
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o.zarr").exists()


def test_an_image_too_small_for_rl_fails_before_the_network_runs(tmp_path, capsys, monkeypatch):
    import deconv.runtime.backends as backends

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran before the RL check")

    monkeypatch.setattr(backends, "make_backend", no_network)
    psf = resolve_source(MODEL).psf
    image = write_image(tmp_path / "tiny.tif", np.ones((16, 16), np.float32),
                        voxel_size=psf.voxel_size)  # fmt: skip
    code, _, err = call(capsys, "run", str(image), "-o", str(tmp_path / "o.tif"), "--model",
                        MODEL, "--rl-consensus", "10")  # fmt: skip
    assert code == 2 and "PSF" in err, err
    assert not (tmp_path / "o.tif").exists()
