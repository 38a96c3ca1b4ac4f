"""Tests for deconv.metrics against scikit-image and the literature's normalisation convention."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from deconv.errors import DeconvError
from deconv.metrics import evaluate, fit_affine, normalize_percentile, psnr, ssim


def _pair(rng, shape):
    """A smooth target in [0, 1] and a noisy, blurred estimate of it."""
    target = gaussian_filter(rng.uniform(size=shape), 2.0)
    target = (target - target.min()) / (target.max() - target.min())
    prediction = gaussian_filter(target, 1.0) + rng.normal(0, 0.05, size=shape)
    return prediction, target


@pytest.mark.parametrize("shape", [(48, 64), (16, 24, 32)])
def test_ssim_matches_skimage(rng, shape):
    prediction, target = _pair(rng, shape)
    expected = structural_similarity(
        prediction,
        target,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert 0.1 < expected < 0.99  # a non-trivial case
    assert ssim(prediction, target) == pytest.approx(expected, abs=1e-6)


def test_ssim_with_other_data_range_matches_skimage(rng):
    prediction, target = _pair(rng, (40, 40))
    expected = structural_similarity(
        prediction * 255,
        target * 255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255.0,
    )
    assert ssim(prediction * 255, target * 255, data_range=255.0) == pytest.approx(
        expected, abs=1e-6
    )


@pytest.mark.parametrize("shape", [(48, 64), (16, 24, 32)])
def test_psnr_matches_skimage(rng, shape):
    prediction, target = _pair(rng, shape)
    expected = peak_signal_noise_ratio(target, prediction, data_range=1.0)
    assert psnr(prediction, target) == pytest.approx(expected, abs=1e-9)
    expected = peak_signal_noise_ratio(target * 4, prediction * 4, data_range=4.0)
    assert psnr(prediction * 4, target * 4, data_range=4.0) == pytest.approx(expected, abs=1e-9)


def test_psnr_known_value():
    target = np.zeros((10, 10))
    prediction = np.full((10, 10), 0.1)  # mse 0.01 -> 20 dB
    assert psnr(prediction, target) == pytest.approx(20.0, abs=1e-9)


def test_identical_images_give_infinite_psnr_and_unit_ssim(rng):
    _, target = _pair(rng, (32, 32))
    assert psnr(target, target) == float("inf")
    assert ssim(target, target) == pytest.approx(1.0, abs=1e-12)


def test_evaluate_perfect_prediction(rng):
    _, target = _pair(rng, (32, 40))
    scores = evaluate(target * 500 + 20, target)
    assert scores["psnr"] > 120  # float32 round-off only
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-9)


def test_evaluate_perfect_prediction_is_limited_by_float64_only(rng):
    _, target = _pair(rng, (32, 40))
    assert evaluate(target, target)["psnr"] > 250


def test_evaluate_is_invariant_to_affine_rescaling(rng):
    prediction, target = _pair(rng, (16, 24, 32))
    base = evaluate(prediction, target)
    for a, b in [(3.0, 7.0), (0.01, -5.0), (250.0, 1000.0)]:
        scores = evaluate(a * prediction + b, target)
        assert scores["psnr"] == pytest.approx(base["psnr"], abs=1e-4)
        assert scores["ssim"] == pytest.approx(base["ssim"], abs=1e-5)


def test_evaluate_follows_the_stated_convention(rng):
    """Percentile-normalised target, least-squares affine fit, then skimage's metrics."""
    prediction, target = _pair(rng, (48, 48))
    ground_truth = target * 800 + 30
    lo, hi = np.percentile(ground_truth, [0.1, 99.9])
    t = (ground_truth - lo) / (hi - lo)
    design = np.stack([prediction.ravel(), np.ones(prediction.size)], axis=1)
    coef, *_ = np.linalg.lstsq(design, t.ravel(), rcond=None)
    fitted = (design @ coef).reshape(t.shape)
    scores = evaluate(prediction, ground_truth)
    assert scores["psnr"] == pytest.approx(
        peak_signal_noise_ratio(t, fitted, data_range=1.0), abs=1e-4
    )
    expected_ssim = structural_similarity(
        fitted, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    assert scores["ssim"] == pytest.approx(expected_ssim, abs=1e-5)


def test_normalize_percentile_maps_percentiles_to_0_and_1(rng):
    image = rng.uniform(0, 1000, size=(64, 64))
    out = normalize_percentile(image)
    lo, hi = np.percentile(image, [0.1, 99.9])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, (image - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    assert out.min() < 0 and out.max() > 1  # not clipped


def test_fit_affine_recovers_exact_affine_relation(rng):
    target = rng.uniform(size=(20, 20))
    fitted = fit_affine(0.25 * target - 3.0, target)
    np.testing.assert_allclose(fitted, target, atol=1e-6)
    constant = fit_affine(np.ones((5, 5)), target[:5, :5])  # no variance: the target's mean
    np.testing.assert_allclose(constant, target[:5, :5].mean(), rtol=1e-6)


def test_evaluate_rejects_shape_mismatch():
    with pytest.raises(DeconvError, match="differ in shape") as info:
        evaluate(np.zeros((10, 12)), np.zeros((12, 10)))
    assert "(10, 12)" in str(info.value) and "(12, 10)" in str(info.value)


@pytest.mark.parametrize("autocast", [None, "bfloat16"])
def test_training_ssim_matches_skimage_also_under_autocast(rng, autocast):
    """The loss's SSIM (valid-mode windows = skimage's crop) stays float32 in a bfloat16 step."""
    import torch

    from deconv.zoo.losses import ssim_torch

    dtype = getattr(torch, autocast) if autocast else torch.float32
    # the network's output arrives in the autocast dtype: score those very values
    batch = [
        torch.from_numpy(a.astype(np.float32))[None, None].to(dtype)
        for a in _pair(rng, (16, 24, 32))
    ]
    prediction, target = (t[0, 0].double().numpy() for t in batch)
    expected = structural_similarity(
        prediction, target, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=1.0,
    )  # fmt: skip
    with torch.autocast("cpu", dtype=dtype, enabled=autocast is not None):
        value = ssim_torch(*batch)
    assert value.dtype == torch.float32
    assert value.item() == pytest.approx(expected, abs=1e-5)
