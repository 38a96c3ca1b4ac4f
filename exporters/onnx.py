"""ONNX export: one self-contained file, opset 17, dynamic batch and spatial axes.

Why these choices (see specs/packaging.md): deepImageJ picks its ONNX Runtime by opset and
ships 17 by default, and cannot load an external ``.data`` file beside the model; tiling
clients feed every tile size the rdf allows, so spatial axes must be dynamic.

Why the TorchScript-based exporter (``dynamo=False``) first: torch's dynamo exporter writes opset
18 and its down-conversion to 17 fails on RLN's channel means (ONNX's version converter
asserts on ``ReduceMean`` with axes given as an input), while the TorchScript exporter
writes opset 17 directly and produced graphs that match PyTorch to ~1e-7 at untraced sizes.
Fixed-size graphs (the RL package graph, whose FFTs the TorchScript exporter cannot write)
go through the dynamo exporter, whose down-conversion to 17 works for them (no ReduceMean);
FFTs become ONNX ``DFT``.

Half precision (``fp16``): the float32 graph is converted by ONNX Runtime's float16 tool
with every ``Div`` kept in float32 (RLN divides by ``x + 1e-3``, close to float16's
resolution), as in mixed-precision training; tracing in half precision is not an option on
CPUs (no half ``avg_pool3d`` kernel). Inputs and outputs of an fp16 graph are float16; this
is also the graph TensorRT 11 (strongly typed) needs for half-precision engines.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deconv.errors import DeconvError
from deconv.io import write_atomically

DEFAULT_OPSET = 17
SPATIAL_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


def export_onnx(
    model: torch.nn.Module,
    example: np.ndarray,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    precision: str = "fp32",
    dynamic_spatial: bool = True,
) -> Path:
    """Write ``model`` as a single-file ONNX graph; ``example`` is (1, 1, *spatial).

    ``dynamic_spatial=False`` for fixed-size graphs (RL with baked-in transfer functions).
    """
    if precision not in ("fp32", "fp16"):
        raise DeconvError(f"ONNX precision must be fp32 or fp16, got {precision!r}")
    if not 13 <= opset <= 20:
        raise DeconvError(f"--opset must be between 13 and 20, got {opset}")
    model = model.eval().cpu().float()
    x = torch.from_numpy(example).float()
    names = SPATIAL_AXES[x.ndim - 2]
    axes = {0: "batch", **({2 + i: a for i, a in enumerate(names)} if dynamic_spatial else {})}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if not dynamic_spatial:  # fixed-size graphs: RL with FFTs, which only dynamo writes
                _export_dynamo(model, x, tmp, opset, dynamic_spatial)
            else:
                torch.onnx.export(
                    model, (x,), str(tmp), dynamo=False, opset_version=opset,
                    input_names=["input"], output_names=["output"],
                    dynamic_axes={"input": axes, "output": axes},
                )  # fmt: skip
        if precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            half = convert_float_to_float16(onnx.load(str(tmp)), op_block_list=["Div"])
            onnx.save(half, str(tmp))

    return write_atomically(path, write)


def _export_dynamo(model, x: torch.Tensor, path: Path, opset: int, dynamic_spatial: bool):
    """The dynamo exporter, for graphs the TorchScript exporter cannot write (FFTs -> DFT)."""
    import logging

    from torch.export import Dim

    shapes = {0: Dim("batch", min=1, max=1024)}
    if dynamic_spatial:
        names = SPATIAL_AXES[x.ndim - 2]
        shapes.update({2 + i: Dim(a, min=1, max=1 << 16) for i, a in enumerate(names)})
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    torch.onnx.export(
        model, (x.expand(2, *x.shape[1:]).contiguous(),), str(path), dynamo=True,
        opset_version=opset, external_data=False, input_names=["input"],
        output_names=["output"], dynamic_shapes=(shapes,), verbose=False,
    )  # fmt: skip


def onnx_facts(path: str | Path) -> dict[str, Any]:
    """What clients check before loading: opset, external data, tensors, custom ops."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    external = [
        t.name
        for t in proto.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL or len(t.external_data) > 0
    ]
    domains = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    return {
        "opset": domains.get("ai.onnx"),
        "custom_domains": sorted(d for d in domains if d not in ("ai.onnx", "ai.onnx.ml")),
        "external_data": external,
        "inputs": [i.name for i in proto.graph.input],
        "outputs": [o.name for o in proto.graph.output],
    }


def onnx_runner(
    path: str | Path, providers: list[str] | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX Runtime session as a numpy function (float32 in and out, casting for fp16)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise DeconvError(
            'onnxruntime is not installed: pip install "deconv[onnx]" (or "deconv[gpu]")'
        ) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(path), options, providers=providers or ["CPUExecutionProvider"]
    )
    info = session.get_inputs()[0]
    dtype = np.float16 if "float16" in info.type else np.float32

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {info.name: x.astype(dtype)})[0].astype(np.float32)

    return run
