"""Synthetic training data: the RLN paper's "mixed structures" phantoms, in 2D and 3D.

Li et al. (Nature Methods 2022, RLN) train on simulated volumes because real ground truth does
not exist. Per 128^3 volume they place 100 solid spheres (radius 4-7), 100 ellipsoidal shells
(semi-axes 4-7, shell where 0.8 <= sum((d_i/r_i)^2) <= 1.3) and 8 families of 50 small objects:
2^3 dots, 2-voxel-thick lines along x, y and z (length 2-10), 1-2-voxel-thick sheets in the xy,
xz and yz planes (sides 2-10) and boxes (sides 2-6). Intensities are uniform in [50, 850); the
ground truth is smoothed with a Gaussian (sigma 0.7) so it is band-limited like a real sample.

Counts scale with the number of voxels (at least one object per enabled family) so that the
object density, not the object count, is what stays fixed. In 2D (arrays are (y, x); 3D arrays
are (z, y, x)) spheres become discs, shells elliptical rings, lines run along x and y, and the
sheet families do not exist and are skipped; 2D counts per 128^2 image are a quarter of the 3D
counts per 128^3 volume (our choice: the paper is 3D-only), which covers about a quarter of
the image.

Two opt-in classes go beyond the paper (never drawn unless named): `membranes`, thin folded
surfaces (curves in 2D), and `filaments`, long thin fibres that bend smoothly in any
direction. 50 of each per 128^3, scaled like the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from rich.progress import Progress
from scipy.ndimage import distance_transform_edt, gaussian_filter

from deconv.errors import DeconvError
from deconv.fft import fft_convolve

STRUCTURE_CLASSES: tuple[str, ...] = ("spheres", "shells", "dots", "lines", "sheets", "boxes")
EXTRA_CLASSES: tuple[str, ...] = ("membranes", "filaments")
"""Opt-in classes beyond the paper's: never drawn unless named, so the defaults stay the paper's."""
KNOWN_CLASSES: tuple[str, ...] = STRUCTURE_CLASSES + EXTRA_CLASSES
_REFERENCE_EDGE = 128  # the paper's volume edge; counts below are per 128^ndim voxels
_SHELL_BAND = (0.8, 1.3)
_SEED_STRIDE = 1_000_003  # prime > any realistic dataset length, so pair seeds never collide

Sampler = Callable[[np.random.Generator], tuple[int, ...]]


def _length(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


# Axis-aligned box families: (class, family, count per 128^3, size sampler in (z, y, x)).
_BOX_FAMILIES_3D: tuple[tuple[str, str, int, Sampler], ...] = (
    ("dots", "dots", 50, lambda r: (2, 2, 2)),
    ("lines", "lines_x", 50, lambda r: (2, 2, _length(r, 2, 10))),
    ("lines", "lines_y", 50, lambda r: (2, _length(r, 2, 10), 2)),
    ("lines", "lines_z", 50, lambda r: (_length(r, 2, 10), 2, 2)),
    ("sheets", "sheets_xy", 50, lambda r: (_length(r, 1, 2), _length(r, 2, 10), _length(r, 2, 10))),
    ("sheets", "sheets_xz", 50, lambda r: (_length(r, 2, 10), _length(r, 1, 2), _length(r, 2, 10))),
    ("sheets", "sheets_yz", 50, lambda r: (_length(r, 2, 10), _length(r, 2, 10), _length(r, 1, 2))),
    ("boxes", "boxes", 50, lambda r: tuple(_length(r, 2, 6) for _ in range(3))),
)
_BOX_FAMILIES_2D: tuple[tuple[str, str, int, Sampler], ...] = (
    ("dots", "dots", 50, lambda r: (2, 2)),
    ("lines", "lines_x", 50, lambda r: (2, _length(r, 2, 10))),
    ("lines", "lines_y", 50, lambda r: (_length(r, 2, 10), 2)),
    ("boxes", "boxes", 50, lambda r: (_length(r, 2, 6), _length(r, 2, 6))),
)


class SynthConfig(BaseModel):
    """What to simulate; defaults reproduce the RLN paper's training data."""

    model_config = ConfigDict(extra="forbid")

    structures: tuple[str, ...] = STRUCTURE_CLASSES
    """Structure classes to draw; a subset of STRUCTURE_CLASSES (lets you train on, say, only
    shells to probe what a model learns from hollow objects)."""
    density: float = 1.0
    """Multiplies every object count, to make sparser or more crowded samples."""
    intensity_range: tuple[float, float] = (50.0, 850.0)
    """Per-object intensity is uniform in [lo, hi): a wide range teaches dynamic range."""
    gt_sigma: float = 0.7
    """Gaussian smoothing of the GT (voxels) so it has no sub-voxel edges no optics could pass;
    0 disables it."""
    photon_scale: float = 5.0
    """Expected photons per unit of GT intensity: sets the SNR of the Poisson noise."""
    background: float = 30.0
    """Constant background in counts, added in the raw domain: blurring a constant gives the
    same constant, so adding it after the blur is exact and cheaper."""
    read_noise: float = 0.5
    """Standard deviation (counts) of the Gaussian camera read noise added after Poisson."""
    beyond_field: Literal["nothing", "specimen"] = "nothing"
    """What lies past the array's faces. ``nothing``: the phantom is drawn in the array and
    blurred with a zero boundary, so an object cut by a face sends no light from its part
    beyond it, which no microscope records (what every dataset before this option was).
    ``specimen``: the phantom is drawn over the array grown by the PSF's half-size on every
    side, imaged, and cropped, so the field of view receives the blur of what lies just
    outside it, as a real one does. The density is the same either way."""

    @field_validator("structures")
    @classmethod
    def _known_structures(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"structures must name at least one of {', '.join(STRUCTURE_CLASSES)}")
        unknown = [s for s in value if s not in KNOWN_CLASSES]
        if unknown:
            raise ValueError(
                f"unknown structure class(es) {', '.join(map(repr, unknown))}; "
                f"choose from {', '.join(KNOWN_CLASSES)}"
            )
        return tuple(dict.fromkeys(value))  # drop duplicates, keep order

    @model_validator(mode="after")
    def _sane_numbers(self) -> SynthConfig:
        lo, hi = self.intensity_range
        if not 0 <= lo < hi:
            raise ValueError(f"intensity_range must satisfy 0 <= lo < hi, got {(lo, hi)}")
        if self.density <= 0 or self.photon_scale <= 0:
            raise ValueError("density and photon_scale must be > 0")
        if min(self.gt_sigma, self.background, self.read_noise) < 0:
            raise ValueError("gt_sigma, background and read_noise must be >= 0")
        return self


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise DeconvError(f"shape must be 2D or 3D with sizes >= 1, got {shape}")
    return shape


