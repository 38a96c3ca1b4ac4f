"""``--backend auto|torch|onnx|tensorrt``: build the one asked for, or the fastest available.

Each backend is a callable on float32 batches (B, 1, *window) living in its own module,
imported only when chosen, so a missing optional package (onnxruntime, tensorrt) costs
nothing until it is asked for, and then fails with the extra to install.

``auto``: on a CUDA GPU, TensorRT (fp16) if installed, else ONNX Runtime's CUDA/TensorRT
providers if installed, else torch with fp16 autocast; on CPUs, ONNX Runtime fp32 when
installed (faster than eager torch on CPUs for these networks, BENCHMARKS.md; the graph is
exported once and cached), else torch fp32.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch

from deconv.errors import DeconvError

BACKENDS = ("auto", "torch", "onnx", "tensorrt")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _ort_cuda() -> bool:
    if not _has("onnxruntime"):
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def make_backend(
    source: Any,
    backend: str = "auto",
    device: torch.device | str = "cpu",
    precision: str | None = None,
    compile: bool = False,
    max_window: tuple[int, ...] | None = None,
    low_memory: bool = False,
    tta: bool = False,
) -> Any:
    """A callable backend for ``source`` (a :class:`ModelSource`); ``low_memory`` trades some
    speed for a lower peak where a backend offers the choice (streamed runs); ``tta`` averages
    it over the flips the model's PSF allows (:mod:`deconv.runtime.flip_averaging`)."""
    made = _make_backend(source, backend, device, precision, compile, max_window, low_memory)
    if tta:
        from deconv.runtime.flip_averaging import flip_averaged

        made = flip_averaged(made, source)
    return made


def _make_backend(source, backend, device, precision, compile, max_window, low_memory) -> Any:
    if backend not in BACKENDS:
        raise DeconvError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if backend == "auto":
        if cuda and _has("tensorrt"):
            backend = "tensorrt"
        elif (cuda and _ort_cuda()) or (not cuda and _has("onnxruntime")):
            backend = "onnx"
        else:
            backend = "torch"
    if precision is None:
        precision = "fp16" if cuda else "fp32"
    if backend == "torch":
        from deconv.runtime.backend_torch import TorchBackend

        return TorchBackend(source.model, device, precision, compile=compile)
    if backend == "onnx":
        from deconv.runtime.backend_onnx import OnnxBackend

        return OnnxBackend(source, str(device), precision, low_memory=low_memory)
    if not cuda:
        raise DeconvError("the tensorrt backend needs --device cuda (an NVIDIA GPU)")
    from deconv.runtime.backend_tensorrt import TensorRTBackend

    return TensorRTBackend(source, precision, max_window=max_window)
