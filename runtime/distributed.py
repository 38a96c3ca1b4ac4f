"""Scale-out on Dask: the streaming run's tiles as tasks on a dask.distributed cluster.

``--dask local:N`` starts a LocalCluster of N single-threaded worker processes on this
machine; ``--dask tcp://host:8786`` joins an existing scheduler (dask-jobqueue on SLURM,
Kubernetes, ...). The driver plans the tiles (the same :class:`TileGrid` as a single-process
run), computes the global percentiles once, creates the chunk-aligned output Zarr and
submits one task per tile; each task reads its window from the input store, runs the model
and writes its core, which is exactly one output chunk, so tasks never write the same chunk.
Workers cache the model per (model, backend, precision), so each loads it once. The driver
journals finished tiles as results come back, so an interrupted distributed run resumes like
a local one; the result is the single-process result because every tile is the same
computation. Input and output paths must be visible to every worker (shared file system
or object store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from deconv.errors import DeconvError
from deconv.reporter import SILENT, Reporter

CONNECT_TIMEOUT_S = 10
_MODELS: dict[tuple[str, str, str, str], Any] = {}  # per worker process


def connect(address: str, reporter: Reporter = SILENT):
    """A dask.distributed Client for ``local:N`` or a scheduler address, or a clear error."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise DeconvError('Dask is not installed: pip install "deconv[dask]"') from None
    if address.startswith("local:"):
        try:
            workers = int(address.split(":", 1)[1])
        except ValueError:
            raise DeconvError(
                f"--dask local:N needs a number of workers, got {address!r}"
            ) from None
        if workers < 1:
            raise DeconvError("--dask local:N needs at least one worker")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=50)  # fmt: skip
        reporter.info(f"dask: local cluster of {workers} worker processes")
        return Client(cluster)
    try:
        client = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as error:
        raise DeconvError(
            f"cannot reach the Dask scheduler at {address} within {CONNECT_TIMEOUT_S} s "
            f"({type(error).__name__})"
        ) from None
    reporter.info(f"dask: scheduler {address}, {len(client.scheduler_info()['workers'])} workers")
    return client


def _worker_backend(model: str, backend: str, precision: str | None, tta: bool = False) -> Any:
    import torch

    key = (model, backend, str(precision), "cpu", tta)
    if key not in _MODELS:
        from deconv.exporters.sources import resolve_source
        from deconv.runtime.backends import make_backend
        from deconv.runtime.host_memory import return_large_blocks_to_system

        return_large_blocks_to_system()  # workers run tile after tile, like a streamed run
        torch.set_num_threads(1)  # one task per worker thread: no oversubscription
        source = resolve_source(model)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        _MODELS[key] = (source, make_backend(source, backend, device, precision, low_memory=True,
                                             tta=tta))  # fmt: skip
    return _MODELS[key]


def run_tile(task: dict[str, Any]) -> tuple[int, ...]:
    """Worker side: one tile, read -> normalise -> predict -> write its core."""
    import zarr

    from deconv.io import read_image
    from deconv.runtime.tiling import Tile, predict_tiled

    source, backend = _worker_backend(task["model"], task["backend"], task["precision"],
                                      task.get("tta", False))  # fmt: skip
    data = read_image(Path(task["input"]), key=task["key"], lazy=True).data
    out = zarr.open_group(task["output"], mode="r+")["0"]
    lo, scale = task["lo"], task["scale"]
    tile = Tile(**task["tile"])

    def predict(batch: np.ndarray) -> np.ndarray:
        return backend((batch - lo) / scale) * scale + lo

    predict_tiled(predict, data, source.card, core=task["core"], out=out,
                  skip=lambda t: t.index != tile.index)  # fmt: skip
    return tile.index


def deconvolve_on_dask(
    client: Any,
    input_path: Path,
    key: str | None,
    data,
    output: Path,
    source: Any,
    model: str,
    options: Any,
    voxel_size,
    extra: dict,
    reporter: Reporter = SILENT,
) -> dict:
    """Driver side: plan, submit one task per unfinished tile, journal, rename when done."""
    from dask.distributed import as_completed

    from deconv.io import _replace
    from deconv.runtime.streaming import (
        JOURNAL,
        Journal,
        global_range,
        open_partial,
        partial_path,
        run_signature,
    )
    from deconv.runtime.tiling import TileGrid

    grid = TileGrid(data.shape, source.card, options.tile)
    lo, hi = global_range(data, source.normalization, reporter)
    scale = max(hi - lo, 1e-6)
    signature_options = options.model_dump(mode="json", exclude={"rl", "device", "backend"})
    from deconv.runtime.backend_onnx import weights_digest

    signature = run_signature(input_path, data.shape, weights_digest(source.model),
                              signature_options)  # fmt: skip
    partial = partial_path(output)
    open_partial(partial, grid, signature, voxel_size, extra)
    journal = Journal(partial)
    base = {"model": model, "backend": options.backend,
            "precision": options.precision, "tta": options.tta,
            "input": str(input_path.resolve()), "key": key,
            "output": str(partial.resolve()), "lo": float(lo), "scale": float(scale),
            "core": list(grid.core)}  # fmt: skip
    tasks = [{**base, "tile": tile.__dict__} for tile in grid.tiles()
             if tile.index not in journal.done]  # fmt: skip
    if journal.done:
        reporter.info(f"resuming: {len(journal.done)} of {len(grid)} tiles already done")
    try:
        futures = client.map(run_tile, tasks, pure=False)
        with reporter.progress(len(tasks), "tiles (dask)") as advance:
            for future in as_completed(futures):
                journal.add(tuple(future.result()))
                advance(1)
    finally:
        journal.close()
    (partial / JOURNAL).unlink()
    _replace(partial, output)
    return {"tiles": len(grid), "core": list(grid.core), "halo": list(grid.halo),
            "workers": len(client.scheduler_info()["workers"])}  # fmt: skip
