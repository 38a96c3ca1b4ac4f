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
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from deconv.errors import DeconvError
from deconv.io import read_image
from deconv.normalization import normalize
from deconv.synth import STRUCTURE_CLASSES, SynthConfig, pair_seed, simulate_pair
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
        raws, gts = [], []
        for _ in range(size):
            raw, gt = self._patch(rng)
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

    def _patch(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A random crop with random flips along ``flip_axes``; crops much darker than their
        volume are redrawn (at most 10 times), as the RLN paper does, so batches are not
        mostly background. A coin is tossed for every axis, flipped or not, so the crops and
        the other flips do not depend on which axes may flip."""
        raw, gt = self.pairs[int(rng.integers(len(self.pairs)))]
        size = [min(p, s) for p, s in zip(self.patch, gt.shape)]
        mean = float(gt.mean())
        for _ in range(10):
            corner = [int(rng.integers(0, s - p + 1)) for s, p in zip(gt.shape, size)]
            region = tuple(slice(c, c + p) for c, p in zip(corner, size))
            if float(gt[region].mean()) >= 0.8 * mean:
                break
        r, g = raw[region], gt[region]
        for axis in range(r.ndim):
            if rng.random() < 0.5 and axis in self.flip_axes:
                r, g = np.flip(r, axis), np.flip(g, axis)
        return np.ascontiguousarray(r), np.ascontiguousarray(g)


class SyntheticPool(PatchSource):
    """Mixed-structure volumes blurred by the PSF; one volume is replaced every
    ``refresh_every`` steps."""

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
    ) -> None:
        self.psf, self.volume_shape = psf, tuple(volume_shape)
        self.refresh_every = int(refresh_every)
        self.photon_scale = photon_scale
        self.normalization, self.seed = normalization, seed
        self.synth = synth or SynthConfig()
        self.pool_size = pool_size
        self._generation = 0
        pairs = [self._make(i) for i in range(pool_size)]
        super().__init__(pairs, patch, intensity_scale, flip_axes)

    def photon_level(self, index: int) -> float:
        """Photons per unit truth of pool volume ``index`` (its own random stream, so the
        phantom is the same whatever the level)."""
        if self.photon_scale is None:
            return self.synth.photon_scale
        lo, hi = np.log(self.photon_scale)
        rng = np.random.default_rng([pair_seed(self.seed, index), 1])
        return float(np.exp(rng.uniform(lo, hi)))

    def _make(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        synth = self.synth.model_copy(update={"photon_scale": self.photon_level(index)})
        raw, gt = simulate_pair(self.volume_shape, self.psf, pair_seed(self.seed, index), synth)
        return normalize(raw, self.normalization), normalize(gt, self.normalization)

    def at_step(self, step: int) -> None:
        """Bring the pool to the state it has at ``step`` (replays refreshes on resume)."""
        target = step // self.refresh_every
        while self._generation < target:
            self._generation += 1
            slot = self._generation % self.pool_size
            self.pairs[slot] = self._make(self.pool_size + self._generation)

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
