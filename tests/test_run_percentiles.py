"""``--percentiles``: where a network's input normalisation sits, per run and per model."""

from __future__ import annotations

import numpy as np
import pytest

from deconv.exporters.sources import resolve_source
from deconv.io import write_image
from deconv.metrics import evaluate
from deconv.normalization import percentile_range
from deconv.runtime.predict import predict
from deconv.synth import SynthConfig, simulate_pair
from deconv.zoo import get_model_card
from deconv.zoo.card import Normalization
from deconv.zoo.pretrained import pretrained_record
from tests.test_cli import assert_clean_failure, call
from tests.test_rl_consensus import MODEL, run_each


@pytest.fixture(scope="module")
def dots(tmp_path_factory):
    """A sparse 2D image: dots alone (a training class), from a seed no run used."""
    psf = resolve_source(MODEL).psf
    raw, gt = simulate_pair((256, 256), psf.data, 515_151, SynthConfig(structures=("dots",)))
    folder = tmp_path_factory.mktemp("dots")
    return write_image(folder / "dots.tif", raw, voxel_size=psf.voxel_size), raw, gt


def test_shipped_cards_show_the_percentiles_their_weights_were_trained_with():
    for name in ("rln2d.widefield-synthetic", "rln3d.widefield-synthetic"):
        assert get_model_card(name).normalization == pretrained_record(name).normalization
    assert get_model_card(MODEL).normalization.high == 99.99  # quality-log.md, session 36
    assert get_model_card("rln2d").normalization.high == 99.8  # the architecture's


def test_run_normalises_by_the_given_percentiles(tmp_path, capsys, dots):
    image, raw, gt = dots
    outputs = run_each(capsys, tmp_path, image, {
        "default": ["--model", MODEL],
        "explicit": ["--model", MODEL, "--percentiles", "0.01,99.99"],
        "paper": ["--model", MODEL, "--percentiles", "0.01,99.8"],
    })  # fmt: skip
    np.testing.assert_array_equal(outputs["default"].data, outputs["explicit"].data)
    # the library composition with the paper's percentiles, mapped back to input units
    source = resolve_source(MODEL)
    norm = Normalization(kind="percentile", low=0.01, high=99.8)
    lo, hi = percentile_range(raw, norm)
    expected = predict(source.model, source.card, (raw - lo) / (hi - lo)) * (hi - lo) + lo
    np.testing.assert_allclose(outputs["paper"].data, expected, rtol=1e-4,
                               atol=1e-4 * float(np.abs(expected).max()))  # fmt: skip
    assert outputs["paper"].extra["deconv.run"]["percentiles"] == [0.01, 99.8]
    # why the shipped 2D weights moved to 99.99: a sparse image reaches the network at the
    # level of its training images (+4.4 dB on this image; benchmarks/quality-log.md session 36)
    scores = {k: evaluate(v.data, gt)["psnr"] for k, v in outputs.items()}
    assert scores["default"] > scores["paper"] + 1.0, scores


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--model", MODEL, "--percentiles", "99.9,1"], "percentiles needs 0 <= LOW < HIGH"),
        (["--model", MODEL, "--percentiles", "0.01"], "--percentiles"),
        (["--model", "rl", "--psf", "PSF", "--percentiles", "0.01,99.9"], "RL works on the raw"),
    ],
)
def test_bad_percentiles_fail_cleanly(tmp_path, capsys, dots, args, needle):
    image, _, _ = dots
    psf = write_image(tmp_path / "psf.tif", resolve_source(MODEL).psf.data)
    out = tmp_path / "o.tif"
    args = [str(psf) if a == "PSF" else a for a in args]
    code, _, err = call(capsys, "run", str(image), "-o", str(out), *args)
    assert_clean_failure(code, err, needle, out)
