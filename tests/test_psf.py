"""Tests for deconv.psf: generation against optical estimates, preparation, resampling, files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from pydantic import ValidationError

from deconv.errors import DeconvError
from deconv.psf import (
    PSF,
    PSFMetadata,
    fwhm,
    generate_psf,
    load_psf,
    prepare_psf,
    psf_for_image,
    resample_psf,
    save_psf,
)

MODELS = ("vectorial", "scalar", "gaussian")
SIGMA_TO_FWHM = 2 * np.sqrt(2 * np.log(2))  # 2.3548


def gaussian(shape, sigmas, centre=None) -> np.ndarray:
    centre = [n // 2 for n in shape] if centre is None else centre
    grids = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    return np.exp(
        -0.5 * sum(((g - c) / s) ** 2 for g, c, s in zip(grids, centre, sigmas, strict=True))
    )


def centre_index(shape) -> tuple[int, ...]:
    return tuple(n // 2 for n in shape)


def peak_index(data) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(data)), data.shape))


# ---- generate_psf ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", [(21, 31, 41), (9, 17, 17), (31, 41)])
def test_generate_psf_is_prepared_with_requested_shape(model, shape):
    psf = generate_psf(model=model, shape=shape)
    assert psf.data.shape == shape
    assert psf.data.dtype == np.float32
    assert abs(float(psf.data.sum(dtype=np.float64)) - 1.0) < 1e-5
    assert psf.data.min() >= 0
    assert peak_index(psf.data) == centre_index(shape)
    assert psf.metadata.generator == model
    assert psf.metadata.shape == shape
    assert psf.voxel_size == ((0.2, 0.065, 0.065) if len(shape) == 3 else (0.065, 0.065))


@pytest.mark.parametrize("model", MODELS)
def test_generate_psf_fwhm_matches_optical_estimates(model):
    na, wavelength, ni, dxy, dz = 1.4, 0.52, 1.515, 0.065, 0.2
    psf = generate_psf(model=model, shape=(33, 65, 65), na=na, wavelength=wavelength, ni=ni)
    fz, fy, fx = fwhm(psf.data)
    lateral = 0.51 * wavelength / na  # Airy-disc FWHM, widefield
    axial = 0.88 * wavelength / (ni - np.sqrt(ni**2 - na**2))
    assert fy == pytest.approx(fx, rel=1e-6)  # circular symmetry
    assert fx * dxy == pytest.approx(lateral, rel=0.25)
    assert fz * dz == pytest.approx(axial, rel=0.25)


def test_generate_psf_widths_scale_with_wavelength_over_na():
    narrow = fwhm(generate_psf(model="scalar", shape=(65, 65), na=1.4, wavelength=0.45).data)
    wide = fwhm(generate_psf(model="scalar", shape=(65, 65), na=1.0, wavelength=0.63).data)
    expected = (0.63 / 1.0) / (0.45 / 1.4)  # 1.96
    assert wide[1] / narrow[1] == pytest.approx(expected, rel=0.1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": (8, 17, 17)}, "odd"),
        ({"shape": (17, 16)}, "odd"),
        ({"shape": (17,)}, "2 or 3"),
        ({"na": 1.6, "ni": 1.515}, "below the immersion index"),
        ({"na": 0.0}, "positive"),
    ],
)
def test_generate_psf_rejects_bad_parameters(kwargs, message):
    with pytest.raises(DeconvError, match=message):
        generate_psf(**{"shape": (9, 17, 17), **kwargs})


def test_generate_psf_metadata_shape_matches_data_at_depth():
    psf = generate_psf(shape=(33, 65, 65), depth=5.0)
    assert psf.metadata.shape == psf.data.shape == (33, 65, 65)


# ---- fwhm ------------------------------------------------------------------------------------


def test_fwhm_of_analytic_gaussian():
    sigmas = (2.0, 3.0, 4.5)
    widths = fwhm(gaussian((31, 41, 51), sigmas))
    for width, sigma in zip(widths, sigmas, strict=True):
        assert width == pytest.approx(SIGMA_TO_FWHM * sigma, rel=0.02)


def test_fwhm_of_off_centre_gaussian_and_1d_box():
    widths = fwhm(gaussian((40, 40), (3.0, 5.0), centre=(10, 27)))
    assert widths[0] == pytest.approx(SIGMA_TO_FWHM * 3.0, rel=0.02)
    assert widths[1] == pytest.approx(SIGMA_TO_FWHM * 5.0, rel=0.02)
    # A triangle 0,1,2,3,4,3,2,1,0 crosses half maximum (2) exactly at indices 2 and 6.
    assert fwhm(np.array([0, 1, 2, 3, 4, 3, 2, 1, 0.0])) == pytest.approx((4.0,))


# ---- prepare_psf -----------------------------------------------------------------------------


def test_prepare_psf_crops_around_off_centre_peak():
    data = gaussian((25, 25), (2.0, 2.0), centre=(12, 9))
    out = prepare_psf(data)
    assert out.shape == (25, 19)  # x cropped to 0..18, symmetric around 9
    assert peak_index(out) == (12, 9)
    assert out.dtype == np.float32
    assert float(out.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-6)
    # Cropped, not resampled: the kept voxels are the original ones, rescaled.
    np.testing.assert_allclose(out, data[:, :19] / data[:, :19].sum(), rtol=1e-5)


def test_prepare_psf_makes_even_shapes_odd_and_centred():
    data = gaussian((24, 30, 30), (2.0, 2.5, 2.5), centre=(12, 15, 15))
    out = prepare_psf(data)
    assert all(n % 2 == 1 for n in out.shape)
    assert out.shape == (23, 29, 29)
    assert peak_index(out) == centre_index(out.shape)


def test_prepare_psf_ignores_single_hot_pixel_when_centring():
    data = gaussian((21, 21), (2.0, 2.0))
    data[2, 3] = 1.5  # hot pixel brighter than the true peak (1.0)
    out = prepare_psf(data)
    assert out.shape == (21, 21)  # centred on the blob, not on the hot pixel


def test_prepare_psf_clips_tiny_negatives():
    data = gaussian((15, 15), (2.0, 2.0))
    data[0, 0] = -1e-8
    out = prepare_psf(data)
    assert out.min() == 0.0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (np.zeros((9, 9)), "all zero"),
        (-gaussian((9, 9), (2, 2)), "all zero"),
        (gaussian((9, 9), (2, 2)) - 0.1, "negative"),
        (np.where(np.eye(9, dtype=bool), np.nan, 1.0), "NaN"),
        (np.where(np.eye(9, dtype=bool), np.inf, 1.0), "Inf"),
        (np.ones(9), "1D"),
        (np.ones((3, 5, 5, 5)), "4D"),
    ],
)
def test_prepare_psf_rejects_unusable(data, message):
    with pytest.raises(DeconvError, match=message):
        prepare_psf(data)


# ---- resampling ------------------------------------------------------------------------------


def test_resample_psf_to_coarser_lateral_grid_halves_lateral_fwhm():
    psf = generate_psf(shape=(21, 65, 65))
    coarse = resample_psf(psf, (0.2, 0.13, 0.13))
    before, after = fwhm(psf.data), fwhm(coarse.data)
    assert after[0] == pytest.approx(before[0], rel=0.01)  # axial grid unchanged
    assert after[1] == pytest.approx(before[1] / 2, rel=0.1)
    assert after[2] == pytest.approx(before[2] / 2, rel=0.1)
    assert all(n % 2 == 1 for n in coarse.data.shape)
    assert coarse.data.shape[0] == 21
    assert coarse.data.shape[1] in (31, 33, 35)
    assert peak_index(coarse.data) == centre_index(coarse.data.shape)
    assert float(coarse.data.sum(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    assert coarse.data.min() >= 0
    assert coarse.voxel_size == (0.2, 0.13, 0.13)
    assert coarse.metadata.shape == coarse.data.shape
    assert coarse.metadata.generator == psf.metadata.generator


@pytest.mark.parametrize(("dxy", "shape"), [(0.12, (15, 15)), (0.1, (19, 19))])
def test_resample_gaussian_psf_agrees_with_generating_on_the_coarse_grid(dxy, shape):
    fine = generate_psf(model="gaussian", shape=(45, 45), dxy=0.04)
    resampled = resample_psf(fine, (dxy, dxy))
    direct = generate_psf(model="gaussian", shape=shape, dxy=dxy)
    assert resampled.data.shape == shape
    np.testing.assert_allclose(resampled.data, direct.data, atol=0.005 * direct.data.max())


def test_resample_psf_rejects_wrong_dimensionality(psf3d):
    with pytest.raises(DeconvError, match="cannot resample a 3D PSF"):
        resample_psf(psf3d, (0.1, 0.1))


def test_psf_for_image_same_voxel_size_returns_same_object(psf3d):
    messages: list[str] = []
    assert psf_for_image(psf3d, (0.2, 0.065, 0.065), notify=messages.append) is psf3d
    # Within the 1% tolerance for rounded metadata: still the same grid.
    assert psf_for_image(psf3d, (0.2004, 0.0651, 0.065), notify=messages.append) is psf3d
    assert messages == []


def test_psf_for_image_different_voxel_size_resamples_and_says_so(psf3d):
    messages: list[str] = []
    out = psf_for_image(psf3d, (0.3, 0.1, 0.1), notify=messages.append)
    assert out is not psf3d
    assert out.voxel_size == (0.3, 0.1, 0.1)
    assert len(messages) == 1 and "resampled" in messages[0]
    assert fwhm(out.data)[2] == pytest.approx(fwhm(psf3d.data)[2] * 0.065 / 0.1, rel=0.15)


def test_psf_for_image_without_voxel_size_assumes_psf_grid(psf3d):
    messages: list[str] = []
    assert psf_for_image(psf3d, None, notify=messages.append) is psf3d
    assert len(messages) == 1 and "assuming" in messages[0]


def test_psf_for_image_rejects_axis_count_mismatch(psf3d):
    with pytest.raises(DeconvError, match="2 axes but the PSF is 3D"):
        psf_for_image(psf3d, (0.1, 0.1), notify=lambda _: None)


# ---- files and metadata ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".tif", ".ome.tif", ".zarr"])
def test_save_load_psf_round_trip(tmp_path, psf3d, suffix):
    path = save_psf(psf3d, tmp_path / f"psf{suffix}")
    loaded = load_psf(path)
    np.testing.assert_allclose(loaded.data, psf3d.data, rtol=1e-6, atol=1e-9)
    assert loaded.metadata == psf3d.metadata


def test_load_psf_plain_tiff_needs_voxel_size(tmp_path):
    data = gaussian((9, 15, 15), (1.5, 2.0, 2.0)).astype(np.float32) * 1000
    path = tmp_path / "measured.tif"
    tifffile.imwrite(path, data)
    with pytest.raises(DeconvError, match="voxel size"):
        load_psf(path)
    psf = load_psf(path, voxel_size=(0.25, 0.1, 0.1))
    assert psf.metadata.generator == "measured"
    assert psf.voxel_size == (0.25, 0.1, 0.1)
    assert psf.metadata.source == str(path)
    assert psf.metadata.na is None
    np.testing.assert_allclose(psf.data, data / data.sum(), rtol=1e-5)


def test_psf_metadata_forbids_unknown_keys():
    fields = {"generator": "measured", "voxel_size": (0.2, 0.1, 0.1), "shape": (9, 9, 9)}
    assert PSFMetadata(**fields).generator == "measured"
    with pytest.raises(ValidationError, match="extra"):
        PSFMetadata(**fields, wavelength=0.5)  # the field is wavelength_emission


@pytest.mark.parametrize(
    "update",
    [
        {"voxel_size": (0.2, -0.1, 0.1)},
        {"voxel_size": (0.1,)},
        {"na": 0.0},
        {"generator": "confocal"},
    ],
)
def test_psf_metadata_validates_values(update):
    fields = {"generator": "measured", "voxel_size": (0.2, 0.1, 0.1), "shape": (9, 9, 9)}
    with pytest.raises(ValidationError):
        PSFMetadata(**{**fields, **update})


def test_psf_properties(psf2d):
    assert isinstance(psf2d, PSF)
    assert psf2d.ndim == 2
    assert psf2d.voxel_size == psf2d.metadata.voxel_size == (0.065, 0.065)
