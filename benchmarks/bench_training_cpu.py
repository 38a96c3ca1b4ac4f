"""CPU training step: the default memory layout against channels-last, as `deconv train` picks it.

    python benchmarks/bench_training_cpu.py [--model rln3d] [--patch 32,48,48] [--reps 8]

One optimisation step (the model's own loss, backward, Adam) on a batch of random patches,
timed in this one process with both layouts interleaved; medians and their ratio are
printed and, with ``--json``, saved. The layout ``deconv train`` uses on a CPU comes from
``deconv.training.loop.training_memory_format``; this script measures why.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from pathlib import Path

import deconv  # noqa: F401  (first: sets the OpenMP wait policy before torch loads)

# isort: split
import torch

from deconv.zoo import create_model, get_model_card
from deconv.zoo.registry import get_model_spec


def step_function(model_name: str, patch: tuple[int, ...], batch: int, layout):
    spec = get_model_spec(model_name)
    torch.manual_seed(0)
    model = create_model(model_name).to(memory_format=layout)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = spec.objective or (lambda m, x, y: torch.nn.functional.mse_loss(m(x), y))
    raw = torch.rand(batch, 1, *patch).to(memory_format=layout)
    gt = torch.rand(batch, 1, *patch).to(memory_format=layout)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        objective(model, raw, gt).backward()
        optimizer.step()
        return time.perf_counter() - start

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="rln3d")
    parser.add_argument("--patch", default="32,48,48")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    patch = tuple(int(p) for p in args.patch.split(","))
    ndim = get_model_card(args.model).ndim
    fast = torch.channels_last_3d if ndim == 3 else torch.channels_last
    layouts = {"default": torch.contiguous_format, "channels-last": fast}
    steps = {k: step_function(args.model, patch, args.batch_size, v) for k, v in layouts.items()}
    times: dict[str, list[float]] = {k: [] for k in layouts}
    for step in steps.values():
        step()  # warm-up: oneDNN picks its kernels on the first call
    for _ in range(args.reps):
        for name, step in steps.items():
            times[name].append(step())
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": args.model,
        "batch": [args.batch_size, 1, *patch],
        "threads": torch.get_num_threads(),
        "median_seconds": medians,
        "speedup": medians["default"] / medians["channels-last"],
        "date": date.today().isoformat(),
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    print(f"| {args.model}, batch {result['batch']}, {result['threads']} threads | median s/step |")
    print("| --- | --- |")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.3f} |")
    print(f"channels-last speed-up: {result['speedup']:.2f}x")


if __name__ == "__main__":
    main()
