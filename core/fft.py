"""FFT building blocks: 7-smooth sizes, kernel placement, transfer functions, phase ramps,
and the thread settings that keep CPU FFTs fast.

The transforms of an RL iteration themselves (torch, scipy's pocketfft, FFTW) live in
:mod:`deconv.rl_transforms`. On CPU, torch's MKL-backed real FFT measured ~12% slower than
scipy's pocketfft with ``workers=2`` on our 2-core machines (80x256x256 float32, two forward
and two inverse: 52.5 ms vs 46.3 ms), so the helpers here use scipy.fft.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import scipy.fft
import torch

SMOOTH_PRIMES = (2, 3, 5, 7)
# scipy's FFT threads. Set once at import from torch's thread count (the user's choice, e.g.
# through OMP_NUM_THREADS), so FFTs and element-wise passes use the same cores.
FFT_WORKERS = max(1, torch.get_num_threads())


@contextmanager
def fft_friendly_threads(device: torch.device, engine: str = "scipy") -> Iterator[None]:
    """Element-wise torch passes on one thread while scipy FFTs run, if OpenMP may spin.

    With torch imported before deconv and no OMP_WAIT_POLICY, torch's idle OpenMP workers
    busy-wait between passes and slow scipy's FFT threads down (~1.6x per RL iteration on
    2 cores); one torch thread then costs less than the contention (~1.1x). FFTW's threads
    are OpenMP threads too and follow torch's thread count, so they are left alone.
    """
    import deconv

    if device.type != "cpu" or engine != "scipy" or not deconv.OPENMP_MAY_SPIN:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tune_allocator() -> None:
    """Keep large freed blocks in the heap instead of returning them to the OS (glibc only).

    An RL iteration allocates four 20-40 MB spectra; by default glibc maps each freshly from
    the OS and every page faults on first touch, which cost ~15% of an iteration here.
    Raising the mmap and trim thresholds to 256 MB lets them be reused. Idempotent.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or sys.platform != "linux" or os.environ.get("DECONV_NO_MALLOC_TUNING"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except OSError:  # not glibc
        pass
    _ALLOCATOR_TUNED = True


_ALLOCATOR_TUNED = False


def next_smooth_size(n: int, primes: Sequence[int] = SMOOTH_PRIMES) -> int:
    """Smallest size >= n whose prime factors are all in ``primes`` (7-smooth by default).

    Padding to powers of two can make a volume up to 8x larger; 7-smooth sizes are always
    within a few percent of n and every FFT library is fast on them.
    """
    if n < 1:
        raise ValueError(f"size must be positive, got {n}")
    candidate = n
    while True:
        rest = candidate
        for p in primes:
            while rest % p == 0:
                rest //= p
        if rest == 1:
            return candidate
        candidate += 1


def shift_phase(shape: Sequence[int], shift: Sequence[int]) -> np.ndarray:
    """Half-spectrum phase ramp that moves a signal by ``-shift`` (index ``shift`` to 0)."""
    phase = np.zeros((), dtype=np.float64)
    for axis, (n, s) in enumerate(zip(shape, shift, strict=True)):
        k = np.arange(n // 2 + 1) if axis == len(shape) - 1 else np.fft.fftfreq(n) * n
        view = [1] * len(shape)
        view[axis] = len(k)
        phase = phase + (2 * np.pi * s / n) * k.reshape(view)
    return np.exp(1j * phase)


def kernel_to_origin(kernel: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Zero-pad a centred odd kernel to ``shape`` with its centre moved to index 0.

    This is the layout whose FFT is the transfer function of "same"-mode convolution: the
    kernel's centre voxel multiplies the output voxel at the same position.
    """
    if any(k > s for k, s in zip(kernel.shape, shape, strict=True)):
        raise ValueError(f"kernel {kernel.shape} does not fit in {tuple(shape)}")
    padded = np.zeros(tuple(shape), dtype=np.float64)
    padded[tuple(slice(0, k) for k in kernel.shape)] = kernel
    return np.roll(padded, [-(k // 2) for k in kernel.shape], axis=tuple(range(kernel.ndim)))


def transfer_function(kernel: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Half-spectrum (rfft) transfer function of a centred kernel for circular convolution."""
    return scipy.fft.rfftn(kernel_to_origin(kernel, shape), workers=FFT_WORKERS)


def fft_convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """'Same'-size linear convolution with zero boundary, via 7-smooth padded real FFTs."""
    shape = tuple(
        next_smooth_size(s + k - 1) for s, k in zip(image.shape, kernel.shape, strict=True)
    )
    padded = np.zeros(shape, dtype=np.float64)
    padded[tuple(slice(0, s) for s in image.shape)] = image
    out = scipy.fft.irfftn(
        scipy.fft.rfftn(padded, workers=FFT_WORKERS) * transfer_function(kernel, shape),
        s=shape,
        workers=FFT_WORKERS,
    )
    return out[tuple(slice(0, s) for s in image.shape)]
