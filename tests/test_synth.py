"""Tests for deconv.synth: the mixed-structures phantom generator and its noise model."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy import ndimage
from scipy.signal import fftconvolve

from deconv.errors import DeconvError
from deconv.synth import (
    STRUCTURE_CLASSES,
    SynthConfig,
    SyntheticPairs,
    add_noise,
    expected_counts,
    make_ground_truth,
    object_counts,
    pair_seed,
    simulate_pair,
    simulate_raw,
    write_synthetic_dataset,
)

SHAPE_3D = (32, 64, 64)


def gaussian_psf(ndim: int, sigma: float = 1.0, radius: int = 3) -> np.ndarray:
    """Small normalised isotropic Gaussian, odd-shaped and centred."""
    axis = np.arange(-radius, radius + 1, dtype=np.float64)
    grids = np.meshgrid(*([axis] * ndim), indexing="ij")
    psf = np.exp(-sum(g**2 for g in grids) / (2 * sigma**2))
    return psf / psf.sum()


def gt_only(shape, structures, seed=0, **kw) -> np.ndarray:
    config = SynthConfig(structures=structures, gt_sigma=0.0, **kw)
    return make_ground_truth(shape, np.random.default_rng(seed), config)


# ---- determinism -----------------------------------------------------------------------------


def test_same_seed_is_byte_identical_and_different_seed_differs():
    psf = gaussian_psf(3)
    raw_a, gt_a = simulate_pair(SHAPE_3D, psf, seed=7)
    raw_b, gt_b = simulate_pair(SHAPE_3D, psf, seed=7)
    raw_c, gt_c = simulate_pair(SHAPE_3D, psf, seed=8)
    assert raw_a.dtype == gt_a.dtype == np.float32
    assert raw_a.shape == gt_a.shape == SHAPE_3D
    assert raw_a.tobytes() == raw_b.tobytes() and gt_a.tobytes() == gt_b.tobytes()
    assert not np.array_equal(gt_a, gt_c)
    assert not np.array_equal(raw_a, raw_c)


# ---- structure classes -----------------------------------------------------------------------


def component_extents(gt: np.ndarray) -> list[tuple[int, ...]]:
    labels, _ = ndimage.label(gt > 0)
    return [tuple(s.stop - s.start for s in sl) for sl in ndimage.find_objects(labels)]


@pytest.mark.parametrize(
    ("structure", "max_sorted_extent"),
    [
        ("dots", (2, 2, 2)),
        ("lines", (2, 2, 10)),
        ("sheets", (2, 10, 10)),
        ("boxes", (6, 6, 6)),
        ("spheres", (15, 15, 15)),
    ],
)
def test_single_class_objects_have_the_class_geometry(structure, max_sorted_extent):
    gt = gt_only((64, 128, 128), (structure,), density=0.3)
    extents = component_extents(gt)
    assert len(extents) >= 5
    fits = [all(e <= m for e, m in zip(sorted(x), max_sorted_extent, strict=True)) for x in extents]
    assert np.mean(fits) >= 0.9  # a few objects may touch and merge into one component
    # ... and the largest sorted extent is reached, so the class is not drawn as smaller objects.
    assert max(sorted(x)[-1] for x in extents) >= max_sorted_extent[-1] - 1


def test_only_shells_gives_hollow_objects_and_spheres_are_solid():
    shells = gt_only((64, 128, 128), ("shells",)) > 0
    spheres = gt_only((64, 128, 128), ("spheres",)) > 0
    # Filling holes adds the shells' interiors (each at least a radius-3.5 ball) ...
    assert ndimage.binary_fill_holes(shells).sum() - shells.sum() > 1000
    # ... while solid spheres have none.
    assert ndimage.binary_fill_holes(spheres).sum() == spheres.sum()


def test_shell_interior_is_darker_than_rim_after_smoothing():
    config = SynthConfig(structures=("shells",), density=0.01)  # exactly one shell
    gt = make_ground_truth((40, 40, 40), np.random.default_rng(3), config)
    hollow = ndimage.binary_fill_holes(gt > 1.0) & ~(gt > 1.0)
    assert hollow.any(), "expected one shell fully inside the volume for this seed"
    rim = gt > 0.5 * gt.max()
    assert gt[hollow].max() < 0.2 * np.median(gt[rim])


def test_intensities_lie_in_the_configured_range():
    gt = gt_only((64, 128, 128), STRUCTURE_CLASSES, intensity_range=(100.0, 200.0))
    values = gt[gt > 0]
    assert values.min() >= 100.0 and values.max() < 200.0
    assert values.max() - values.min() > 50.0  # intensities really vary


def test_config_validation_messages():
    with pytest.raises(ValidationError, match=r"unknown structure class.*'tubes'"):
        SynthConfig(structures=("spheres", "tubes"))
    with pytest.raises(ValidationError, match="at least one"):
        SynthConfig(structures=())
    with pytest.raises(ValidationError):
        SynthConfig(photons=3)  # extra fields are forbidden: typos must not pass silently
    assert SynthConfig(structures=("dots", "dots")).structures == ("dots",)


# ---- counts ----------------------------------------------------------------------------------


def test_counts_scale_with_volume_and_density():
    full = object_counts((128, 128, 128))
    half = object_counts((64, 128, 128))
    assert full["spheres"] == 100 and full["lines_z"] == 50 and len(full) == 10
    assert half["spheres"] == 50 and half["dots"] == 25
    tiny = object_counts((8, 8, 8), SynthConfig(structures=("dots", "lines")))
    assert tiny == {"dots": 1, "lines_x": 1, "lines_y": 1, "lines_z": 1}
    assert object_counts((64, 128, 128), SynthConfig(density=2.0))["shells"] == 100


def test_drawn_dot_count_matches_object_counts():
    for shape in [(64, 128, 128), (128, 128, 128)]:
        gt = gt_only(shape, ("dots",))
        expected = object_counts(shape)["dots"]
        n_components = ndimage.label(gt > 0)[1]
        assert expected - 2 <= n_components <= expected  # touching dots may merge


# ---- noise model -----------------------------------------------------------------------------


def test_photon_level_matches_photon_scale():
    config = SynthConfig(photon_scale=5.0, background=30.0)
    psf = gaussian_psf(3)
    gt = make_ground_truth((64, 128, 128), np.random.default_rng(0), config)
    raw = simulate_raw(gt, psf, np.random.default_rng(1), config)
    signal = raw.astype(np.float64).mean() - config.background
    blurred_mean = fftconvolve(gt.astype(np.float64), psf, mode="same").mean()
    assert signal == pytest.approx(5.0 * blurred_mean, rel=0.01)
    assert signal == pytest.approx(5.0 * gt.mean(), rel=0.03)  # border loss is small


@pytest.mark.parametrize("read_noise", [0.5, 3.0])
def test_variance_is_poisson_plus_read_noise(read_noise):
    config = SynthConfig(read_noise=read_noise)
    c = 10.0
    gt = np.full((64, 64, 64), c, np.float32)
    raw = simulate_raw(gt, np.ones((1, 1, 1)), np.random.default_rng(0), config)
    expected_var = config.photon_scale * c + config.background + read_noise**2
    assert raw.mean() == pytest.approx(config.photon_scale * c + config.background, rel=0.005)
    assert raw.var() == pytest.approx(expected_var, rel=0.02)


def test_expected_counts_match_scipy_and_are_the_mean_of_the_draws():
    # the noise-free image that fresh-noise training and bench_noise_variance draw from
    config = SynthConfig(photon_scale=4.0, background=20.0)
    psf = gaussian_psf(3) * 7.0  # unnormalised on purpose: the photon budget is the config's
    gt = gt_only((16, 32, 32), STRUCTURE_CLASSES)
    expected = expected_counts(gt, psf, config)
    reference = 4.0 * fftconvolve(gt.astype(np.float64), psf / psf.sum(), mode="same") + 20.0
    np.testing.assert_allclose(expected, np.maximum(reference, 20.0), rtol=1e-9, atol=1e-6)
    rng = np.random.default_rng(3)
    draws = np.stack([add_noise(expected, rng, config) for _ in range(200)])
    assert np.abs(draws.mean(0) - expected).mean() < 0.1 * np.sqrt(expected).mean()
    assert draws.var(0).mean() == pytest.approx(expected.mean() + 0.5**2, rel=0.05)


def test_without_read_noise_raw_is_integer_counts():
    gt = gt_only((16, 32, 32), STRUCTURE_CLASSES)
    raw = simulate_raw(gt, gaussian_psf(3), np.random.default_rng(0), SynthConfig(read_noise=0))
    assert np.array_equal(raw, np.round(raw)) and raw.min() >= 0


# ---- 2D and validation -----------------------------------------------------------------------


def test_2d_pairs_and_sheets_are_skipped():
    raw, gt = simulate_pair((96, 80), gaussian_psf(2), seed=1)
    assert raw.shape == gt.shape == (96, 80) and raw.dtype == np.float32 and gt.max() > 50
    assert not any(name.startswith("sheets") for name in object_counts((96, 80)))
    lines = gt_only((128, 128), ("lines",), density=0.3)
    for ext in component_extents(lines):
        assert min(ext) <= 2 and max(ext) <= 10
    with pytest.raises(DeconvError, match="exist in 2D"):
        make_ground_truth((64, 64), np.random.default_rng(0), SynthConfig(structures=("sheets",)))


def test_psf_dimension_mismatch_raises_one_line_error():
    with pytest.raises(DeconvError, match="PSF is 3D but the image is 2D") as info:
        simulate_pair((64, 64), gaussian_psf(3), seed=0)
    assert "\n" not in str(info.value)
    with pytest.raises(DeconvError, match="odd"):
        simulate_pair((16, 16), np.ones((4, 4)) / 16, seed=0)
    with pytest.raises(DeconvError, match="2D or 3D"):
        simulate_pair((8, 8, 8, 8), np.ones((1, 1, 1, 1)), seed=0)


# ---- dataset on disk and on the fly ----------------------------------------------------------


@pytest.fixture
def fake_io(monkeypatch):
    """Stand-in for deconv.io.write_image that records calls and writes .npy bytes."""
    calls: list[tuple[Path, tuple | None]] = []

    def write_image(path, array, voxel_size=None):
        calls.append((Path(path), voxel_size))
        with open(path, "wb") as fh:
            np.save(fh, array)

    module = types.ModuleType("deconv.io")
    module.write_image = write_image
    monkeypatch.setitem(sys.modules, "deconv.io", module)
    return calls


def test_write_synthetic_dataset_layout_and_metadata(tmp_path, fake_io):
    psf = gaussian_psf(2)
    config = SynthConfig(structures=("spheres", "dots"), photon_scale=3.0)
    paths = write_synthetic_dataset(tmp_path / "ds", psf, 3, (48, 40), 5, (0.1, 0.1), config)
    assert [p.name for p in paths] == ["sample_0000.tif", "sample_0001.tif", "sample_0002.tif"]
    assert all(p.parent.name == "raw" and (p.parent.parent / "gt" / p.name).exists() for p in paths)
    assert len(fake_io) == 6 and all(vs == (0.1, 0.1) for _, vs in fake_io)
    raw1 = np.load(paths[1])
    gt1 = np.load(tmp_path / "ds" / "gt" / "sample_0001.tif")
    ref_raw, ref_gt = simulate_pair((48, 40), psf, pair_seed(5, 1), config)
    assert np.array_equal(raw1, ref_raw) and np.array_equal(gt1, ref_gt)
    meta = json.loads((tmp_path / "ds" / "synth.json").read_text())
    assert meta["n"] == 3 and meta["seed"] == 5 and meta["shape"] == [48, 40]
    assert meta["voxel_size"] == [0.1, 0.1]
    assert SynthConfig.model_validate(meta["config"]) == config


def test_write_synthetic_dataset_rejects_bad_arguments(tmp_path, fake_io):
    psf = gaussian_psf(2)
    with pytest.raises(DeconvError, match="n must be >= 1"):
        write_synthetic_dataset(tmp_path, psf, 0, (32, 32), 0, None)
    with pytest.raises(DeconvError, match="2D or 3D"):
        write_synthetic_dataset(tmp_path, psf, 1, (32,), 0, None)
    with pytest.raises(DeconvError, match="voxel_size"):
        write_synthetic_dataset(tmp_path, psf, 1, (32, 32), 0, (0.1, 0.1, 0.3))
    assert fake_io == []


def test_synthetic_pairs_dataset(fake_io, tmp_path):
    psf = gaussian_psf(3)
    ds = SyntheticPairs(psf, (16, 32, 32), length=4, seed=2)
    assert len(ds) == 4
    raw, gt = ds[1]
    assert raw.shape == gt.shape == (1, 16, 32, 32)
    assert raw.dtype == gt.dtype == torch.float32
    raw_again, gt_again = ds[1]
    assert torch.equal(raw, raw_again) and torch.equal(gt, gt_again)
    assert not torch.equal(gt, ds[2][1])
    assert torch.equal(ds[-1][1], ds[3][1])
    with pytest.raises(IndexError):
        ds[4]
    # Item i equals sample i written to disk with the same seed.
    paths = write_synthetic_dataset(tmp_path, psf, 2, (16, 32, 32), 2, None, progress=False)
    assert np.array_equal(np.load(paths[1]), raw[0].numpy())


def test_membranes_are_opt_in_thin_and_deterministic():
    from deconv.synth import make_ground_truth

    config = SynthConfig(structures=("membranes",), gt_sigma=0)
    a = make_ground_truth((32, 64, 64), np.random.default_rng(3), config)
    b = make_ground_truth((32, 64, 64), np.random.default_rng(3), config)
    assert np.array_equal(a, b) and a.max() > 0
    assert "membranes" not in SynthConfig().structures  # the paper's mixture stays the default
    # thin surfaces: few voxels, and most painted voxels touch background within 1 voxel
    from scipy.ndimage import binary_erosion

    mask = a > 0
    assert mask.mean() < 0.05
    assert binary_erosion(mask).sum() < 0.2 * mask.sum()


@pytest.mark.parametrize("shape", [(128, 128), (48, 96, 96)])
def test_filaments_are_opt_in_thin_long_and_oblique(shape):
    from deconv.synth import make_ground_truth

    config = SynthConfig(structures=("filaments",), gt_sigma=0)
    a = make_ground_truth(shape, np.random.default_rng(5), config)
    assert np.array_equal(a, make_ground_truth(shape, np.random.default_rng(5), config))
    assert "filaments" not in SynthConfig().structures
    mask = a > 0
    assert 0 < mask.mean() < 0.06
    assert ndimage.binary_erosion(mask).sum() < 0.25 * mask.sum()  # one to three voxels thick
    # Long and not axis-aligned: most fibres span several voxels on two or more axes, unlike
    # the paper's lines, which are 2 voxels wide on every axis but one.
    labels, n = ndimage.label(mask, structure=np.ones((3,) * len(shape)))
    spans = [[s.stop - s.start for s in box] for box in ndimage.find_objects(labels)]
    long_ones = [sp for sp in spans if max(sp) >= 8]
    oblique = [sp for sp in long_ones if sorted(sp)[-2] >= 4]
    assert n >= 5 and len(long_ones) >= 0.5 * n and len(oblique) >= 0.5 * len(long_ones)


@pytest.mark.parametrize("shape", [(24, 40, 40), (64, 64)])
def test_specimen_beyond_the_field_sends_its_blur_in_through_the_faces(shape):
    from deconv.synth import draw_phantom

    psf = gaussian_psf(len(shape), sigma=2.0, radius=6)
    config = SynthConfig(beyond_field="specimen", background=0.0)
    gt, expected = draw_phantom(shape, psf, np.random.default_rng(4), config)
    assert gt.shape == expected.shape == shape
    # what the field's own phantom accounts for, with nothing beyond (scipy, zero boundary)
    own = config.photon_scale * fftconvolve(gt.astype(np.float64), psf, mode="same")
    deep = tuple(slice(6, n - 6) for n in shape)  # farther than the PSF reaches from a face
    np.testing.assert_allclose(expected[deep], own[deep], rtol=1e-6, atol=1e-6)
    faces = np.ones(shape, bool)
    faces[deep] = False
    assert (expected - own)[faces].min() > -1e-6  # light only ever arrives from outside
    assert (expected - own)[faces].mean() > 0.05 * own[faces].mean()
    # the density of objects is that of a field with nothing beyond
    nothing = [make_ground_truth(shape, np.random.default_rng(s), SynthConfig()).mean()
               for s in range(6)]  # fmt: skip
    beyond = [draw_phantom(shape, psf, np.random.default_rng(s), config)[0].mean()
              for s in range(6)]  # fmt: skip
    assert np.mean(beyond) == pytest.approx(np.mean(nothing), rel=0.25)
    # the default is the earlier data, byte for byte
    raw, truth = simulate_pair(shape, psf, 7)
    rng = np.random.default_rng(7)
    old_truth = make_ground_truth(shape, rng, SynthConfig())
    np.testing.assert_array_equal(truth, old_truth)
    np.testing.assert_array_equal(raw, simulate_raw(old_truth, psf, rng))
