"""``--rl-refine``: RL started from a network's restoration, fitted to the data first."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import fftconvolve

from deconv.errors import DeconvError
from deconv.io import read_image
from deconv.metrics import evaluate
from deconv.richardson_lucy import richardson_lucy
from deconv.runtime.rl_refine import fit_start
from tests.test_cli import assert_clean_failure, call
from tests.test_rl_consensus import MODEL, rings, run_each  # noqa: F401  (shared fixture)


def test_fit_start_recovers_the_gain_and_offset_that_made_the_data(rng, psf2d):
    network = rng.uniform(0.0, 1.0, size=(40, 48)).astype(np.float32)
    psf = psf2d.data / psf2d.data.sum()
    data = 7.5 * fftconvolve(network, psf, mode="same") + 3.0 + 30.0
    np.testing.assert_allclose(fit_start(network, data, psf2d.data, 30.0),
                               7.5 * network + 3.0, rtol=1e-4)  # fmt: skip


def test_fit_start_refuses_an_output_that_does_not_explain_the_data(rng, psf2d):
    data = rng.uniform(10.0, 20.0, size=(32, 32)).astype(np.float32)
    with pytest.raises(DeconvError, match="fitted gain is not positive"):
        fit_start(-data, data, psf2d.data, 0.0)
    with pytest.raises(DeconvError, match="do not match"):
        fit_start(data[:, :30], data, psf2d.data, 0.0)


def test_run_writes_rl_started_from_the_fitted_network_output(tmp_path, capsys, rings):  # noqa: F811
    image, psf_file, gt = rings
    outputs = run_each(capsys, tmp_path, image, {
        "network": ["--model", MODEL],
        "rl": ["--model", "rl", "--psf", str(psf_file), "--iterations", "100"],
        "refine": ["--model", MODEL, "--rl-refine", "25"],
    })  # fmt: skip
    raw, psf = read_image(image).data, read_image(psf_file).data
    start = fit_start(outputs["network"].data, raw, psf, 30.0)
    expected = richardson_lucy(raw, psf, iterations=25, background=30.0, start=start)
    refined = outputs["refine"]
    np.testing.assert_allclose(refined.data, expected, rtol=1e-4,
                               atol=1e-4 * float(np.abs(expected).max()))  # fmt: skip
    run = refined.extra["deconv.run"]
    assert run["rl_refine"] == 25 and run["rl"]["iterations"] == 25
    assert run["rl"]["background"] == 30.0
    # the point of it: better than the network and than RL near its best count, on a class
    # the network never saw
    scores = {name: evaluate(image.data, gt)["psnr"] for name, image in outputs.items()}
    assert scores["refine"] > max(scores["network"], scores["rl"]) + 0.3, scores


def test_refine_refuses_what_it_cannot_do(tmp_path, capsys, rings):  # noqa: F811
    image, psf_file, _ = rings
    out = str(tmp_path / "o.tif")
    code, _, err = call(capsys, "run", str(image), "-o", out, "--model", "rl", "--psf",
                        str(psf_file), "--rl-refine", "50")  # fmt: skip
    assert code == 2 and "--rl-refine combines a trained network with RL" in err
    code, _, err = call(capsys, "run", str(image), "-o", out, "--model", MODEL,
                        "--rl-refine", "20", "--rl-consensus", "20")  # fmt: skip
    assert code == 2 and "pick one" in err
    code, _, err = call(capsys, "run", str(image), "-o", str(tmp_path / "o.zarr"), "--model",
                        MODEL, "--rl-refine", "20")  # fmt: skip
    assert code == 2 and "needs it in memory" in err
    assert not (tmp_path / "o.tif").exists() and not (tmp_path / "o.zarr").exists()


def test_auto_runs_the_count_the_shipped_weights_record(tmp_path, capsys, rings):  # noqa: F811
    from deconv.zoo.pretrained import pretrained_record

    image, _, _ = rings
    recorded = pretrained_record(MODEL).rl_refine
    assert recorded == 25  # chosen on validation images of the training classes (BENCHMARKS)
    outputs = run_each(capsys, tmp_path, image, {
        "auto": ["--model", MODEL, "--rl-refine", "auto"],
        "explicit": ["--model", MODEL, "--rl-refine", str(recorded)],
    })  # fmt: skip
    np.testing.assert_array_equal(outputs["auto"].data, outputs["explicit"].data)
    assert outputs["auto"].extra["deconv.run"]["rl_refine"] == recorded
    code, out, _ = call(capsys, "info", MODEL)
    assert code == 0 and f"--rl-refine auto  {recorded} RL iterations" in out


def test_auto_needs_a_recorded_count_and_counts_must_be_whole(tmp_path, capsys, rings):  # noqa: F811
    from dataclasses import replace

    from deconv.exporters.sources import resolve_source
    from deconv.runtime.run import RunOptions, _rl_hybrid

    options = RunOptions(model="runs/mine", rl_refine="auto")
    unrecorded = replace(resolve_source(MODEL), rl_refine=None)  # as a run directory is
    with pytest.raises(DeconvError, match="runs/mine records none: give a number"):
        _rl_hybrid(options, unrecorded)
    image, _, _ = rings
    out = tmp_path / "o.tif"
    for bad in ("0", "many", "2.5"):
        code, _, err = call(capsys, "run", str(image), "-o", str(out), "--model", MODEL,
                            "--rl-refine", bad)  # fmt: skip
        assert_clean_failure(code, err, "--rl-refine: a number of iterations >= 1 or 'auto'", out)


def test_a_stack_is_refined_image_by_image(tmp_path, capsys, rings):  # noqa: F811
    from deconv.io import write_image

    image, _, _ = rings
    raw = read_image(image)
    planes = [raw.data, raw.data[::-1].copy()]
    stack = write_image(tmp_path / "stack.tif", np.stack(planes),
                        voxel_size=(1.0, *raw.voxel_size))  # fmt: skip
    singles = {f"plane{i}": write_image(tmp_path / f"plane{i}.tif", p, voxel_size=raw.voxel_size)
               for i, p in enumerate(planes)}  # fmt: skip
    args = ["--model", MODEL, "--rl-refine", "auto"]
    stacked = run_each(capsys, tmp_path / "s", stack, {"stack": [*args, "--stack"]})
    for i, path in enumerate(singles.values()):
        alone = run_each(capsys, tmp_path, path, {f"alone{i}": args})[f"alone{i}"]
        np.testing.assert_allclose(stacked["stack"].data[i], alone.data, rtol=1e-5,
                                   atol=1e-5 * float(np.abs(alone.data).max()))  # fmt: skip
