"""Tests for deconv.richardson_lucy and deconv.back_projectors.

The reference is scikit-image's richardson_lucy (zero boundary, "same" convolution); the edge
modes are checked against properties RL must have (a flat image is a fixed point, flux is kept),
and the quality claims on held-out synthetic data from deconv.synth.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import ndimage
from scipy.signal import fftconvolve
from skimage.restoration import richardson_lucy as skimage_rl

from deconv.back_projectors import BACK_PROJECTORS, BackProjectorConfig, back_projector
from deconv.errors import DeconvError
from deconv.metrics import evaluate
from deconv.psf import fwhm, generate_psf
from deconv.richardson_lucy import RichardsonLucy, RLConfig, richardson_lucy
from deconv.synth import simulate_pair

ORACLE = {"boundary": "zero", "init": 0.5, "back_projector": "traditional", "background": 0.0}


def _kernel_tf(kernel: np.ndarray) -> np.ndarray:
    """|FFT| of a centred kernel, DC at index 0."""
    return np.abs(np.fft.fftn(np.fft.ifftshift(kernel.astype(np.float64))))


# ---- the oracle: scikit-image ----------------------------------------------------------------


def test_zero_boundary_matches_skimage_3d(rng, psf3d):
    image = rng.uniform(0.2, 3.0, size=(20, 40, 36)).astype(np.float32)
    expected = skimage_rl(image.astype(np.float64), psf3d.data.astype(np.float64), 10, clip=False)
    out = richardson_lucy(image, psf3d.data, iterations=10, **ORACLE)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4 * expected.max())
    assert np.abs(out - image).max() > 0.1  # 10 iterations did change the image


def test_zero_boundary_matches_skimage_2d(rng, psf2d):
    image = rng.uniform(0.2, 3.0, size=(50, 60)).astype(np.float32)
    expected = skimage_rl(image.astype(np.float64), psf2d.data.astype(np.float64), 10, clip=False)
    out = richardson_lucy(image, psf2d.data, RLConfig(iterations=10, **ORACLE))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4 * expected.max())


def test_zero_boundary_matches_skimage_with_asymmetric_psf(rng):
    """An asymmetric PSF catches a missing flip in the back projection."""
    psf = rng.uniform(size=(5, 7)) * np.outer(np.hanning(7)[1:-1], np.hanning(9)[1:-1])
    psf[0, 0] += 0.5
    psf /= psf.sum()
    image = rng.uniform(0.5, 2.0, size=(30, 33)).astype(np.float32)
    expected = skimage_rl(image.astype(np.float64), psf, 8, clip=False)
    out = richardson_lucy(image, psf, iterations=8, **ORACLE)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-4 * expected.max())


# ---- edges -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "boundary",
    [
        "reflect",
        "noncirculant",
    ],
)
@pytest.mark.parametrize("ndim", [2, 3])
def test_flat_image_is_a_fixed_point(psf2d, psf3d, boundary, ndim):
    psf = psf3d if ndim == 3 else psf2d
    shape = (20, 40, 36) if ndim == 3 else (50, 60)
    image = np.full(shape, 100.0, np.float32)
    out = richardson_lucy(image, psf.data, iterations=10, boundary=boundary)
    np.testing.assert_allclose(out, 100.0, rtol=1e-3)  # including every edge voxel


def test_flat_image_with_background_is_a_fixed_point(psf2d):
    image = np.full((40, 44), 130.0, np.float32)
    out = richardson_lucy(image, psf2d.data, iterations=10, boundary="reflect", background=30.0)
    np.testing.assert_allclose(out, 100.0, rtol=1e-3)


def _periodic_rl(
    image: np.ndarray, psf: np.ndarray, iterations: int, start: np.ndarray | None = None
) -> np.ndarray:
    """Textbook circulant RL with scipy's wrap-around convolution (the behaviour to avoid)."""
    x = np.full_like(image, image.mean()) if start is None else start.copy()
    mirror = psf[::-1, ::-1]
    for _ in range(iterations):
        blurred = ndimage.convolve(x, psf, mode="wrap")
        x = x * ndimage.convolve(image / blurred, mirror, mode="wrap")
    return x


