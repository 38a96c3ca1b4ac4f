"""CPU runtime targets: tiling overhead and ONNX Runtime against eager torch.

    python benchmarks/bench_runtime_cpu.py

1. Tiling overhead: RLN 3D (shipped weights, torch fp32) on a volume that fits, whole vs
   tiled with the default 96x256x256 cores (exact tiling: windows add the 18-voxel halo).
   Target: tiled at most 15% slower.
2. ONNX Runtime CPU vs eager torch CPU, fp32, whole volume, for each network: RLN 3D,
   RCAN 3D (C=32, B=3, G=5), m-rBCR 2D (levels=1). Target: ONNX Runtime at least as fast.
Medians of --repeats runs after a warm-up; results in benchmarks/results/runtime_cpu.json.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import deconv  # noqa: F401  (first: OpenMP wait policy)

# isort: split
import numpy as np
import torch

from deconv.exporters.sources import from_registry, resolve_source
from deconv.runtime.backends import make_backend
from deconv.runtime.benchmark import describe_device, median_time
from deconv.runtime.tiling import TileGrid, predict_tiled


def throughput(backend, image, card, core, repeats) -> float:
    seconds = median_time(lambda: predict_tiled(backend, image, card, core=core), repeats)
    return image.size / seconds / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tiling-shape", default="96,512,512")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/runtime_cpu.json"))
    args = parser.parse_args()
    cpu = torch.device("cpu")
    results: dict = {"date": date.today().isoformat(), "device": describe_device(cpu)}

    rln = resolve_source("rln3d.widefield-synthetic")
    shape = tuple(int(v) for v in args.tiling_shape.split(","))
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    torch_backend = make_backend(rln, "torch", cpu, "fp32")
    whole = TileGrid(shape, rln.card).extended
    grid = TileGrid(shape, rln.card)
    untiled = throughput(torch_backend, image, rln.card, whole, args.repeats)
    tiled = throughput(torch_backend, image, rln.card, grid.core, args.repeats)
    results["tiling"] = {
        "model": "rln3d.widefield-synthetic", "backend": "torch fp32", "shape": list(shape),
        "core": list(grid.core), "tiles": len(grid), "untiled_mvoxel_per_s": untiled,
        "tiled_mvoxel_per_s": tiled, "tiled_slower_by": untiled / tiled - 1,
    }  # fmt: skip
    print(json.dumps(results["tiling"], indent=2), flush=True)

    cases = [("rln3d.widefield-synthetic", rln, (64, 256, 256)),
             ("rcan3d", from_registry("rcan3d"), (32, 128, 128)),
             ("mrbcr2d", from_registry("mrbcr2d"), (1024, 1024))]  # fmt: skip
    results["onnx_vs_torch"] = []
    for name, source, size in cases:
        image = np.random.default_rng(1).random(size, dtype=np.float32)
        core = TileGrid(size, source.card).extended
        row = {"model": name, "shape": list(size)}
        for backend in ("torch", "onnx"):
            b = make_backend(source, backend, cpu, "fp32")
            row[f"{backend}_mvoxel_per_s"] = throughput(b, image, source.card, core, args.repeats)
        row["onnx_over_torch"] = row["onnx_mvoxel_per_s"] / row["torch_mvoxel_per_s"]
        results["onnx_vs_torch"].append(row)
        print(json.dumps(row), flush=True)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
