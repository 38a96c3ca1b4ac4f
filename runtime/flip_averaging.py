"""``--tta``: average a network's predictions over the flips its PSF is symmetric under.

A network trained for one PSF should answer a flipped image with the flipped answer when
the flip leaves the PSF (and so the imaging) unchanged, but a small network only
approximately does; averaging the answers to the flipped inputs removes the part of its
error that is not symmetric. On held-out shells the shipped 3D RLN gains ~0.4-0.5 dB with the
four lateral flips (BENCHMARKS.md), at four times the inference cost. Swapping y and x as
well (8 variants) adds only ~0.1 dB more and would change tile shapes.

Only flips of whole axes are used (not transposes), so every tile keeps its shape and every
backend (torch, ONNX Runtime, TensorRT engines with fixed shapes) and tiling scheme works
unchanged; each tile window, halo included, is flipped, predicted and flipped back. Which
flips qualify is read off the model's PSF: widefield PSFs are symmetric laterally but not
along z (spherical aberration), so a 3D model gets the four lateral flips. An RLN built
with ``flip_axes`` already averages (and mixes) over those flips inside its graph, so they
are left out here.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np

from deconv.errors import DeconvError
from deconv.psf import SYMMETRY_TOLERANCE, symmetric_axes


def psf_flips(
    psf: np.ndarray, tolerance: float = SYMMETRY_TOLERANCE, exclude: tuple[int, ...] = ()
) -> list[tuple[int, ...]]:
    """Every set of spatial axes whose flip leaves ``psf`` unchanged (``()``: no flip),
    leaving out axes in ``exclude`` (those a network is already equivariant to)."""
    symmetric = [a for a in symmetric_axes(psf, tolerance) if a not in exclude]
    return [combo for n in range(len(symmetric) + 1) for combo in combinations(symmetric, n)]


class FlipAveraged:
    """A backend that answers with the mean of ``inner``'s answers to the flipped batch."""

    def __init__(self, inner: Any, flips: list[tuple[int, ...]], ndim: int) -> None:
        self.inner = inner
        self.flips = flips  # spatial axes, 0 = the first of ``ndim`` trailing window axes
        self.ndim = ndim

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        lead = batch.ndim - self.ndim  # (B, 1, *window)
        total = None
        for flip in self.flips:
            axes = tuple(lead + a for a in flip)
            out = self.inner(np.ascontiguousarray(np.flip(batch, axes)) if axes else batch)
            out = np.flip(out, axes) if axes else out
            total = out.astype(np.float32, copy=True) if total is None else total + out
        return total / len(self.flips)

    def describe(self) -> str:
        return f"{self.inner.describe()}, averaged over {len(self.flips)} flips"


def tta_flips(source: Any) -> list[tuple[int, ...]]:
    """The flips ``--tta`` averages over for ``source`` (a ModelSource), or why there are none."""
    if source.psf is None:
        raise DeconvError("--tta needs the model's PSF to know which flips keep the imaging "
                          "unchanged, and this model carries none")  # fmt: skip
    built_in = tuple(source.config.get("flip_axes", ()))
    flips = psf_flips(source.psf.data, exclude=built_in)
    if len(flips) == 1 and built_in:
        raise DeconvError(f"--tta: the model is already exactly equivariant to flips of axes "
                          f"{list(built_in)} (flip_axes), the flips its PSF allows; averaging "
                          "would not change its output")  # fmt: skip
    if len(flips) == 1:
        raise DeconvError("--tta: the model's PSF is symmetric under no flip, nothing to average")
    return flips


def flip_averaged(backend: Any, source: Any) -> FlipAveraged:
    return FlipAveraged(backend, tta_flips(source), source.psf.data.ndim)