def test_noncirculant_does_not_fold_an_edge_object_to_the_opposite_edge(psf2d):
    psf = psf2d.data.astype(np.float64)
    truth = np.ones((64, 64))
    truth[28:36, :4] += 1000.0  # bright object cut by the left edge
    image = fftconvolve(np.pad(truth, 16, mode="edge"), psf, mode="same")[16:-16, 16:-16]
    far = (slice(20, 44), slice(-4, None))  # the right edge, facing the object
    periodic = _periodic_rl(image, psf, 30)
    out = richardson_lucy(image.astype(np.float32), psf, iterations=30)
    assert np.abs(periodic[far] - 1.0).max() > 0.5  # circulant RL wraps the object around
    assert np.abs(out[far] - 1.0).max() < 0.1
    assert out[30:34, 0].mean() > 100  # and the object itself is restored


@pytest.mark.parametrize("boundary", ["noncirculant", "reflect"])
def test_flux_is_preserved_for_object_inside_field(psf3d, boundary):
    truth = np.zeros((24, 64, 64))
    truth[10:14, 28:36, 26:38] = 100.0
    truth[12, 20, 40] = 500.0
    image = fftconvolve(truth, psf3d.data.astype(np.float64), mode="same").clip(0)
    assert image.sum() == pytest.approx(truth.sum(), rel=1e-3)  # the blur fits in the field
    out = richardson_lucy(image.astype(np.float32), psf3d.data, iterations=30, boundary=boundary)
    assert out.sum(dtype=np.float64) == pytest.approx(truth.sum(), rel=0.02)
    assert out.max() > 2 * image.max()  # and it did sharpen


# ---- quality on held-out synthetic data ------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    psf = generate_psf(shape=(25, 49, 49)).data
    raw, gt = simulate_pair((32, 96, 96), psf, seed=2024)
    return psf, raw, gt


@pytest.fixture(scope="module")
def traditional_30(synthetic):
    psf, raw, gt = synthetic
    out = RichardsonLucy(psf, RLConfig(background=30.0))(raw, iterations=30).numpy()
    return evaluate(out, gt)["psnr"]


def test_rl_improves_psnr_over_raw(synthetic, traditional_30):
    _, raw, gt = synthetic
    raw_psnr = evaluate(raw, gt)["psnr"]
    assert traditional_30 > raw_psnr + 1.5, (raw_psnr, traditional_30)


def test_wiener_butterworth_in_3_iterations_matches_30_traditional(synthetic, traditional_30):
    psf, raw, gt = synthetic
    rl = RichardsonLucy(psf, RLConfig(background=30.0, back_projector="wiener-butterworth"))
    scores = [evaluate(rl(raw, iterations=n).numpy(), gt)["psnr"] for n in (1, 2, 3)]
    assert max(scores) >= traditional_30, (scores, traditional_30)


def test_acceleration_needs_fewer_iterations(synthetic, traditional_30):
    psf, raw, gt = synthetic
    rl = RichardsonLucy(psf, RLConfig(background=30.0, acceleration=True))
    accelerated_15 = evaluate(rl(raw, iterations=15).numpy(), gt)["psnr"]
    assert accelerated_15 >= traditional_30, (accelerated_15, traditional_30)


# ---- batches and stacks ----------------------------------------------------------------------


def test_batch_equals_images_alone(rng, psf2d):
    images = rng.uniform(5, 50, size=(2, 40, 44)).astype(np.float32)
    images[1] *= 3
    rl = RichardsonLucy(psf2d.data, RLConfig(iterations=15))
    batch = rl(images).numpy()
    assert batch.shape == images.shape
    for i in range(2):
        np.testing.assert_allclose(batch[i], rl(images[i]).numpy(), rtol=1e-5, atol=1e-5)
    # A (2, 1, ...) batch keeps its shape.
    assert rl(images[:, None]).shape == (2, 1, 40, 44)


def test_batch_images_do_not_interact_through_the_floor(psf2d):
    rng = np.random.default_rng(1)

    def sparse(scale):
        truth = np.zeros((48, 48))
        truth[rng.integers(0, 48, 10), rng.integers(0, 48, 10)] = scale
        blurred = fftconvolve(truth, psf2d.data.astype(np.float64), mode="same").clip(0)
        return (blurred + 0.001 * scale).astype(np.float32)

    bright, dim = sparse(1000.0), sparse(1.0)
    rl = RichardsonLucy(psf2d.data, RLConfig(iterations=20))
    batch = rl(np.stack([bright, dim])).numpy()
    alone = rl(dim).numpy()
    np.testing.assert_allclose(batch[1], alone, rtol=1e-4, atol=1e-4 * alone.max())