def _families(ndim: int, config: SynthConfig) -> list[tuple[str, str, int, Sampler | None]]:
    """Enabled (class, family, base count, sampler) rows; samplers are None for ellipsoids."""
    rows: list[tuple[str, str, int, Sampler | None]] = [
        ("spheres", "spheres", 100, None),
        ("shells", "shells", 100, None),
        ("membranes", "membranes", 50, None),
        ("filaments", "filaments", 50, None),
    ]
    rows += list(_BOX_FAMILIES_3D if ndim == 3 else _BOX_FAMILIES_2D)
    rows = [row for row in rows if row[0] in config.structures]
    if not rows:
        raise DeconvError(f"none of the structures {config.structures} exist in {ndim}D")
    return rows


def object_counts(shape: Sequence[int], config: SynthConfig | None = None) -> dict[str, int]:
    """Objects per family for `shape`: the paper's counts scaled by voxels and `density`."""
    shape = _check_shape(shape)
    config = config or SynthConfig()
    scale = config.density * float(np.prod(shape)) / _REFERENCE_EDGE ** len(shape)
    if len(shape) == 2:
        scale /= 4
    return {
        family: max(1, round(base * scale)) for _, family, base, _ in _families(len(shape), config)
    }


def _paint_ellipsoid(
    gt: np.ndarray, centre: np.ndarray, radii: np.ndarray, value: float, inner: float | None
) -> None:
    """Max-paint {inner <= sum((d/r)^2) <= outer} inside its clipped bounding box."""
    outer = _SHELL_BAND[1] if inner is not None else 1.0
    reach = radii * np.sqrt(outer)
    lo = np.maximum(np.floor(centre - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre + reach).astype(int) + 1, gt.shape)
    if np.any(lo >= hi):
        return
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grids = np.ogrid[box]
    q = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True))
    mask = q <= outer
    if inner is not None:
        mask &= q >= inner
    view = gt[box]
    np.maximum(view, np.where(mask, np.float32(value), np.float32(0)), out=view)


