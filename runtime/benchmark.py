"""``deconv bench``: voxels per second per backend and precision, ms per RL iteration.

Timings are medians over ``repeats`` runs after one warm-up (plans, caches, engine builds
and page faults are not what a user waits for on the second tile). For RL the reference is
the four-FFT floor: two forward and two inverse real FFTs at the padded size, the least
work any FFT-based RL iteration can do.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from deconv.errors import DeconvError


def median_time(fn: Callable[[], Any], repeats: int, sync: bool = False) -> float:
    """Median seconds of ``fn`` over ``repeats`` calls after one warm-up call."""

    def timed() -> float:
        start = time.perf_counter()
        fn()
        if sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start

    timed()
    return statistics.median(timed() for _ in range(max(1, repeats)))


def four_fft_seconds(
    shape: Sequence[int], device: torch.device, repeats: int = 5, engine: str = "scipy"
) -> float:
    """The FFT floor of one RL iteration at ``shape``: four full real FFTs on ``engine``."""
    from deconv.rl_transforms import make_transforms

    x = torch.rand((1, *shape), device=device)
    t = make_transforms(engine, device, 1, shape, shape)

    def run() -> None:
        a = t.inverse(t.forward(x))
        t.inverse(t.forward(a))

    return median_time(run, repeats, sync=device.type == "cuda")


def bench_rl(
    psf: np.ndarray,
    shape: Sequence[int],
    iterations: int,
    device: torch.device,
    back_projector: str = "traditional",
    repeats: int = 3,
) -> dict[str, Any]:
    from deconv.richardson_lucy import RichardsonLucy, RLConfig
    from deconv.synth import simulate_pair

    shape = tuple(int(s) for s in shape)
    if len(shape) != psf.ndim:
        raise DeconvError(f"--shape needs {psf.ndim} sizes for a {psf.ndim}D PSF, got {shape}")
    raw = simulate_pair(shape, psf, seed=0)[0]
    model = RichardsonLucy(psf, RLConfig(back_projector=back_projector, background=30), device)
    data = torch.as_tensor(raw, device=device)
    seconds = median_time(lambda: model(data, iterations=iterations), repeats,
                          sync=device.type == "cuda")  # fmt: skip
    plan = model.plan(shape)
    padded = plan.padded
    engine = next(iter(plan.transforms))[0]  # the FFT engine the run used (auto chooses)
    floor = four_fft_seconds(padded, device, repeats=max(3, repeats), engine=engine)
    per_iteration = seconds / iterations
    return {
        "model": "rl", "back_projector": back_projector, "device": describe_device(device),
        "fft_engine": engine,
        "shape": list(shape), "padded": list(padded), "iterations": iterations,
        "ms_per_iteration": 1e3 * per_iteration, "four_fft_floor_ms": 1e3 * floor,
        "ratio_to_floor": per_iteration / floor,
        "mvoxel_per_s": np.prod(shape) * iterations / seconds / 1e6 / iterations,
    }  # fmt: skip


def bench_network(
    source: Any,
    shape: Sequence[int],
    device: torch.device,
    backends: Sequence[tuple[str, str]],
    repeats: int = 3,
    tile: Sequence[int] | None = None,
    batch_size: int = 1,
) -> list[dict[str, Any]]:
    """One row per (backend, precision): throughput on a whole volume (or tiled)."""
    from deconv.runtime.backends import make_backend
    from deconv.runtime.tiling import TileGrid, predict_tiled

    shape = tuple(int(s) for s in shape)
    if len(shape) != source.card.ndim:
        raise DeconvError(f"--shape needs {source.card.ndim} sizes for this model, got {shape}")
    image = np.random.default_rng(0).random(shape, dtype=np.float32)
    core = tuple(tile) if tile else TileGrid(shape, source.card).extended
    rows = []
    for backend_name, precision in backends:
        row: dict[str, Any] = {"backend": backend_name, "precision": precision,
                               "device": describe_device(device), "shape": list(shape),
                               "tile": list(core)}  # fmt: skip
        try:
            backend = make_backend(source, backend_name, device, precision)
            row["backend"] = backend.describe()
            seconds = median_time(
                lambda b=backend: predict_tiled(b, image, source.card, core=core,
                                                batch_size=batch_size),
                repeats, sync=device.type == "cuda",
            )  # fmt: skip
            row.update(seconds=seconds, mvoxel_per_s=np.prod(shape) / seconds / 1e6)
        except DeconvError as error:
            row["unavailable"] = str(error)
        rows.append(row)
    return rows


def default_backends(device: torch.device, which: str) -> list[tuple[str, str]]:
    """``--backend all``: every backend and precision worth measuring on this device."""
    if which != "all":
        return [(which, "fp16" if device.type == "cuda" and which != "torch" else "fp32")]
    if device.type == "cuda":
        return [("torch", "fp32"), ("torch", "fp16"), ("torch", "bf16"), ("onnx", "fp32"),
                ("onnx", "fp16"), ("tensorrt", "fp32"), ("tensorrt", "fp16")]  # fmt: skip
    # bf16 on CPUs without native bf16 units is emulated and ~50x slower: ask for it explicitly
    return [("torch", "fp32"), ("onnx", "fp32")]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os
    import platform

    return f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"
