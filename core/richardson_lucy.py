"""Richardson-Lucy deconvolution in PyTorch (CPU and CUDA, float32), built to be FFT-bound.

    x <- x * B(y / (H x + background)) / B(1)

H is the PSF, B the back projector (see :mod:`deconv.back_projectors`). Transfer functions
are computed once per image shape on 7-smooth padded grids, and one iteration is exactly four
real FFTs plus a handful of in-place element-wise passes, which is the floor for RL.

Edges (``boundary``):
- ``noncirculant`` (default): the estimate lives on the image grown by the PSF, the data term
  only on the image, and the update is divided by B applied to the image mask. Objects just
  outside the field of view are explained instead of folded back, so nothing rings.
- ``reflect``: the image is mirror-padded by half the PSF, then plain circular RL.
- ``periodic``: no padding at all (the image wraps around), the cheapest; right only for
  data that is periodic or already padded by the caller, and the convention of peers
  such as RedLionfish, kept for like-for-like comparisons.
- ``zero``: estimate restricted to the image, zero outside, no normalisation; this is
  scikit-image's convention (its ``richardson_lucy`` convolves in "same" mode), kept so that
  the two can be compared voxel for voxel.

The background is part of the forward model (y ~ Hx + b), the Poisson maximum-likelihood form:
it is removed without clipping the data. Denominators are floored at ``floor * max(y)``.
Biggs-Andrews acceleration (vector extrapolation, Biggs & Andrews 1997) is optional.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.fft
import torch
from pydantic import BaseModel, ConfigDict, Field

from deconv.back_projectors import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_ORDER,
    Alpha,
    BackProjectorConfig,
    BackProjectorKind,
    Beta,
    Order,
    Resolution,
    back_projector,
)
from deconv.errors import DeconvError
from deconv.fft import (
    FFT_WORKERS,
    fft_friendly_threads,
    next_smooth_size,
    shift_phase,
    transfer_function,
    tune_allocator,
)
from deconv.rl_transforms import Engine, PlanningEffort, RLTransforms, make_transforms

Boundary = Literal["noncirculant", "reflect", "zero", "periodic"]
# Voxels of the grown estimate that receive less than this fraction of a full back
# projection are not estimated: the data hardly constrains them, and float32 round-off in
# the normalisation would dominate. 1e-2 already bends a flat field by 10% at the corners;
# at 1e-4 it stays flat to 1e-5.
_SUPPORT_THRESHOLD = 1e-4
# Unmatched back projectors have negative lobes: their B 1 wobbles around small values at
# the rim, so they update only where they reach with at least this weight.
_UNMATCHED_THRESHOLD = 1e-2
# A given starting estimate is floored at this fraction of the flat start's level.
START_FLOOR = 1e-3


class RLConfig(BaseModel):
    """Everything that defines a Richardson-Lucy run, as a user or a package file states it."""

    model_config = ConfigDict(extra="forbid")

    iterations: int = Field(30, ge=1, le=100_000)
    back_projector: BackProjectorKind = "traditional"
    alpha: Alpha = DEFAULT_ALPHA
    beta: Beta = DEFAULT_BETA
    order: Order = DEFAULT_ORDER
    resolution: Resolution = None
    boundary: Boundary = "noncirculant"
    background: float = Field(0.0, ge=0, description="camera offset in input units")
    acceleration: bool = Field(False, description="Biggs-Andrews vector extrapolation")
    floor: float = Field(1e-4, ge=0, description="denominator floor relative to max(y)")
    init: float | None = Field(None, description="constant start; default the image mean")

    def back_projector_config(self) -> BackProjectorConfig:
        return BackProjectorConfig(
            kind=self.back_projector, alpha=self.alpha, beta=self.beta, order=self.order,
            resolution=self.resolution,
        )  # fmt: skip


@dataclass
class _Plan:
    """Padded geometry, transfer functions and FFT engines for one spatial shape."""

    padded: tuple[int, ...]
    valid: tuple[slice, ...]
    # pruned plans keep the data in the grid's corner: the PSF's transfer function moves the
    # valid region there, the back projector's moves it back
    psf_tf: torch.Tensor
    bp_tf: torch.Tensor
    weight: torch.Tensor | None  # 1 / B(mask) where updated (noncirculant only)
    frozen: torch.Tensor | None  # 1 where the estimate is kept, not updated
    support: torch.Tensor | None  # 1 where the estimate lives
    pruned: bool  # data only in the valid region: the blur is needed there only
    transforms: dict[tuple[str, int], RLTransforms] = field(default_factory=dict)
    _scaled: dict[float, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.valid)

    @property
    def corner(self) -> tuple[int, ...]:
        """Where the data sit in the grid's corner, as the FFT engines see it."""
        return self.shape if self.pruned else self.padded

    def transfer_functions(self, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(PSF, back projector) transfer functions carrying an engine's normalisation."""
        if scale == 1.0:
            return self.psf_tf, self.bp_tf
        if scale not in self._scaled:
            self._scaled[scale] = (self.psf_tf * scale, self.bp_tf * scale)
        return self._scaled[scale]


class RichardsonLucy:
    """RL for one PSF and configuration; transfer functions are cached per image shape."""

    def __init__(
        self,
        psf: np.ndarray,
        config: RLConfig | None = None,
        device: str | torch.device = "cpu",
        fft: Engine = "auto",
    ) -> None:
        self.config = config or RLConfig()
        self.fft = fft
        self.psf = np.asarray(psf, dtype=np.float32)
        self.back_projector = back_projector(self.psf, self.config.back_projector_config())
        self.device = torch.device(device)
        self._clamp = bool((self.back_projector < 0).any())
        self._matched = self.config.back_projector == "traditional"
        self._plans: dict[tuple[int, ...], _Plan] = {}
        if self.device.type == "cpu":
            tune_allocator()

    def plan(self, shape: Sequence[int]) -> _Plan:
        shape = tuple(int(s) for s in shape)
        if shape not in self._plans:
            self._plans[shape] = self._make_plan(shape)
        return self._plans[shape]

    def _make_plan(self, shape: tuple[int, ...]) -> _Plan:
        check_psf_fits(shape, self.psf.shape)
        boundary = self.config.boundary
        padded = tuple(
            n if boundary == "periodic" else next_smooth_size(n + p - 1)
            for n, p in zip(shape, self.psf.shape, strict=True)
        )
        if boundary in ("reflect", "periodic"):
            lo = [(s - n) // 2 for s, n in zip(padded, shape)]
        else:
            lo = [p // 2 for p in self.psf.shape]
        valid = tuple(slice(a, a + n) for a, n in zip(lo, shape))
        pruned = boundary in ("noncirculant", "zero")
        psf_tf = transfer_function(self.psf, padded)
        bp_tf = transfer_function(self.back_projector, padded)
        weight = frozen = support = None
        if self.config.boundary == "noncirculant":
            weight, frozen, support = self._normalisation(padded, valid, psf_tf, bp_tf)
        if pruned:
            ramp = shift_phase(padded, lo)
            psf_tf, bp_tf = psf_tf * ramp, bp_tf * np.conj(ramp)
        psf_tf, bp_tf = self._tensor(psf_tf), self._tensor(bp_tf)
        return _Plan(padded, valid, psf_tf, bp_tf, weight, frozen, support, pruned)

    def _normalisation(self, padded, valid, psf_tf: np.ndarray, bp_tf: np.ndarray):
        """Where the grown estimate lives, where it is updated, and the update's divisor.

        The estimate lives wherever the PSF carries light into the image (H^T 1 above a
        threshold). It is updated where the back projector reaches (B 1 above a threshold)
        and divided there by B 1, so a flat field is an exact fixed point. An unmatched back
        projector is more compact than the PSF's tails; the voxels only the PSF reaches are
        kept at their starting level (the image mean) rather than updated from a
        normalisation that is close to 0/0.
        """
        mask = np.zeros(padded, dtype=np.float64)
        mask[valid] = 1.0
        mask_spectrum = scipy.fft.rfftn(mask, workers=FFT_WORKERS)

        def reach(transfer: np.ndarray) -> np.ndarray:
            return scipy.fft.irfftn(mask_spectrum * transfer, s=padded, workers=FFT_WORKERS)

        # the flipped PSF's transfer function is the conjugate of the PSF's
        support = reach(np.conj(psf_tf)) > _SUPPORT_THRESHOLD
        coverage = reach(bp_tf)
        threshold = _SUPPORT_THRESHOLD if self._matched else _UNMATCHED_THRESHOLD
        updated = support & (coverage > threshold)
        weight = np.where(updated, 1.0 / np.where(updated, coverage, 1.0), 0.0)
        frozen = support & ~updated

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a.astype(np.float32)).to(self.device)

        return tensor(weight), (tensor(frozen) if frozen.any() else None), tensor(support)

    def _tensor(self, tf: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(tf.astype(np.complex64)).to(self.device)

    def __call__(
        self,
        image: np.ndarray | torch.Tensor,
        iterations: int | None = None,
        callback: Callable[[int], None] | None = None,
        start: np.ndarray | torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Deconvolve ``image`` of shape (*batch, *spatial); returns a tensor of that shape.

        ``start`` (the image's shape, object units: background removed) replaces the flat
        starting estimate inside the image, e.g. a network's restoration, so that the
        iterations begin from a good guess instead of from nothing; the grown border keeps
        the flat level. It is floored at a thousandth of that level, because a multiplicative
        update can never raise a voxel that starts at zero.
        """
        ndim = self.psf.ndim
        y = torch.as_tensor(image, dtype=torch.float32, device=self.device)
        if y.ndim < ndim:
            raise DeconvError(f"a {ndim}D PSF needs an image with at least {ndim} axes")
        batch_shape, spatial = y.shape[:-ndim], tuple(y.shape[-ndim:])
        y = y.reshape((-1, *spatial))
        plan = self.plan(spatial)
        n_iter = iterations or self.config.iterations
        transforms = self._transforms(plan, y.shape[0], n_iter)
        data, x = self._start(y, plan)
        if start is not None:
            self._replace_start(x, start, tuple(image.shape), plan)
        # per image: one bright image in a batch must not change how a dim one is treated
        peak = y.flatten(1).amax(1).reshape((-1,) + (1,) * ndim)
        floor = (self.config.floor * peak).clamp_min(1e-12)
        with fft_friendly_threads(self.device, transforms.name), transforms.exclusive():
            x = self._iterate(x, data, plan, transforms, floor, n_iter, callback)
        out = x[(slice(None), *plan.valid)]
        return out.reshape((*batch_shape, *spatial))

    def _transforms(self, plan: _Plan, batch: int, iterations: int) -> RLTransforms:
        """This shape's FFT engine for ``batch`` images, made once (``auto``: see
        :mod:`deconv.rl_transforms`; FFTW once made is kept, as it is the fastest)."""
        cache = plan.transforms
        if self.fft == "auto" and ("fftw", batch) in cache:
            return cache[("fftw", batch)]
        if self.fft != "auto" and (self.fft, batch) in cache:
            return cache[(self.fft, batch)]
        made = make_transforms(self.fft, self.device, batch, plan.padded, plan.corner, iterations)
        return cache.setdefault((made.name, batch), made)

    def measure_fft_plans(
        self, shape: Sequence[int], batch: int = 1, effort: PlanningEffort = "measure"
    ) -> float:
        """Measure FFTW plans for images of ``shape`` now; returns the seconds it took.

        The wisdom is cached on disk, so later runs on this grid (in any process) get FFTW
        without measuring. ``patient`` searches far longer (minutes on an 80x256x256 grid)
        for plans ~15% faster: worth it before deconvolving many volumes of one shape.
        """
        from deconv.fftw_transforms import FFTWTransforms

        if self.device.type != "cpu":
            raise DeconvError(f"FFTW plans are for CPU runs; this model runs on {self.device}")
        plan = self.plan(shape)
        start = time.perf_counter()
        made = FFTWTransforms(batch, plan.padded, plan.corner, effort=f"FFTW_{effort.upper()}")
        plan.transforms[("fftw", batch)] = made
        return time.perf_counter() - start

    def _iterate(
        self, x, data, plan: _Plan, transforms: RLTransforms, floor, iterations: int, callback
    ) -> torch.Tensor:
        ndim = len(plan.padded)
        bg = self.config.background
        accelerate = self.config.acceleration
        x_prev = g1 = g2 = None
        for k in range(iterations):
            start = x
            if accelerate and g2 is not None:
                start = _extrapolate(x, x_prev, g1, g2, ndim)
            new = self._step(start, data, plan, transforms, floor, bg)
            if accelerate:
                g2, g1 = g1, new - start
                x_prev = x
            x = new
            if callback is not None:
                callback(k + 1)
        return x

    def _start(self, y: torch.Tensor, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
        """The data as the iteration wants it, and the starting estimate.

        For pruned plans the data stays compact: the FFT engine treats everything outside
        the valid region as zero.
        """
        batch = y.shape[0]
        full = (batch, *plan.padded)
        region = (slice(None), *plan.valid)
        if self.config.boundary == "reflect":
            pads = []
            for sl, s in reversed(list(zip(plan.valid, plan.padded))):
                pads += [sl.start, s - sl.stop]
            data = _reflect_pad(y, pads)
        elif self.config.boundary == "periodic":
            data = y.contiguous()
        else:
            data = y.contiguous()
        bg = self.config.background
        if self.config.init is not None:
            level = torch.full((batch,), float(self.config.init), device=self.device)
        else:
            level = (y - bg).flatten(1).mean(1).clamp_min(1e-6 * max(float(y.max()), 1e-12))
        level = level.reshape((batch,) + (1,) * len(plan.padded))
        if self.config.boundary in ("reflect", "periodic"):
            x = level.expand(full).clone()
        elif self.config.boundary == "zero":
            x = torch.zeros(full, dtype=torch.float32, device=self.device)
            x[region] = level.expand(full)[region]
        else:
            x = plan.support * level
        return data, x

    def _replace_start(self, x: torch.Tensor, start, shape: tuple[int, ...], plan: _Plan) -> None:
        given = torch.as_tensor(start, dtype=torch.float32, device=self.device)
        if tuple(given.shape) != shape:
            raise DeconvError(
                f"the starting estimate has shape {tuple(given.shape)}, the image {shape}"
            )
        if not bool(torch.isfinite(given).all()):
            raise DeconvError("the starting estimate contains NaN or Inf values")
        region = (slice(None), *plan.valid)
        flat = x[region]
        level = flat.flatten(1).amax(1).reshape((-1,) + (1,) * (flat.ndim - 1))
        x[region] = torch.maximum(given.reshape(flat.shape), START_FLOOR * level)

    def _step(
        self, x, data, plan: _Plan, t: RLTransforms, floor: torch.Tensor, bg: float
    ) -> torch.Tensor:
        """One iteration: four real FFTs (two pruned) and in-place element-wise passes."""
        psf_tf, bp_tf = plan.transfer_functions(t.scale)
        spectrum = t.forward(x)
        spectrum.mul_(psf_tf)
        blurred = t.inverse_corner(spectrum) if plan.pruned else t.inverse(spectrum)
        if bg:
            blurred.add_(bg)
        torch.maximum(blurred, floor, out=blurred)
        if plan.pruned:
            torch.div(data, blurred, out=t.corner_input())
            spectrum = t.forward_corner()
        else:
            spectrum = t.forward(torch.div(data, blurred, out=blurred))
        spectrum.mul_(bp_tf)
        correction = t.inverse(spectrum)
        if plan.weight is not None:
            correction.mul_(plan.weight)
        if plan.frozen is not None:
            correction.add_(plan.frozen)
        correction.mul_(x)
        if self._clamp:
            correction.clamp_(min=0)
        return correction


def _reflect_pad(y: torch.Tensor, pads: list[int]) -> torch.Tensor:
    """Mirror padding of any width (torch's reflect mode needs pads smaller than the image)."""
    arr = y.cpu().numpy()
    ndim = len(pads) // 2
    widths = [(0, 0)] + [(pads[2 * i], pads[2 * i + 1]) for i in reversed(range(ndim))]
    return torch.from_numpy(np.pad(arr, widths, mode="symmetric")).to(y.device)


def _extrapolate(x, x_prev, g1, g2, ndim: int) -> torch.Tensor:
    """Biggs-Andrews step: x + lambda (x - x_prev), lambda from the last two corrections."""
    dims = tuple(range(1, ndim + 1))
    num = (g1 * g2).sum(dims)
    den = (g2 * g2).sum(dims).clamp_min(1e-30)
    lam = (num / den).clamp(0.0, 1.0).reshape((-1,) + (1,) * ndim)
    return (x + lam * (x - x_prev)).clamp_(min=0)


def check_psf_fits(image_shape: Sequence[int], psf_shape: Sequence[int]) -> None:
    """Refuse PSFs larger than the image: the data cannot constrain such a deconvolution."""
    for axis, (n, p) in enumerate(zip(image_shape, psf_shape, strict=True)):
        if p > n:
            raise DeconvError(
                f"the PSF ({'x'.join(map(str, psf_shape))}) is larger than the image "
                f"({'x'.join(map(str, image_shape))}) along axis {axis}; crop the PSF "
                "or use a larger image"
            )


def richardson_lucy(
    image: np.ndarray,
    psf: np.ndarray,
    config: RLConfig | None = None,
    *,
    stack: bool = False,
    device: str | torch.device = "cpu",
    callback: Callable[[int], None] | None = None,
    start: np.ndarray | None = None,
    **overrides,
) -> np.ndarray:
    """Deconvolve one image (``image.ndim == psf.ndim``) or, with ``stack``, a stack of them.

    Keyword ``overrides`` are :class:`RLConfig` fields, e.g. ``iterations=30``. ``start``
    (the image's shape) is a first estimate of the object to iterate from instead of a flat
    one, e.g. a network's restoration (see :mod:`deconv.runtime.rl_refine`).
    """
    config = RLConfig.model_validate({**(config or RLConfig()).model_dump(), **overrides})
    image = np.asarray(image)
    check_dimensions(image.shape, np.asarray(psf).shape, stack)
    if not np.all(np.isfinite(image)):
        raise DeconvError("the image contains NaN or Inf values")
    result = RichardsonLucy(psf, config, device)(image, callback=callback, start=start)
    return result.cpu().numpy()


def check_dimensions(
    image_shape: Sequence[int], psf_shape: Sequence[int], stack: bool, fit: bool = True
) -> None:
    """A PSF must match the image's dimensionality (one extra leading axis for a stack).

    With ``fit`` it must also be no larger than the image (see :func:`check_psf_fits`).
    """
    expected = len(psf_shape) + (1 if stack else 0)
    if len(image_shape) != expected:
        what = f"a stack of {len(psf_shape)}D images" if stack else f"a {len(psf_shape)}D image"
        hint = (
            "; to deconvolve each plane separately pass --stack"
            if len(image_shape) == len(psf_shape) + 1
            else ""
        )
        raise DeconvError(
            f"the PSF is {len(psf_shape)}D, so the input must be {what}, but it has shape "
            f"{tuple(image_shape)}{hint}"
        )
    if fit:
        check_psf_fits(image_shape[-len(psf_shape) :], psf_shape)
