"""Is peak memory bounded by the tile, not the volume?

    python benchmarks/bench_out_of_core.py --shape 1024,1024,1024 --tile 32,128,128

Writes a synthetic float32 OME-Zarr input of ``--shape`` (chunk by chunk, never whole in
memory), then runs ``deconv run INPUT -o OUTPUT.zarr --model MODEL --tile ...`` in a child
process and samples its resident memory (VmRSS from /proc) every 50 ms. The baseline is the
peak RSS of a child that only imports deconv and torch and loads the model. Reports both,
the ratio volume size / peak RSS, and throughput. Results: benchmarks/results/out_of_core.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss(command: list[str]) -> tuple[float, float, int]:
    """(peak RSS MB, seconds, return code) of a child process, sampled every 50 ms."""
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    peak = 0.0
    while proc.poll() is None:
        peak = max(peak, rss_mb(proc.pid))
        time.sleep(0.05)
    return peak, time.perf_counter() - start, proc.returncode


def write_input(path: Path, shape: tuple[int, ...], chunks: tuple[int, ...]) -> None:
    """Smooth random blobs on a background, one z-slab of chunks at a time."""
    from scipy.ndimage import gaussian_filter

    from deconv.io import create_ome_zarr

    array = create_ome_zarr(path, shape, np.float32, (0.2, 0.065, 0.065), None, chunks)
    rng = np.random.default_rng(0)
    for z in range(0, shape[0], chunks[0]):
        depth = min(chunks[0], shape[0] - z)
        slab = rng.poisson(0.02, size=(depth, *shape[1:])).astype(np.float32)
        slab = gaussian_filter(slab, 2.0) * 4000 + 100 + rng.normal(0, 3, slab.shape)
        array[z : z + depth] = slab.astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1024,1024,1024")
    parser.add_argument("--tile", default="32,128,128")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--model", default="rln3d.widefield-synthetic")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/out_of_core.json"))
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    tile = tuple(int(v) for v in args.tile.split(","))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="deconv-ooc-"))
    work.mkdir(parents=True, exist_ok=True)
    source, output = work / "input.zarr", work / "output.zarr"
    if not source.exists():
        print(f"writing {source} ({math.prod(shape) * 4 / 1e9:.2f} GB float32)", flush=True)
        write_input(source, shape, (32, 128, 128))
    shutil.rmtree(output, ignore_errors=True)
    baseline_cmd = [sys.executable, "-c",
                    "import deconv, torch; from deconv.exporters.sources import resolve_source; "
                    f"resolve_source({args.model!r})"]  # fmt: skip
    baseline, _, _ = peak_rss(baseline_cmd)
    run_cmd = [sys.executable, "-c", "from deconv.cli import main; main()", "run", str(source),
               "-o", str(output), "--model", args.model, "--tile", args.tile, "--backend",
               args.backend, "--quiet"]  # fmt: skip
    peak, seconds, code = peak_rss(run_cmd)
    if code != 0:
        raise SystemExit(f"deconv run failed with exit code {code}")
    volume_mb = math.prod(shape) * 4 / 2**20
    result = {
        "date": date.today().isoformat(),
        "shape": list(shape),
        "tile_core": list(tile),
        "model": args.model,
        "backend": args.backend,
        "input_float32_mb": round(volume_mb, 1),
        "baseline_peak_rss_mb": round(baseline, 1),
        "run_peak_rss_mb": round(peak, 1),
        "rss_above_baseline_mb": round(peak - baseline, 1),
        "volume_over_peak_rss": round(volume_mb / peak, 2),
        "seconds": round(seconds, 1),
        "mvoxel_per_s": round(math.prod(shape) / seconds / 1e6, 3),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
