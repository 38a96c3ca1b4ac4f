"""Training pairs: synthetic from a PSF (the RLN paper's key result) or paired TIFFs.

Both sources hold a pool of normalised (raw, ground truth) volumes and draw random patches
from it. Every draw is a pure function of (seed, step), and the synthetic pool is refreshed
on a fixed schedule, so a run resumed from a checkpoint sees exactly the batches an
uninterrupted run would have seen.

Normalisation is per image, by percentiles of the whole volume (never per patch), as the
model card states; it is recorded in the run directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from deconv.errors import DeconvError
from deconv.io import read_image
from deconv.normalization import normalize, percentile_range, rescale
from deconv.synth import (
    STRUCTURE_CLASSES,
    SynthConfig,
    add_noise,
    draw_phantom,
    pair_seed,
    simulate_pair,
)
from deconv.zoo.card import Normalization

VALIDATION_SEED_OFFSET = 1_000_000  # validation volumes never share a seed with training
REFRESH_EVERY = 50  # steps between replacing one synthetic pool volume


class DataDescription(BaseModel):
    """What a run was trained on; written to ``data.json`` in the run directory."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["synthetic", "paired"]
    volume_shape: tuple[int, ...] | None = None
    pool_size: int | None = None
    refresh_every: int | None = None
    photon_scale: tuple[float, float] | None = None
    synth: SynthConfig | None = None
    validation_structures: tuple[str, ...] | None = None
    folder: str | None = None
    train_files: list[str] = Field(default_factory=list)
    validation_files: list[str] = Field(default_factory=list)
    seed: int = 0
    flip_axes: tuple[int, ...] | None = None
    """Axes training patches were randomly flipped along (None in records written before
    the choice existed: every axis)."""
    noise: Literal["fresh", "fixed"] | None = None
    """Synthetic data: a new noise draw for every patch, or one per pool volume (None in
    records written before the choice existed: fixed)."""


class _NoiseFree(NamedTuple):
    """A pool volume's noise-free image (counts) and the range of its normalisation."""

    expected: np.ndarray
    low: float
    high: float
    synth: SynthConfig


