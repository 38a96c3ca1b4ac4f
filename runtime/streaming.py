"""Volumes larger than memory: tiles streamed from Zarr / memory-mapped TIFF into OME-Zarr.

Peak memory is one window (core + halo) plus the network's activations, whatever the size
of the volume: the input is read window by window (Zarr chunks or memory-mapped pages on
demand), each core is written straight into the output array, whose chunks are the cores,
so every tile writes whole chunks exactly once (no read-modify-write, no races between
workers). Freed tile buffers go straight back to the system (:mod:`host_memory`), so the
peak stays at one tile's worth over thousands of tiles.

Runs are resumable. The output is built under a hidden name (``.NAME.partial``) beside the
final one, with a journal of finished tiles (``deconv-progress.txt``, one tile index per
line, flushed and fsync'ed after the tile's chunks are written) and a signature of what is
being computed (input, model weights, options). Restarting the same command after a crash
(even ``kill -9``) skips the journalled tiles; any other command starts afresh. Only a
complete output is renamed to the final name.

Normalisation is global: percentiles (and floor matching) of a strided subsample of at most
~4 Mvoxels (:func:`global_range`), the same for every tile.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from deconv.errors import DeconvError
from deconv.reporter import SILENT, Reporter
from deconv.runtime.tiling import TileGrid, predict_tiled

JOURNAL = "deconv-progress.txt"
SUBSAMPLE_VOXELS = 1 << 22  # 4 Mvoxels, 16 MB in float32, whatever the volume


def subsample(data) -> np.ndarray:
    """A strided view of at most ~4 Mvoxels of a (possibly lazy) volume, as float32."""
    total = math.prod(data.shape)
    stride = max(1, math.ceil((total / SUBSAMPLE_VOXELS) ** (1 / data.ndim)))
    sample = np.asarray(data[tuple(slice(None, None, stride) for _ in data.shape)],
                        dtype=np.float32)  # fmt: skip
    if not np.all(np.isfinite(sample)):
        raise DeconvError("the image contains NaN or Inf values")
    return sample


def global_range(data, normalization, reporter: Reporter = SILENT) -> tuple[float, float]:
    """The card's percentiles over a strided subsample of a (possibly lazy) volume, with
    floor matching (:func:`deconv.normalization.input_range`) on the same subsample."""
    from deconv.normalization import input_range, report_floor_matching

    lo, hi, gain = input_range(subsample(data), normalization)
    report_floor_matching([gain], reporter)
    return lo, hi


def partial_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.partial")


def run_signature(input_path: Path, shape, identity: str, options: dict) -> str:
    """What a resumed run must share with the interrupted one to reuse its tiles:
    the input file, the model (``identity``: weights digest, or PSF + RL settings), options."""
    stat = input_path.stat() if input_path.is_file() else None
    text = json.dumps(
        {
            "input": str(input_path.resolve()),
            "size": stat.st_size if stat else None,
            "mtime": stat.st_mtime_ns if stat else None,
            "shape": list(shape),
            "model": identity,
            "options": options,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


class Journal:
    """Append-only record of finished tiles inside the partial output."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / JOURNAL
        self.done: set[tuple[int, ...]] = set()
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    self.done.add(tuple(json.loads(line)))
                except ValueError:  # a torn last line from a crash: that tile reruns
                    continue
        self._handle = open(self.path, "a")  # noqa: SIM115 (kept open across tiles; close())

    def add(self, index: tuple[int, ...]) -> None:
        self._handle.write(json.dumps(list(index)) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.done.add(index)

    def close(self) -> None:
        self._handle.close()


def open_partial(partial: Path, grid: TileGrid, signature: str, voxel_size, extra: dict):
    """The partial output's array: reused when its signature matches (a resumed run), else
    discarded and created afresh with one chunk per tile core."""
    import zarr

    from deconv.io import _remove, create_ome_zarr

    if partial.exists():
        try:
            group = zarr.open_group(str(partial), mode="r+")
            if group.attrs.get("deconv_signature") == signature:
                return group["0"]
        except Exception:  # unreadable leftovers: start again
            pass
        _remove(partial)
    chunks = tuple(min(c, s) for c, s in zip(grid.core, grid.shape))
    array = create_ome_zarr(partial, grid.shape, np.float32, voxel_size, extra, chunks)
    zarr.open_group(str(partial), mode="r+").attrs["deconv_signature"] = signature
    return array


def deconvolve_to_zarr(
    data,
    input_path: Path,
    output: Path,
    card: Any,
    backend: Any,
    normalization: Any,
    identity: str,
    voxel_size,
    extra: dict,
    core=None,
    batch_size: int = 1,
    options: dict | None = None,
    reporter: Reporter = SILENT,
) -> dict:
    """Stream ``data`` (lazy, spatial axes only) through ``backend`` into OME-Zarr ``output``.

    ``normalization`` (a card's, or None for models on raw counts such as RL) is applied
    with one global range; ``identity`` names the model in the resume signature.
    """
    from deconv.io import _replace
    from deconv.runtime.host_memory import return_large_blocks_to_system

    return_large_blocks_to_system()
    grid = TileGrid(data.shape, card, core)
    if normalization is not None:
        lo, hi = global_range(data, normalization, reporter)
        scale = max(hi - lo, 1e-6)
    else:
        lo, scale = 0.0, 1.0
    signature = run_signature(input_path, data.shape, identity, options or {})
    partial = partial_path(output)
    array = open_partial(partial, grid, signature, voxel_size, extra)
    journal = Journal(partial)
    if journal.done:
        reporter.info(f"resuming: {len(journal.done)} of {len(grid)} tiles already done")

    def normalise(window: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(window)):
            raise DeconvError(f"{input_path}: the image contains NaN or Inf values")
        return (window - lo) / scale if normalization is not None else window

    def predict(batch: np.ndarray) -> np.ndarray:
        out = backend(batch)
        return out * scale + lo if normalization is not None else out

    try:
        with reporter.progress(len(grid) - len(journal.done), "tiles") as advance:

            def finished(tile) -> None:
                journal.add(tile.index)
                advance(1)

            predict_tiled(
                predict, data, card, core=grid.core, out=array, batch_size=batch_size,
                transform=normalise, skip=lambda tile: tile.index in journal.done,
                on_tile=finished,
            )  # fmt: skip
    finally:
        journal.close()
    (partial / JOURNAL).unlink()
    _replace(partial, output)
    return {"tiles": len(grid), "core": list(grid.core), "halo": list(grid.halo)}
