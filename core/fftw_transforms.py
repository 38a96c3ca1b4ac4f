"""RL transforms on FFTW (pyFFTW), with measured plans and wisdom kept across runs.

FFTW's measured plans beat pocketfft by ~20% per transform on our 2-core machines, but
measuring costs seconds per grid (~3 s for all plans of an 80x256x256 grid). FFTW's
"wisdom" records what it measured; it is saved under the user's cache folder
(``$DECONV_CACHE_DIR``, else ``$XDG_CACHE_HOME/deconv``, else ``~/.cache/deconv``), one file
per host name, so each grid is measured once per machine. A cache that cannot be written
only means measuring again next time.

FFTW transforms are unnormalised (``scale = 1/N``) and run on fixed, aligned buffers: the
pruned transforms keep zero-filled margins that are written once and never touched again,
which is what lets them skip the zero lines.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import pyfftw
import torch

from deconv.fft import FFT_WORKERS
from deconv.rl_transforms import RLTransforms

log = logging.getLogger(__name__)

_loaded_wisdom_from: Path | None = None


class PlanningSkipped(Exception):
    """Wisdom-only planning found no wisdom for some transform of this grid."""


def wisdom_path() -> Path:
    root = os.environ.get("DECONV_CACHE_DIR")
    if root is None:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = str(Path(xdg) / "deconv") if xdg else str(Path.home() / ".cache" / "deconv")
    host = "".join(c if c.isalnum() or c in "-_." else "_" for c in platform.node()) or "host"
    return Path(root) / f"fftw-wisdom-{host}.json"


def load_wisdom() -> None:
    """Import the saved wisdom once per process (per cache file)."""
    global _loaded_wisdom_from
    path = wisdom_path()
    if _loaded_wisdom_from == path:
        return
    _loaded_wisdom_from = path
    try:
        entries = json.loads(path.read_text())["wisdom"]
        pyfftw.import_wisdom(tuple(base64.b64decode(e) for e in entries))
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no cache yet, or an unreadable one: measure again


def save_wisdom() -> None:
    path = wisdom_path()
    entries = [base64.b64encode(w).decode("ascii") for w in pyfftw.export_wisdom()]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"fftw_version": pyfftw.__version__, "wisdom": entries}))
        os.replace(tmp, path)
    except OSError as err:
        log.debug("FFTW wisdom not saved to %s: %s", path, err)
        with contextlib.suppress(OSError):
            tmp.unlink()


def _empty(shape, dtype) -> np.ndarray:
    # torch's CPU allocator aligns to 64 bytes, more than FFTW's SIMD needs; sharing the
    # allocator also lets the caller's tensors be FFTW inputs without a copy
    return torch.empty(tuple(shape), dtype=dtype).numpy()


class FFTWTransforms(RLTransforms):
    """Measured FFTW plans for one grid and batch size (CPU only).

    ``wisdom_only``: plan only what saved wisdom already covers, else raise
    :class:`PlanningSkipped` (how ``auto`` avoids paying for measuring on short runs).
    """

    name = "fftw"

    def __init__(
        self,
        batch,
        grid,
        corner,
        wisdom_only: bool = False,
        threads: int = FFT_WORKERS,
        effort: str = "FFTW_MEASURE",
    ):
        super().__init__(batch, grid, corner)
        load_wisdom()
        self._flags = (effort, "FFTW_WISDOM_ONLY") if wisdom_only else (effort,)
        self._threads = threads
        self.scale = 1.0 / float(np.prod(self.grid))
        half = (*self.grid[:-1], self.grid[-1] // 2 + 1)
        b, nd = batch, self.ndim
        spatial = tuple(range(1, nd + 1))
        start = time.perf_counter()
        real = _empty((b, *self.grid), torch.float32)  # planned on; runs bring their own arrays
        self._s = _empty((b, *half), torch.complex64)
        self._spectrum = torch.from_numpy(self._s)
        self._forward = self._plan(real, self._s, spatial, "FFTW_FORWARD")
        self._inverse = self._plan(self._s, real, spatial, "FFTW_BACKWARD", destroy=True)
        self._pruned = self.corner != self.grid
        if self._pruned:
            self._plan_corner_transforms(half)
        if not wisdom_only:
            seconds = time.perf_counter() - start
            if seconds > 0.5:
                log.info("measured FFTW plans for %s in %.1f s", "x".join(map(str, grid)), seconds)
            save_wisdom()

    def _plan(self, a, b, axes, direction, destroy: bool = False) -> pyfftw.FFTW:
        flags = self._flags + (("FFTW_DESTROY_INPUT",) if destroy else ())
        try:
            return pyfftw.FFTW(
                a, b, axes=axes, direction=direction, flags=flags, threads=self._threads
            )
        except RuntimeError as err:  # raised only for FFTW_WISDOM_ONLY without wisdom
            raise PlanningSkipped(str(err)) from err

    def _plan_corner_transforms(self, half) -> None:
        """1D plans along each axis between cropped (or zero-margined) buffers."""
        b, nd, c = self.batch, self.ndim, self.corner
        s = self._s
        # inverse: in place along the leading axes, each on the rows the previous one kept
        self._inverse_steps = []
        for axis in range(nd - 1):
            view = s[(slice(None), *[slice(0, n) for n in c[:axis]])]
            self._inverse_steps.append(self._plan(view, view, (axis + 1,), "FFTW_BACKWARD"))
        self._blurred = _empty((b, *c[:-1], self.grid[-1]), torch.float32)
        rows = s[(slice(None), *[slice(0, n) for n in c[:-1]])]
        self._inverse_steps.append(
            self._plan(rows, self._blurred, (nd,), "FFTW_BACKWARD", destroy=True)
        )
        # forward: real rows zero-extended along the last axis, then each leading axis from
        # a buffer whose margin beyond the corner stays zero into the next one's corner
        self._ratio = _empty((b, *c[:-1], self.grid[-1]), torch.float32)
        margins = [_empty((b, *c[:axis], *half[axis:]), torch.complex64) for axis in range(nd - 1)]
        self._forward_steps = []
        for axis in reversed(range(nd)):  # margins[axis - 1] receives the transform along axis
            source = self._ratio if axis == nd - 1 else margins[axis]
            if axis == 0:
                target = s
            else:
                target = margins[axis - 1][(slice(None), *[slice(0, n) for n in c[:axis]])]
            self._forward_steps.append(self._plan(source, target, (axis + 1,), "FFTW_FORWARD"))
        for buffer in (self._ratio, *margins):  # measuring scribbled on them
            buffer.fill(0)
        self._margins = margins
        self._corner_input = torch.from_numpy(self._ratio)[..., : c[-1]]

    def _aligned(self, plan: pyfftw.FFTW, a: np.ndarray) -> bool:
        return a.flags.c_contiguous and a.ctypes.data % plan.input_alignment == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = x.detach().numpy()
        if not self._aligned(self._forward, a):  # e.g. a view: copy into aligned memory
            aligned = _empty(a.shape, torch.float32)
            np.copyto(aligned, a)
            a = aligned
        self._forward.update_arrays(a, self._s)
        self._forward.execute()
        return self._spectrum

    def _own_spectrum(self, spectrum: torch.Tensor) -> None:
        if spectrum.data_ptr() != self._spectrum.data_ptr():
            self._spectrum.copy_(spectrum)

    def inverse(self, spectrum: torch.Tensor) -> torch.Tensor:
        self._own_spectrum(spectrum)
        out = torch.empty((self.batch, *self.grid), dtype=torch.float32)
        self._inverse.update_arrays(self._s, out.numpy())
        self._inverse.execute()
        return out

    def inverse_corner(self, spectrum: torch.Tensor) -> torch.Tensor:
        if not self._pruned:
            return self.inverse(spectrum)
        self._own_spectrum(spectrum)
        for step in self._inverse_steps:
            step.execute()
        return torch.from_numpy(self._blurred)[..., : self.corner[-1]]

    def corner_input(self) -> torch.Tensor:
        if not self._pruned:
            return super().corner_input()
        return self._corner_input

    def forward_corner(self) -> torch.Tensor:
        if not self._pruned:
            return self.forward(self.corner_input())
        for step in self._forward_steps:
            step.execute()
        return self._spectrum