class PatchSource:
    """A pool of normalised pairs and deterministic random patches from it."""

    def __init__(
        self,
        pairs: list[tuple[np.ndarray, np.ndarray]],
        patch: Sequence[int],
        intensity_scale: tuple[float, float] = (1.0, 1.0),
        flip_axes: Sequence[int] | None = None,
    ) -> None:
        self.pairs = pairs
        self.patch = tuple(int(p) for p in patch)
        # None: every axis (the behaviour of runs made before the choice existed)
        self.flip_axes = tuple(range(len(self.patch))) if flip_axes is None else tuple(flip_axes)
        self.intensity_scale = (float(intensity_scale[0]), float(intensity_scale[1]))
        for raw, _ in pairs:
            if raw.ndim != len(self.patch):
                raise DeconvError(
                    f"training data is {raw.ndim}D but the patch {self.patch} is "
                    f"{len(self.patch)}D; the model needs {len(self.patch)}D data"
                )

    def batch(self, step: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([seed, step])
        noise = np.random.default_rng([seed, step, 2])  # own stream: crops do not depend on it
        raws, gts = [], []
        for _ in range(size):
            raw, gt = self._patch(rng, noise)
            raws.append(raw)
            gts.append(gt)
        raw_batch, gt_batch = np.stack(raws)[:, None], np.stack(gts)[:, None]
        lo, hi = self.intensity_scale
        if (lo, hi) != (1.0, 1.0):
            # One factor per sample for raw and truth alike: blurring is linear, so a dimmer
            # sample has a proportionally dimmer truth. Normalised test data are not always as
            # bright as the training data (a sparse sample's percentiles sit on its brightest
            # overlaps), and a network that ties shapes to levels fails on them. Own stream:
            # the crops are those of the unaugmented run.
            draw = np.random.default_rng([seed, step, 1]).uniform(np.log(lo), np.log(hi), size)
            factors = np.exp(draw).astype(np.float32).reshape((size,) + (1,) * (raw_batch.ndim - 1))
            raw_batch, gt_batch = raw_batch * factors, gt_batch * factors
        return torch.from_numpy(raw_batch), torch.from_numpy(gt_batch)

    def _patch(
        self, rng: np.random.Generator, noise: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random crop with random flips along ``flip_axes``; crops much darker than their
        volume are redrawn (at most 10 times), as the RLN paper does, so batches are not
        mostly background. A coin is tossed for every axis, flipped or not, so the crops and
        the other flips do not depend on which axes may flip."""
        index = int(rng.integers(len(self.pairs)))
        gt = self.pairs[index][1]
        size = [min(p, s) for p, s in zip(self.patch, gt.shape)]
        mean = float(gt.mean())
        for _ in range(10):
            corner = [int(rng.integers(0, s - p + 1)) for s, p in zip(gt.shape, size)]
            region = tuple(slice(c, c + p) for c, p in zip(corner, size))
            if float(gt[region].mean()) >= 0.8 * mean:
                break
        r, g = self._raw_crop(index, region, noise), gt[region]
        for axis in range(r.ndim):
            if rng.random() < 0.5 and axis in self.flip_axes:
                r, g = np.flip(r, axis), np.flip(g, axis)
        return np.ascontiguousarray(r), np.ascontiguousarray(g)

    def _raw_crop(
        self, index: int, region: tuple[slice, ...], noise: np.random.Generator
    ) -> np.ndarray:
        return self.pairs[index][0][region]


class SyntheticPool(PatchSource):
    """Mixed-structure volumes blurred by the PSF; one volume is replaced every
    ``refresh_every`` steps.

    ``fresh_noise``: every patch gets its own Poisson and read noise, drawn from the
    volume's noise-free image, instead of a crop of the volume's one noisy realization.
    With the 3D defaults (8 volumes of 64x128x128, one replaced every 50 steps, batches of
    4 patches of 32x48x48) a volume lives 400 steps and each voxel is drawn ~14 times, so
    with one realization the network sees the same noise again and again. A patch's fresh
    draw costs ~3 ms (a 3D step: seconds). The normalisation stays that of one whole-volume
    realization, which is what the percentiles of test data see.
    """

    def __init__(
        self,
        psf: np.ndarray,
        volume_shape: Sequence[int],
        patch: Sequence[int],
        normalization: Normalization,
        seed: int,
        pool_size: int = 8,
        synth: SynthConfig | None = None,
        intensity_scale: tuple[float, float] = (1.0, 1.0),
        refresh_every: int = REFRESH_EVERY,
        photon_scale: tuple[float, float] | None = None,
        flip_axes: Sequence[int] | None = None,
        fresh_noise: bool = False,
    ) -> None:
        self.psf, self.volume_shape = psf, tuple(volume_shape)
        self.fresh_noise = fresh_noise
        self.refresh_every = int(refresh_every)
        self.photon_scale = photon_scale
        self.normalization, self.seed = normalization, seed
        self.synth = synth or SynthConfig()
        self.pool_size = pool_size
        self._generation = 0
        drawn = [self._make(i) for i in range(pool_size)]
        self._noise_free = [noise_free for _, noise_free in drawn]
        super().__init__([pair for pair, _ in drawn], patch, intensity_scale, flip_axes)

    def photon_level(self, index: int) -> float:
        """Photons per unit truth of pool volume ``index`` (its own random stream, so the
        phantom is the same whatever the level)."""
        if self.photon_scale is None:
            return self.synth.photon_scale
        lo, hi = np.log(self.photon_scale)
        rng = np.random.default_rng([pair_seed(self.seed, index), 1])
        return float(np.exp(rng.uniform(lo, hi)))

    def _make(self, index: int) -> tuple[tuple[np.ndarray, np.ndarray], _NoiseFree | None]:
        """Pool volume ``index``, normalised (the phantom and noise draw of
        :func:`deconv.synth.simulate_pair`), and with fresh noise what it is drawn from."""
        synth = self.synth.model_copy(update={"photon_scale": self.photon_level(index)})
        rng = np.random.default_rng(pair_seed(self.seed, index))
        gt, expected = draw_phantom(self.volume_shape, self.psf, rng, synth)
        raw = add_noise(expected, rng, synth)
        lo, hi = percentile_range(raw, self.normalization)
        pair = (rescale(raw, lo, hi), normalize(gt, self.normalization))
        if not self.fresh_noise:
            return pair, None
        return pair, _NoiseFree(expected.astype(np.float32), lo, hi, synth)

    def _raw_crop(
        self, index: int, region: tuple[slice, ...], noise: np.random.Generator
    ) -> np.ndarray:
        source = self._noise_free[index]
        if source is None:
            return super()._raw_crop(index, region, noise)
        counts = add_noise(source.expected[region].astype(np.float64), noise, source.synth)
        return rescale(counts, source.low, source.high)

    def at_step(self, step: int) -> None:
        """Bring the pool to the state it has at ``step`` (replays refreshes on resume)."""
        target = step // self.refresh_every
        while self._generation < target:
            self._generation += 1
            slot = self._generation % self.pool_size
            self.pairs[slot], self._noise_free[slot] = self._make(self.pool_size + self._generation)

    def batch(self, step: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.at_step(step)
        return super().batch(step, size, seed)


def synthetic_validation(
    psf: np.ndarray,
    volume_shape: Sequence[int],
    normalization: Normalization,
    seed: int,
    count: int,
    structures: Sequence[str] | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out pairs from their own seeds, optionally of other structure classes."""
    config = SynthConfig(structures=tuple(structures or STRUCTURE_CLASSES))
    pairs = []
    for i in range(count):
        raw, gt = simulate_pair(
            volume_shape, psf, pair_seed(seed + VALIDATION_SEED_OFFSET, i), config
        )
        pairs.append((normalize(raw, normalization), gt))
    return pairs


def paired_files(folder: str | Path) -> list[tuple[Path, Path]]:
    """``raw/`` and ``gt/`` TIFFs matched by file name; unmatched names are an error."""
    folder = Path(folder)
    raw_dir, gt_dir = folder / "raw", folder / "gt"
    if not raw_dir.is_dir() or not gt_dir.is_dir():
        raise DeconvError(f"{folder}: expected sub-folders raw/ and gt/ with matching TIFFs")
    suffixes = (".tif", ".tiff")
    raws = {p.name for p in raw_dir.iterdir() if p.name.lower().endswith(suffixes)}
    gts = {p.name for p in gt_dir.iterdir() if p.name.lower().endswith(suffixes)}
    if not raws and not gts:
        raise DeconvError(f"{folder}: raw/ and gt/ hold no TIFF files")
    unmatched = sorted(raws ^ gts)
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (" ..." if len(unmatched) > 5 else "")
        raise DeconvError(f"{folder}: {len(unmatched)} files without a partner: {shown}")
    return [(raw_dir / n, gt_dir / n) for n in sorted(raws)]


def load_pairs(
    files: list[tuple[Path, Path]], normalization: Normalization, normalize_gt: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    pairs = []
    for raw_path, gt_path in files:
        raw, gt = read_image(raw_path).data, read_image(gt_path).data
        if raw.shape != gt.shape:
            raise DeconvError(f"{raw_path.name}: raw {raw.shape} and gt {gt.shape} differ")
        gt = normalize(gt, normalization) if normalize_gt else np.asarray(gt, np.float32)
        pairs.append((normalize(raw, normalization), gt))
    return pairs
