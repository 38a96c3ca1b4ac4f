"""The four real FFTs of one Richardson-Lucy iteration, on one grid, with one FFT engine.

An RL iteration is FFT-bound, so how the transforms run decides its speed. With the data in
one corner of the padded grid (noncirculant and zero boundaries), half of the work is
pruned away: the blurred estimate is needed only where there is data (``inverse_corner``),
and the ratio is zero outside it (``forward_corner``). Both are done axis by axis, cropping
(or zero-extending) between axes, which costs about 2/3 of a full transform on the default
3D grid (80x256x256 around 48x192x192 data).

Engines (``engine=``):
- ``torch``: torch.fft; the only choice on CUDA (cuFFT).
- ``scipy``: pocketfft with ``workers`` threads; faster than torch's MKL FFT on CPU here.
- ``fftw``: FFTW through pyFFTW (optional extra ``fftw``), measured plans with wisdom cached
  on disk (see :mod:`deconv.fftw_transforms`): ~20% faster than pocketfft per iteration.
- ``auto``: torch on CUDA; on CPU, FFTW when it is installed and planning is free (wisdom
  cached for this grid) or pays off (``FFTW_MIN_ITERATIONS`` or more iterations: measuring
  plans costs a few seconds once per grid and machine), otherwise scipy.

Every engine returns spectra in the same half-spectrum layout; ``scale`` is the factor the
caller's transfer functions must carry (1/N for FFTW, whose transforms are unnormalised), so
no engine spends an extra pass on normalisation.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from typing import Literal

import scipy.fft
import torch

from deconv.errors import DeconvError
from deconv.fft import FFT_WORKERS

Engine = Literal["auto", "torch", "scipy", "fftw"]
ENGINES: tuple[str, ...] = ("auto", "torch", "scipy", "fftw")
# how hard FFTW searches for plans: seconds (measure) or minutes (patient) per grid
PlanningEffort = Literal["measure", "patient", "exhaustive"]
# FFTW's one-off measuring (~3 s on an 80x256x256 grid) is repaid by its ~12 ms per iteration
# after ~250 iterations; both scale with the grid, so the break-even count hardly depends on
# it. Cached wisdom makes FFTW free at any count (``deconv fft-plan`` measures ahead).
FFTW_MIN_ITERATIONS = 250


class RLTransforms:
    """Transforms for a batch of ``batch`` signals on ``grid``, data in a ``corner`` of it.

    ``forward``/``inverse`` are full real FFTs over the last ``len(grid)`` axes.
    ``inverse_corner`` is the corner of an inverse; ``forward_corner`` transforms the signal
    written into ``corner_input()`` as if the rest of the grid were zero.
    """

    scale: float = 1.0
    name: str = ""

    def __init__(self, batch: int, grid: Sequence[int], corner: Sequence[int]) -> None:
        self.batch = batch
        self.grid = tuple(int(n) for n in grid)
        self.corner = tuple(int(n) for n in corner)
        self.ndim = len(self.grid)
        self._corner_input: torch.Tensor | None = None
        self._lock = threading.Lock()

    def exclusive(self) -> threading.Lock:
        """Held while one RL run uses these transforms: their scratch buffers are shared."""
        return self._lock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inverse(self, spectrum: torch.Tensor) -> torch.Tensor:
        """A new real tensor; ``spectrum`` may be destroyed."""
        raise NotImplementedError

    def inverse_corner(self, spectrum: torch.Tensor) -> torch.Tensor:
        """The corner of the inverse (possibly a view of scratch memory); may destroy input."""
        raise NotImplementedError

    def corner_input(self) -> torch.Tensor:
        """Where the caller writes the signal for :meth:`forward_corner`."""
        if self._corner_input is None:
            self._corner_input = torch.empty((self.batch, *self.corner), dtype=torch.float32)
        return self._corner_input

    def forward_corner(self) -> torch.Tensor:
        raise NotImplementedError


class _AxisByAxis(RLTransforms):
    """Pruned transforms from 1D FFTs; subclasses supply the 1D and N-D primitives."""

    def inverse_corner(self, spectrum: torch.Tensor) -> torch.Tensor:
        part = spectrum
        for axis in range(self.ndim - 1):  # the first axis prunes most: fewest lines later
            dim = axis - self.ndim
            part = self._ifft(part, dim).narrow(dim, 0, self.corner[axis])
        out = self._irfft(part, self.grid[-1])
        return out[..., : self.corner[-1]]

    def forward_corner(self) -> torch.Tensor:
        part = self._rfft(self.corner_input(), self.grid[-1])
        for axis in reversed(range(self.ndim - 1)):  # zero-extended lines, last axis first
            part = self._fft(part, axis - self.ndim, self.grid[axis])
        return part


class TorchTransforms(_AxisByAxis):
    name = "torch"

    def __init__(self, batch, grid, corner, device: torch.device) -> None:
        super().__init__(batch, grid, corner)
        self.device = device
        self._dims = tuple(range(-self.ndim, 0))

    def corner_input(self) -> torch.Tensor:
        if self._corner_input is None:
            shape = (self.batch, *self.corner)
            self._corner_input = torch.empty(shape, dtype=torch.float32, device=self.device)
        return self._corner_input

    def forward(self, x):
        return torch.fft.rfftn(x, dim=self._dims)

    def inverse(self, spectrum):
        return torch.fft.irfftn(spectrum, s=self.grid, dim=self._dims)

    def _ifft(self, a, dim):
        return torch.fft.ifft(a, dim=dim)

    def _fft(self, a, dim, n):
        return torch.fft.fft(a, n=n, dim=dim)

    def _rfft(self, a, n):
        return torch.fft.rfft(a, n=n, dim=-1)

    def _irfft(self, a, n):
        return torch.fft.irfft(a, n=n, dim=-1)


class ScipyTransforms(_AxisByAxis):
    """pocketfft on zero-copy numpy views of CPU tensors."""

    name = "scipy"

    def __init__(self, batch, grid, corner, workers: int = FFT_WORKERS) -> None:
        super().__init__(batch, grid, corner)
        self.workers = workers
        self._axes = tuple(range(-self.ndim, 0))

    def forward(self, x):
        return torch.from_numpy(scipy.fft.rfftn(x.numpy(), axes=self._axes, workers=self.workers))

    def inverse(self, spectrum):
        out = scipy.fft.irfftn(
            spectrum.numpy(), s=self.grid, axes=self._axes, workers=self.workers,
            overwrite_x=True,
        )  # fmt: skip
        return torch.from_numpy(out)

    def _ifft(self, a, dim):
        out = scipy.fft.ifft(a.numpy(), axis=dim, workers=self.workers, overwrite_x=True)
        return torch.from_numpy(out)

    def _fft(self, a, dim, n):
        return torch.from_numpy(scipy.fft.fft(a.numpy(), n=n, axis=dim, workers=self.workers))

    def _rfft(self, a, n):
        return torch.from_numpy(scipy.fft.rfft(a.numpy(), n=n, axis=-1, workers=self.workers))

    def _irfft(self, a, n):
        out = scipy.fft.irfft(a.numpy(), n=n, axis=-1, workers=self.workers, overwrite_x=True)
        return torch.from_numpy(out)


def fftw_available() -> bool:
    return importlib.util.find_spec("pyfftw") is not None


def make_transforms(
    engine: str,
    device: torch.device,
    batch: int,
    grid: Sequence[int],
    corner: Sequence[int],
    iterations: int | None = None,
) -> RLTransforms:
    """The transforms ``engine`` names, or for ``auto`` the fastest that pays off.

    ``iterations`` (how many will run) lets ``auto`` weigh FFTW's one-off planning.
    """
    if engine not in ENGINES:
        raise DeconvError(f"unknown FFT engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if device.type != "cpu" or engine == "torch":
        if engine in ("scipy", "fftw"):
            raise DeconvError(f"the {engine} FFT engine runs on CPU only, not on {device}")
        return TorchTransforms(batch, grid, corner, device)
    if engine == "fftw" and not fftw_available():
        raise DeconvError("the fftw FFT engine needs pyFFTW: pip install 'deconv[fftw]'")
    if engine == "scipy" or (engine == "auto" and not fftw_available()):
        return ScipyTransforms(batch, grid, corner)
    from deconv.fftw_transforms import FFTWTransforms, PlanningSkipped

    if engine == "fftw":
        return FFTWTransforms(batch, grid, corner)
    # auto: plan only if wisdom makes it free or the run is long enough to repay it
    measure = iterations is None or iterations >= FFTW_MIN_ITERATIONS
    try:
        return FFTWTransforms(batch, grid, corner, wisdom_only=not measure)
    except PlanningSkipped:
        return ScipyTransforms(batch, grid, corner)
