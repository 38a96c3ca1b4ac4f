"""Floor matching: a sparse sample is scaled down until its background sits where the
training data's did (deconv.normalization; benchmarks/quality-log.md session 37)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.ndimage

from deconv.exporters.sources import resolve_source
from deconv.io import read_image, write_image
from deconv.metrics import evaluate
from deconv.normalization import dark_floor, input_range, network_input, normalize
from deconv.psf import generate_psf, save_psf
from deconv.runtime.predict import predict
from deconv.synth import SynthConfig, simulate_pair
from deconv.zoo.card import Normalization
from tests.test_cli import call
from tests.test_rl_consensus import MODEL, run_each

MODEL_3D = "rln3d.widefield-synthetic"


def percentiles_only(source) -> Normalization:
    return source.normalization.percentiles_only()


@pytest.fixture(scope="module")
def sparse_and_dense(tmp_path_factory):
    """2D dots alone (sparse) and the training mixture (dense), from seeds no run used."""
    psf = resolve_source(MODEL).psf
    folder = tmp_path_factory.mktemp("floor")
    images = {}
    for name, classes in (("dots", ("dots",)), ("mix", ("spheres", "dots", "lines", "boxes"))):
        raw, gt = simulate_pair((256, 256), psf.data, 616_161, SynthConfig(structures=classes))
        images[name] = (write_image(folder / f"{name}.tif", raw, voxel_size=psf.voxel_size),
                        raw, gt)  # fmt: skip
    return images


def test_dark_floor_is_the_background_level_with_the_noise_averaged_out():
    rng = np.random.default_rng(0)
    image = rng.poisson(100.0, (128, 128)).astype(np.float32) / 1000.0
    image[40:60, 40:60] += 5.0  # an object does not move the floor
    assert dark_floor(image) == pytest.approx(0.1, abs=0.005)
    # the smoothing is what makes it the level: the raw 1st percentile sits ~2.3 sigma lower
    assert np.percentile(image, 1) < 0.1 - 0.02
    box = scipy.ndimage.uniform_filter(image, 5)
    assert dark_floor(image) == pytest.approx(float(np.percentile(box, 1)))


def test_the_gain_folds_into_the_range_and_is_one_for_training_like_images():
    image = np.random.default_rng(1).poisson(50.0, (64, 64)).astype(np.float32)
    plain = Normalization(kind="percentile", low=0.01, high=99.8)
    floor = dark_floor(normalize(image, plain))
    at_floor = plain.model_copy(update={"reference_floor": floor})
    assert input_range(image, at_floor)[2] == 1.0  # not above the reference: untouched
    lower = plain.model_copy(update={"reference_floor": floor / 4})
    lo, hi, gain = input_range(image, lower)
    assert gain == pytest.approx(4**-0.75)
    np.testing.assert_allclose(network_input(image, lower), normalize(image, plain) * gain,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    assert (lo, hi) != input_range(image, plain)[:2]


def test_run_restores_a_sparse_image_better_and_leaves_a_dense_one_alone(
    tmp_path, capsys, sparse_and_dense
):
    source = resolve_source(MODEL)
    scores = {}
    for name, (image, raw, gt) in sparse_and_dense.items():
        outputs = run_each(capsys, tmp_path / name, image, {
            "matched": ["--model", MODEL],
            "percentiles": ["--model", MODEL, "--no-match-floor"],
        })  # fmt: skip
        scores[name] = {k: evaluate(v.data, gt)["psnr"] for k, v in outputs.items()}
        # --no-match-floor is the percentile normalisation alone, mapped back to input units
        lo, hi = np.percentile(raw, [source.normalization.low, source.normalization.high])
        expected = predict(source.model, source.card, (raw - lo) / (hi - lo)) * (hi - lo) + lo
        np.testing.assert_allclose(outputs["percentiles"].data, expected, rtol=1e-4,
                                   atol=1e-4 * float(np.abs(expected).max()))  # fmt: skip
        if name == "mix":  # a dense sample's floor is within the training data's: no change
            np.testing.assert_array_equal(outputs["matched"].data, outputs["percentiles"].data)
        assert outputs["matched"].extra["deconv.run"]["match_floor"] is True
    # sparse dots: +4.4 dB on seeds 2000-2003 and +4.5 dB on 3000-3003 (quality-log.md, session 37)
    assert scores["dots"]["matched"] > scores["dots"]["percentiles"] + 3.0, scores


def test_run_says_when_it_scaled_the_input(tmp_path, capsys, sparse_and_dense):
    image = sparse_and_dense["dots"][0]
    code, _, err = call(capsys, "run", str(image), "-o", str(tmp_path / "o.tif"), "--model", MODEL)
    assert code == 0 and "floor matching: the input scaled by 0." in err
    assert "--no-match-floor" in err
    dense = sparse_and_dense["mix"][0]
    code, _, err = call(capsys, "run", str(dense), "-o", str(tmp_path / "d.tif"), "--model", MODEL)
    assert code == 0 and "floor matching" not in err


def test_sparse_3d_lines_gain_with_the_shipped_3d_network():
    source = resolve_source(MODEL_3D)
    config = SynthConfig(structures=("lines",))
    raw, gt = simulate_pair((64, 128, 128), source.psf.data, 616_161, config)
    plain = predict(source.model, source.card, network_input(raw, percentiles_only(source)))
    matched = predict(source.model, source.card, network_input(raw, source.normalization))
    assert input_range(raw, source.normalization)[2] < 0.5  # lines alone: a lifted floor
    # +1.1 / +1.7 dB on 64x128x128 volumes of seeds 2000 / 3000 (quality-log.md, s. 37)
    assert evaluate(matched, gt)["psnr"] > evaluate(plain, gt)["psnr"] + 0.5


def test_zarr_streaming_matches_the_in_memory_run(tmp_path, capsys, sparse_and_dense):
    image = sparse_and_dense["dots"][0]
    for out in ("o.tif", "o.zarr"):
        code, _, err = call(capsys, "run", str(image), "-o", str(tmp_path / out), "--model",
                            MODEL, "-q")  # fmt: skip
        assert code == 0, err
    in_memory, streamed = read_image(tmp_path / "o.tif").data, read_image(tmp_path / "o.zarr").data
    np.testing.assert_allclose(streamed, in_memory, rtol=1e-4,
                               atol=1e-4 * float(np.abs(in_memory).max()))  # fmt: skip


def test_other_percentiles_drop_the_reference_floor():
    norm = resolve_source(MODEL).normalization
    assert norm.reference_floor is not None
    assert norm.with_percentiles((norm.low, norm.high), "m").reference_floor == norm.reference_floor
    assert norm.with_percentiles((0.01, 99.8), "m").reference_floor is None


def test_info_shows_the_reference_floor(capsys):
    code, out, _ = call(capsys, "info", MODEL)
    floor = resolve_source(MODEL).normalization.reference_floor
    assert code == 0 and f"reference floor   {floor:.4g}" in out


def test_training_records_the_floor_of_its_inputs_and_export_recomputes_it(tmp_path, monkeypatch):
    """The loop measures the floor on its pool and validation; a run recorded before floor
    matching gets it rebuilt from its record when it is exported: both must agree."""
    from deconv.training import TrainConfig, train
    from deconv.zoo import pretrained as pretrained_module
    from deconv.zoo.pretrained import export_pretrained

    psf = save_psf(generate_psf(shape=(9, 17, 17)), tmp_path / "psf.tif")
    run = tmp_path / "run"
    train(TrainConfig(model="rln3d_tiny", psf=str(psf), steps=1, val_every=1, patch=(16, 32, 32),
                      volume_shape=(32, 64, 64), pool_size=2, batch_size=1,
                      validation_count=1), run)  # fmt: skip
    recorded = json.loads((run / "normalization.json").read_text())
    card = json.loads((run / "run.json").read_text())["card"]
    assert recorded["reference_floor"] > 0
    assert card["normalization"]["reference_floor"] == recorded["reference_floor"]
    del recorded["reference_floor"]
    (run / "normalization.json").write_text(json.dumps(recorded))
    monkeypatch.setattr(pretrained_module, "WEIGHTS_DIR", tmp_path / "weights")
    export_pretrained(run, "rln3d_tiny.test", "deconv train ...", {"validation_psnr": 1.0})
    record = pretrained_module.pretrained_record("rln3d_tiny.test")
    expected = card["normalization"]["reference_floor"]
    assert record.normalization.reference_floor == pytest.approx(expected)
