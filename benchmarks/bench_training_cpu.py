"""CPU training step: memory layout and arithmetic, as `deconv train` can run them.

    python benchmarks/bench_training_cpu.py [--model rln3d] [--patch 32,48,48] [--reps 8]
    python benchmarks/bench_training_cpu.py --model rln2d --patch 128,128 --set width=8

One optimisation step (the model's own loss, backward, Adam) on a batch of random patches,
timed in this one process with the variants interleaved: the default layout, channels-last
(what ``deconv.training.loop.training_memory_format`` picks for 3D on a CPU) and
``--precision bfloat16`` (bfloat16 autocast, on the layout ``deconv train`` uses). Medians
and ratios are printed and, with ``--json``, saved.
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

from deconv.cli.train import parse_overrides
from deconv.training.loop import step_autocast, training_memory_format
from deconv.zoo import create_model, get_model_card
from deconv.zoo.registry import get_model_spec


def step_function(model_name, overrides, patch, batch: int, layout, precision: torch.dtype):
    spec = get_model_spec(model_name)
    torch.manual_seed(0)
    model = create_model(model_name, **overrides).to(memory_format=layout)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective = spec.objective or (lambda m, x, y: torch.nn.functional.mse_loss(m(x), y))
    raw = torch.rand(batch, 1, *patch).to(memory_format=layout)
    gt = torch.rand(batch, 1, *patch).to(memory_format=layout)

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with step_autocast(torch.device("cpu"), precision):
            loss = objective(model, raw, gt)
        loss.backward()
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
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="model config field KEY=VALUE, as `deconv train --set`")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    patch = tuple(int(p) for p in args.patch.split(","))
    overrides = parse_overrides(args.overrides)
    ndim = get_model_card(args.model, overrides).ndim
    fast = torch.channels_last_3d if ndim == 3 else torch.channels_last
    chosen = training_memory_format(torch.device("cpu"), ndim)
    variants = {
        "default": (torch.contiguous_format, torch.float32),
        "channels-last": (fast, torch.float32),
        "bfloat16": (chosen, torch.bfloat16),
    }
    steps = {
        k: step_function(args.model, overrides, patch, args.batch_size, *v)
        for k, v in variants.items()
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for step in steps.values():
        step()  # warm-up: oneDNN picks its kernels on the first call
    for _ in range(args.reps):
        for name, step in steps.items():
            times[name].append(step())
    medians = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "model": args.model,
        "overrides": overrides,
        "batch": [args.batch_size, 1, *patch],
        "threads": torch.get_num_threads(),
        "median_seconds": medians,
        "speedup": medians["default"] / medians["channels-last"],
        "bfloat16_speedup": medians[
            "default" if chosen == torch.contiguous_format else "channels-last"
        ]
        / medians["bfloat16"],
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
    print(
        f"bfloat16 speed-up over deconv train's float32 layout: {result['bfloat16_speedup']:.2f}x"
    )


if __name__ == "__main__":
    main()
