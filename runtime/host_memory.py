"""Keep a long tiled run's resident memory at one tile's worth, however many tiles it runs.

glibc's malloc serves large blocks with mmap and gives them back on free, but only up to a
threshold that it raises each time such a block is freed (up to 32 MiB). After the first
few tiles, every window, activation and output buffer (a few MiB each) is therefore carved
from the heap instead, and the heap keeps what it frees: resident memory creeps up tile
after tile (measured on a 256x512x512 volume with 68^3 tiles through ONNX Runtime: 540 MB
above the start after a few hundred tiles, against 143 MB for one tile). Fixing the
threshold at 1 MiB returns every tile-sized buffer to the system as soon as it is freed,
for about 10% more time spent zeroing fresh pages (BENCHMARKS.md).

Only streamed (out-of-core) runs ask for this: whole-image runs hold the volume in memory
anyway and keep malloc's faster default. Elsewhere than glibc (macOS, musl, Windows) this
does nothing; their allocators behave differently and were not measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3  # mallopt parameter number in glibc's malloc.h
LARGE_BLOCK = 1 << 20  # bytes: tile buffers are 1-100 MiB; Python's small objects stay below


@functools.cache
def return_large_blocks_to_system() -> bool:
    """Serve blocks of 1 MiB and more with mmap from now on; True where glibc accepted it."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK) == 1
