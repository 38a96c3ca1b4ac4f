"""Is peak memory bounded by the tile, not the volume?

    python benchmarks/bench_out_of_core.py --shape 1024,1024,1024 --tile 32,128,128

Writes a synthetic float32 OME-Zarr input of ``--shape`` (chunk by chunk, never whole in
memory), then runs ``deconv run INPUT -o OUTPUT.zarr --model MODEL --tile ...`` in a child
process. Its peak resident memory is the kernel's own figure (``ru_maxrss`` from wait4,
exact, not sampled); VmRSS is also read every second for a curve of memory over time, so a
peak can be placed (normalisation subsample, first tiles, creep over thousands of tiles).
The baseline is the peak RSS of a child that only imports deconv and torch and loads the
model. Reports both, the ratio volume size / peak RSS, and throughput. Results:
benchmarks/results/out_of_core.json and out_of_core.png (memory over time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
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


def peak_rss(command: list[str], every: float = 1.0):
    """(peak RSS MB, seconds, return code, [(seconds, RSS MB)]) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command)
    series = []
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        series.append((round(time.perf_counter() - start, 1), round(rss_mb(proc.pid), 1)))
        time.sleep(every)
    code = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, code, series


def plot_memory(series, baseline: float, peak: float, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot([t / 60 for t, _ in series], [m for _, m in series], lw=0.8, label="VmRSS (1 s)")
    ax.axhline(peak, color="tab:red", ls="--", lw=1, label=f"peak {peak:.0f} MB (ru_maxrss)")
    ax.axhline(baseline, color="gray", ls=":", lw=1, label=f"baseline {baseline:.0f} MB")
    ax.set_xlabel("minutes")
    ax.set_ylabel("resident memory (MB)")
    ax.set_ylim(0, max(peak * 1.15, 1))
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    for stale in (output, output.with_name(f".{output.name}.partial")):  # no resumed run
        shutil.rmtree(stale, ignore_errors=True)
    baseline_cmd = [sys.executable, "-c",
                    "import deconv, torch; from deconv.exporters.sources import resolve_source; "
                    f"resolve_source({args.model!r})"]  # fmt: skip
    baseline = peak_rss(baseline_cmd, every=0.05)[0]
    run_cmd = [sys.executable, "-c", "from deconv.cli import main; main()", "run", str(source),
               "-o", str(output), "--model", args.model, "--tile", args.tile, "--backend",
               args.backend, "--quiet"]  # fmt: skip
    peak, seconds, code, series = peak_rss(run_cmd)
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
        "rss_every_10s": series[::10],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    title = (
        f"deconv run, {'x'.join(map(str, shape))} float32 ({volume_mb / 1024:.1f} GiB), "
        f"tiles {args.tile}, backend {args.backend}: {volume_mb / peak:.1f}x peak RSS"
    )
    plot_memory(series, baseline, peak, title, args.json.with_suffix(".png"))
    print(json.dumps({k: v for k, v in result.items() if k != "rss_every_10s"}, indent=2))
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