def test_stack_of_planes_equals_per_plane(rng, psf2d):
    stack = rng.uniform(1, 10, size=(3, 30, 34)).astype(np.float32)
    out = richardson_lucy(stack, psf2d.data, stack=True, iterations=5)
    assert out.shape == stack.shape
    for i in range(3):
        alone = richardson_lucy(stack[i], psf2d.data, iterations=5)
        np.testing.assert_allclose(out[i], alone, rtol=1e-5, atol=1e-5)


def test_callback_counts_iterations(rng, psf2d):
    seen: list[int] = []
    richardson_lucy(rng.uniform(1, 2, (20, 20)), psf2d.data, iterations=4, callback=seen.append)
    assert seen == [1, 2, 3, 4]


def test_torch_input_and_plan_cache(rng, psf2d):
    image = rng.uniform(1, 2, (24, 24)).astype(np.float32)
    rl = RichardsonLucy(psf2d.data, RLConfig(iterations=3))
    out = rl(torch.from_numpy(image))
    assert isinstance(out, torch.Tensor)
    assert rl.plan((24, 24)) is rl.plan([24, 24])
    np.testing.assert_array_equal(out.numpy(), rl(image).numpy())


# ---- back projectors -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", BACK_PROJECTORS)
def test_back_projector_shape_and_normalisation(psf3d, kind):
    kernel = back_projector(psf3d.data, BackProjectorConfig(kind=kind))
    assert kernel.shape == psf3d.data.shape
    assert kernel.dtype == np.float32
    assert float(kernel.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    centre = tuple(n // 2 for n in kernel.shape)
    assert np.unravel_index(int(np.argmax(kernel)), kernel.shape) == centre


def test_traditional_back_projector_is_flipped_psf(rng):
    psf = rng.uniform(size=(5, 7, 9))
    kernel = back_projector(psf, BackProjectorConfig(kind="traditional"))
    np.testing.assert_allclose(kernel, psf[::-1, ::-1, ::-1] / psf.sum(), rtol=1e-6)


def test_gaussian_back_projector_has_the_psf_fwhm(psf3d):
    kernel = back_projector(psf3d.data, BackProjectorConfig(kind="gaussian")).astype(np.float64)
    centre = tuple(n // 2 for n in kernel.shape)
    for axis, width in enumerate(fwhm(psf3d.data)):
        sigma = width / (2 * np.sqrt(2 * np.log(2)))
        index = list(centre)
        index[axis] = slice(None)
        profile = kernel[tuple(index)] / kernel[centre]
        offsets = np.arange(kernel.shape[axis]) - centre[axis]
        np.testing.assert_allclose(profile, np.exp(-0.5 * (offsets / sigma) ** 2), atol=1e-6)


def test_wiener_butterworth_passes_more_high_frequencies(psf3d):
    psf = psf3d.data
    traditional = _kernel_tf(back_projector(psf, BackProjectorConfig(kind="traditional")))
    wb = _kernel_tf(back_projector(psf, BackProjectorConfig(kind="wiener-butterworth")))
    for axis, (n, width) in enumerate(zip(psf.shape, fwhm(psf), strict=True)):
        half_cutoff = round(n / width / 2)
        index = [0] * psf.ndim
        index[axis] = half_cutoff
        assert wb[tuple(index)] > 2 * traditional[tuple(index)], axis


@pytest.mark.parametrize("kind", ["butterworth", "wiener-butterworth"])
def test_gain_at_cutoff_is_beta(kind):
    """Resolution chosen so the cutoff falls on frequency index 8 of a 31-sample PSF."""
    psf = generate_psf(shape=(31, 31)).data
    config = BackProjectorConfig(kind=kind, alpha=0.001, beta=0.02, resolution=(31 / 8, 31 / 8))
    tf = _kernel_tf(back_projector(psf, config))
    assert tf[0, 8] / tf[0, 0] == pytest.approx(0.02, rel=0.03)
    assert tf[8, 0] / tf[0, 0] == pytest.approx(0.02, rel=0.03)
    assert tf[0, 12] / tf[0, 0] < 0.002  # steep roll-off beyond the cutoff


def test_back_projector_rejects_bad_resolution(psf3d):
    with pytest.raises(DeconvError, match="3 positive values"):
        back_projector(psf3d.data, BackProjectorConfig(kind="butterworth", resolution=(2.0, 2.0)))


# ---- bad input -------------------------------------------------------------------------------


def test_2d_psf_on_3d_image_suggests_stack(psf2d):
    with pytest.raises(DeconvError, match="--stack"):
        richardson_lucy(np.ones((3, 30, 30), np.float32), psf2d.data)


def test_dimension_mismatch_without_stack_hint(psf3d):
    with pytest.raises(DeconvError, match="3D") as info:
        richardson_lucy(np.ones((30, 30), np.float32), psf3d.data)
    assert "--stack" not in str(info.value)


def test_psf_larger_than_image(psf2d):
    with pytest.raises(DeconvError, match="larger"):
        richardson_lucy(np.ones((12, 40), np.float32), psf2d.data)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_image(psf2d, bad):
    image = np.ones((30, 30), np.float32)
    image[3, 4] = bad
    with pytest.raises(DeconvError, match="NaN or Inf"):
        richardson_lucy(image, psf2d.data)


def test_rl_config_forbids_unknown_keys():
    with pytest.raises(ValidationError, match="extra"):
        RLConfig(iteration=10)
    with pytest.raises(ValidationError):
        RLConfig(boundary="circular")
    with pytest.raises(ValidationError):
        richardson_lucy(np.ones((20, 20), np.float32), np.ones((3, 3)) / 9, iterations=0)


def test_misspelt_override_is_rejected():
    with pytest.raises(ValidationError):
        richardson_lucy(np.ones((20, 20), np.float32), np.ones((3, 3)) / 9, iteration=5)


def test_periodic_boundary_equals_textbook_circulant_rl(psf2d):
    rng = np.random.default_rng(7)
    image = rng.uniform(0.5, 1.5, size=(40, 44)).astype(np.float32)
    ours = richardson_lucy(image, psf2d.data, iterations=5, boundary="periodic")
    reference = _periodic_rl(image.astype(np.float64), psf2d.data.astype(np.float64), 5)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * reference.max())


# ---- a given starting estimate -----------------------------------------------------------------


def test_periodic_rl_from_a_start_equals_textbook_rl_from_it(psf2d):
    rng = np.random.default_rng(8)
    image = rng.uniform(0.5, 1.5, size=(40, 44)).astype(np.float32)
    start = rng.uniform(0.2, 2.0, size=image.shape).astype(np.float32)
    ours = richardson_lucy(image, psf2d.data, iterations=5, boundary="periodic", start=start)
    reference = _periodic_rl(image.astype(np.float64), psf2d.data.astype(np.float64), 5,
                             start.astype(np.float64))  # fmt: skip
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * reference.max())
    flat = _periodic_rl(image.astype(np.float64), psf2d.data.astype(np.float64), 5)
    assert np.abs(ours - flat).max() > 1e-2 * flat.max()  # the start did change the result


@pytest.mark.parametrize("boundary", ["noncirculant", "reflect", "zero"])
def test_a_start_at_the_flat_level_is_the_default_run(rng, psf3d, boundary):
    image = rng.uniform(20.0, 80.0, size=(12, 24, 20)).astype(np.float32)
    default = richardson_lucy(image, psf3d.data, iterations=4, boundary=boundary, background=10)
    level = np.full(image.shape, image.mean() - 10.0, np.float32)
    started = richardson_lucy(image, psf3d.data, iterations=4, boundary=boundary,
                              background=10, start=level)  # fmt: skip
    np.testing.assert_allclose(started, default, rtol=1e-5)


def test_the_truth_is_a_fixed_point_when_it_explains_the_data(psf2d):
    rng = np.random.default_rng(9)
    truth = ndimage.gaussian_filter(rng.uniform(0.0, 100.0, size=(48, 48)), 2.0) + 5.0
    psf = psf2d.data.astype(np.float64) / psf2d.data.sum()
    data = ndimage.convolve(truth, psf, mode="wrap") + 30.0
    out = richardson_lucy(data.astype(np.float32), psf2d.data, iterations=20,
                          boundary="periodic", background=30.0, start=truth)  # fmt: skip
    np.testing.assert_allclose(out, truth, rtol=2e-4)
    flat = richardson_lucy(data.astype(np.float32), psf2d.data, iterations=20,
                           boundary="periodic", background=30.0)  # fmt: skip
    assert np.abs(flat - truth).max() > 100 * np.abs(out - truth).max()


def test_a_start_that_does_not_fit_the_image_is_refused(rng, psf2d):
    image = rng.uniform(1.0, 2.0, size=(24, 24)).astype(np.float32)
    with pytest.raises(DeconvError, match=r"starting estimate has shape \(24, 20\), the image"):
        richardson_lucy(image, psf2d.data, iterations=2, start=np.ones((24, 20)))
    bad = np.ones((24, 24))
    bad[3, 4] = np.nan
    with pytest.raises(DeconvError, match="starting estimate contains NaN"):
        richardson_lucy(image, psf2d.data, iterations=2, start=bad)