def _paint_membrane(gt: np.ndarray, centre: np.ndarray, rng: np.random.Generator, value: float):
    """Max-paint a thin curved surface: the zero level set of a smooth random field.

    Unlike the paper's axis-aligned sheets and perfect ellipsoids, these folded surfaces of
    random topology (cups, tubes, saddles, closed pockets) teach a network that a blurred blob
    may be hollow or folded, so it must read the interior from the data, not from a shape
    prior. Band |f| < t of a unit-variance field smoothed by sigma is ~1-2 voxels thick.
    """
    ndim = gt.ndim
    edge = int(rng.integers(12, 25))
    sigma = float(rng.uniform(1.5, 3.0))
    field = gaussian_filter(rng.standard_normal((edge,) * ndim), sigma, mode="wrap")
    field /= field.std() + 1e-12
    thickness = float(rng.uniform(0.12, 0.25)) * np.sqrt(sigma)
    grids = np.ogrid[tuple(slice(0, edge) for _ in range(ndim))]
    half = (edge - 1) / 2
    inside = sum(((g - half) / (edge / 2)) ** 2 for g in grids) <= 1.0
    mask = (np.abs(field) < thickness) & inside
    _max_paint_mask(gt, mask, np.floor(centre).astype(int) - edge // 2, value)


def _max_paint_mask(gt: np.ndarray, mask: np.ndarray, corner: np.ndarray, value: float) -> None:
    """Max-paint `value` where `mask` is set, with mask[0, ...] at voxel `corner` of `gt`.

    The corner may lie outside `gt` and the mask may overhang any border: only the part
    inside is painted, so an object cut by the field of view keeps its shape up to the edge.
    """
    src, dst = [], []
    for a, m, n in zip(corner, mask.shape, gt.shape, strict=True):
        s0, s1 = max(0, -a), min(m, n - a)
        if s0 >= s1:
            return
        src.append(slice(s0, s1))
        dst.append(slice(a + s0, a + s1))
    view = gt[tuple(dst)]
    np.maximum(view, np.where(mask[tuple(src)], np.float32(value), np.float32(0)), out=view)


def _filament_path(ndim: int, rng: np.random.Generator) -> np.ndarray:
    """Points 0.5 voxel apart along a worm-like chain: a unit step whose direction turns by a
    small random amount each step, so bending is smooth and set by one stiffness per object."""
    length = float(rng.uniform(8, 40))
    bend = float(rng.uniform(0.03, 0.15))  # radians of turn per half-voxel step (std)
    steps = int(length / 0.5)
    direction = rng.standard_normal(ndim)
    direction /= np.linalg.norm(direction)
    points = np.empty((steps + 1, ndim))
    points[0] = 0.0
    for i in range(steps):
        direction = direction + bend * rng.standard_normal(ndim)
        direction /= np.linalg.norm(direction)
        points[i + 1] = points[i] + 0.5 * direction
    return points - points.mean(axis=0)


def _paint_filament(gt: np.ndarray, centre: np.ndarray, rng: np.random.Generator, value: float):
    """Max-paint a thin curved fibre (radius 0.5-1.2 voxels) along a worm-like chain.

    Microtubules, actin bundles and neurites are the commonest structures in fluorescence
    images and the paper's mixture has none: its lines are short and axis-aligned. Open,
    curved, thin and long, these teach a network to follow a thin ridge in any direction
    without assuming it closes or ends in a blob.
    """
    radius = float(rng.uniform(0.5, 1.2))
    points = _filament_path(gt.ndim, rng) + centre
    margin = int(np.ceil(radius)) + 1
    lo = np.floor(points.min(axis=0)).astype(int) - margin
    hi = np.ceil(points.max(axis=0)).astype(int) + margin + 1
    if np.any(hi <= 0) or np.any(lo >= gt.shape):
        return  # wholly outside: skip the distance transform
    # The distance to the rasterised centreline, in the fibre's whole box (not the part
    # inside the array) so a fibre cut by the border keeps its thickness up to the edge.
    centreline = np.ones(hi - lo, bool)
    centreline[tuple(np.round(points - lo).astype(int).T)] = False
    _max_paint_mask(gt, distance_transform_edt(centreline) <= radius, lo, value)


def make_ground_truth(
    shape: Sequence[int], rng: np.random.Generator, config: SynthConfig | None = None
) -> np.ndarray:
    """Draw one mixed-structures ground truth (float32, `shape`, 2D or 3D).

    Objects are centred uniformly in the array, so some are cut by the border as in a real
    field of view; overlaps keep the brighter object (np.maximum), like overlapping dye.
    """
    shape = _check_shape(shape)
    config = config or SynthConfig()
    ndim = len(shape)
    gt = np.zeros(shape, np.float32)
    dims = np.asarray(shape)
    lo_i, hi_i = config.intensity_range
    counts = object_counts(shape, config)
    for cls, family, _, sampler in _families(ndim, config):
        for _ in range(counts[family]):
            value = float(rng.uniform(lo_i, hi_i))
            if sampler is None:
                centre = rng.uniform(0, dims)
                if cls == "spheres":
                    radii = np.full(ndim, rng.uniform(4, 7))
                    _paint_ellipsoid(gt, centre, radii, value, inner=None)
                elif cls == "membranes":
                    _paint_membrane(gt, centre, rng, value)
                elif cls == "filaments":
                    _paint_filament(gt, centre, rng, value)
                else:
                    radii = rng.uniform(4, 7, size=ndim)
                    _paint_ellipsoid(gt, centre, radii, value, inner=_SHELL_BAND[0])
                continue
            size = np.asarray(sampler(rng))
            start = rng.integers(0, dims) - size // 2  # the centre voxel is always inside
            box = tuple(
                slice(max(a, 0), min(a + s, n)) for a, s, n in zip(start, size, shape, strict=True)
            )
            np.maximum(gt[box], np.float32(value), out=gt[box])
    if config.gt_sigma > 0:
        gt = gaussian_filter(gt, config.gt_sigma, mode="constant")
    return gt.astype(np.float32, copy=False)


def _check_psf(psf: np.ndarray, ndim: int) -> np.ndarray:
    psf = np.asarray(psf, dtype=np.float64)
    if psf.ndim != ndim:
        raise DeconvError(f"PSF is {psf.ndim}D but the image is {ndim}D; they must match")
    if any(s % 2 == 0 for s in psf.shape):
        raise DeconvError(f"PSF shape {psf.shape} must be odd on every axis so it has a centre")
    total = psf.sum()
    if not np.isfinite(total) or total <= 0:
        raise DeconvError("PSF must be finite with a positive sum")
    return psf / total  # normalised so photon_scale means photons per unit GT


def expected_counts(
    gt: np.ndarray, psf: np.ndarray, config: SynthConfig | None = None
) -> np.ndarray:
    """photon_scale * (gt * psf) + background, float64: the noise-free image (zero boundary,
    same shape) whose Poisson draws are the raw data. Kept apart from the noise so that one
    phantom can be imaged many times (fresh noise per training patch, noise-variance
    measurements). The PSF is renormalised to sum 1 so the photon budget is set by the
    config alone."""
    config = config or SynthConfig()
    psf = _check_psf(psf, gt.ndim)
    blurred = fft_convolve(np.asarray(gt, np.float64), psf)
    np.maximum(blurred, 0, out=blurred)  # FFT round-off leaves tiny negatives
    return config.photon_scale * blurred + config.background


def add_noise(
    expected: np.ndarray, rng: np.random.Generator, config: SynthConfig | None = None
) -> np.ndarray:
    """Poisson(expected) + N(0, read_noise^2), float32."""
    config = config or SynthConfig()
    raw = rng.poisson(expected).astype(np.float64)
    if config.read_noise > 0:
        raw += rng.normal(0.0, config.read_noise, size=raw.shape)
    return raw.astype(np.float32)


def simulate_raw(
    gt: np.ndarray, psf: np.ndarray, rng: np.random.Generator, config: SynthConfig | None = None
) -> np.ndarray:
    """Image `gt` through `psf` with Poisson and read noise:
    raw = Poisson(photon_scale * (gt * psf) + background) + N(0, read_noise^2), float32."""
    return add_noise(expected_counts(gt, psf, config), rng, config)


def draw_phantom(
    shape: Sequence[int], psf: np.ndarray, rng: np.random.Generator, config: SynthConfig
) -> tuple[np.ndarray, np.ndarray]:
    """One ground truth of ``shape`` and its noise-free image (counts, float64), with what
    lies past the faces as ``config.beyond_field`` says."""
    shape = _check_shape(shape)
    if config.beyond_field == "nothing":
        gt = make_ground_truth(shape, rng, config)
        return gt, expected_counts(gt, psf, config)
    margin = [k // 2 for k in np.shape(psf)]
    grown = make_ground_truth([n + 2 * m for n, m in zip(shape, margin)], rng, config)
    field = tuple(slice(m, m + n) for m, n in zip(margin, shape))
    return grown[field].copy(), expected_counts(grown, psf, config)[field].copy()


def simulate_pair(
    shape: Sequence[int], psf: np.ndarray, seed: int, config: SynthConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Return (raw, gt) float32 arrays, byte-identical for the same seed and config."""
    shape = _check_shape(shape)
    _check_psf(psf, len(shape))  # fail before spending time on the GT
    config = config or SynthConfig()
    rng = np.random.default_rng(seed)
    gt, expected = draw_phantom(shape, psf, rng, config)
    return add_noise(expected, rng, config), gt


def pair_seed(seed: int, index: int) -> int:
    """Seed of pair `index` in a dataset seeded with `seed`: seed * 1_000_003 + index.

    Shared by write_synthetic_dataset and SyntheticPairs so sample i on disk equals item i
    on the fly; distinct (seed, index) pairs never collide while index < 1_000_003.
    """
    if seed < 0 or index < 0:
        raise DeconvError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return seed * _SEED_STRIDE + index


def write_synthetic_dataset(
    out_dir: Path,
    psf: np.ndarray,
    n: int,
    shape: Sequence[int],
    seed: int,
    voxel_size: tuple[float, ...] | None,
    config: SynthConfig | None = None,
    progress: bool = True,
) -> list[Path]:
    """Write n pairs as out_dir/{raw,gt}/sample_NNNN.tif plus out_dir/synth.json.

    Pair i uses seed pair_seed(seed, i). synth.json (written last, so its presence means the
    dataset is complete) records everything needed to regenerate the data. Returns the raw
    paths; each GT has the same file name under gt/.
    """
    if n < 1:
        raise DeconvError(f"n must be >= 1, got {n}")
    shape = _check_shape(shape)
    _check_psf(psf, len(shape))
    pair_seed(seed, 0)  # validates the seed
    if voxel_size is not None and len(voxel_size) != len(shape):
        raise DeconvError(f"voxel_size {tuple(voxel_size)} must have {len(shape)} entries")
    from deconv.io import write_image  # lazy: only writing datasets needs the TIFF stack

    config = config or SynthConfig()
    out_dir = Path(out_dir)
    (out_dir / "raw").mkdir(parents=True, exist_ok=True)
    (out_dir / "gt").mkdir(parents=True, exist_ok=True)

    paths = []
    with Progress(transient=True, disable=not (progress and n > 1)) as bar:
        task = bar.add_task("Simulating pairs", total=n)
        for i in range(n):
            raw, gt = simulate_pair(shape, psf, pair_seed(seed, i), config)
            name = f"sample_{i:04d}.tif"
            write_image(out_dir / "raw" / name, raw, voxel_size=voxel_size)
            write_image(out_dir / "gt" / name, gt, voxel_size=voxel_size)
            paths.append(out_dir / "raw" / name)
            bar.advance(task)

    meta = {
        "config": config.model_dump(mode="json"),
        "shape": list(shape),
        "n": n,
        "seed": seed,
        "pair_seed": "seed * 1000003 + index",
        "voxel_size": None if voxel_size is None else [float(v) for v in voxel_size],
        "psf_shape": list(np.shape(psf)),
    }
    tmp = out_dir / "synth.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out_dir / "synth.json")
    return paths


class SyntheticPairs(torch.utils.data.Dataset):
    """On-the-fly (raw, gt) training pairs, each a float32 tensor of shape (1, *shape).

    Item i is simulate_pair(shape, psf, pair_seed(seed, i)): it depends only on (seed, i), so
    every epoch and every DataLoader worker sees the same data, identical to the files
    write_synthetic_dataset writes for the same seed.
    """

    def __init__(
        self,
        psf: np.ndarray,
        shape: Sequence[int],
        length: int,
        seed: int = 0,
        config: SynthConfig | None = None,
    ) -> None:
        self.shape = _check_shape(shape)
        _check_psf(psf, len(self.shape))
        if length < 1:
            raise DeconvError(f"length must be >= 1, got {length}")
        pair_seed(seed, 0)
        self.psf = np.asarray(psf)
        self.length = length
        self.seed = seed
        self.config = config or SynthConfig()

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} pairs")
        index %= self.length
        raw, gt = simulate_pair(self.shape, self.psf, pair_seed(self.seed, index), self.config)
        return torch.from_numpy(raw[None]), torch.from_numpy(gt[None])
