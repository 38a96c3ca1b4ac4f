"""TensorRT engines from our ONNX graphs, with a sidecar that ties each engine to its GPU.

An engine is compiled for one GPU model and one TensorRT version and is useless (or wrong)
elsewhere, so it never goes into a bioimage.io package: it is written beside it with a JSON
sidecar (TensorRT version, GPU name and compute capability, precision, profile shapes,
sha256 of the source package and of the ONNX), and :func:`load_engine` refuses an engine
whose sidecar does not match the GPU and TensorRT in use.

TensorRT 10 takes reduced precision as builder flags (FP16/BF16) on a float32 graph;
TensorRT 11 removed those flags and is always strongly typed, so the precision must be in
the ONNX itself (our float16 graph keeps divisions in float32). Which path runs is decided
by feature detection (does ``BuilderFlag`` have ``FP16``?), not by version strings.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from deconv.errors import DeconvError
from deconv.zoo.card import ModelCard

EXTRA_HINT = 'install it with: pip install "deconv[tensorrt]" (or "deconv[gpu]")'
PRECISIONS = ("fp32", "fp16", "bf16")


class EngineSidecar(BaseModel):
    """What an engine was built for; stored as ``<engine>.json``."""

    model_config = ConfigDict(extra="forbid")

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    precision: str
    strongly_typed: bool
    input_name: str = "input"
    output_name: str = "output"
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    source_sha256: str | None
    onnx_sha256: str
    created: str


def require_tensorrt() -> Any:
    """The tensorrt module and a CUDA device, or a one-line error naming the extra."""
    try:
        import tensorrt
    except ImportError:
        raise DeconvError(f"TensorRT is not installed: {EXTRA_HINT}") from None
    import torch

    if not torch.cuda.is_available():
        raise DeconvError("TensorRT needs an NVIDIA GPU with CUDA; none is visible here")
    return tensorrt


def gpu_identity() -> tuple[str, tuple[int, int]]:
    import torch

    return torch.cuda.get_device_name(), tuple(torch.cuda.get_device_capability())


def profile_shapes(
    card: ModelCard,
    min_shape: Sequence[int] | None = None,
    opt_shape: Sequence[int] | None = None,
    max_shape: Sequence[int] | None = None,
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) full shapes (N, 1, *spatial), defaults from the model's constraints.

    Shapes may be given as spatial sizes only (batch 1 for min/opt, 4 for max) or in full.
    Every spatial size must be one the model accepts (min + k * step).
    """
    from deconv.exporters.verification import valid_size

    n = card.ndim or 3
    defaults = {
        "min": card.min_size,
        "opt": valid_size(card, (32, 128, 128)[-n:]),
        "max": valid_size(card, (128, 512, 512)[-n:]),
    }
    shapes = {}
    for key, given, batch in (("min", min_shape, 1), ("opt", opt_shape, 1), ("max", max_shape, 4)):
        shape = tuple(int(v) for v in (given or defaults[key]))
        if len(shape) == n:
            shape = (batch, 1, *shape)
        if len(shape) != n + 2 or shape[1] != 1:
            raise DeconvError(
                f"--{key}-shape must be {n} spatial sizes or N,1,{','.join('ZYX'[-n:])}; "
                f"got {shape}"
            )
        for size, lo, step in zip(shape[2:], card.min_size, card.step, strict=True):
            if size < lo or (size - lo) % step:
                raise DeconvError(
                    f"--{key}-shape {shape}: spatial sizes must be {lo} + k * {step} for this model"
                )
        shapes[key] = shape
    lo, opt, hi = shapes["min"], shapes["opt"], shapes["max"]
    if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
        raise DeconvError(f"profile shapes must satisfy min <= opt <= max: {lo}, {opt}, {hi}")
    return lo, opt, hi


def build_engine(
    onnx_fp32: Callable[[Path], Path],
    onnx_fp16: Callable[[Path], Path],
    path: str | Path,
    precision: str,
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]],
    source_sha256: str | None = None,
    workspace_gib: float = 4.0,
) -> Path:
    """Compile an engine to ``path`` (and its sidecar); ONNX writers are called as needed."""
    import hashlib

    from deconv.io import write_atomically

    if precision not in PRECISIONS:
        raise DeconvError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    trt = require_tensorrt()
    strongly_typed = not hasattr(trt.BuilderFlag, "FP16")
    if strongly_typed and precision == "bf16":
        raise DeconvError(
            f"TensorRT {trt.__version__} is strongly typed and deconv writes no bfloat16 ONNX; "
            "use --precision fp16 or fp32"
        )
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with tempfile.TemporaryDirectory() as tmp:
        writer = onnx_fp16 if strongly_typed and precision == "fp16" else onnx_fp32
        onnx_path = writer(Path(tmp) / "model.onnx")
        onnx_bytes = onnx_path.read_bytes()
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise DeconvError(f"TensorRT could not parse the ONNX graph: {errors[:400]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not strongly_typed and precision != "fp32":
        config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, *shapes)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DeconvError("TensorRT failed to build the engine (see its log above)")
    gpu, capability = gpu_identity()
    sidecar = EngineSidecar(
        tensorrt_version=trt.__version__,
        gpu_name=gpu,
        compute_capability=capability,
        precision=precision,
        strongly_typed=strongly_typed,
        input_name=name,
        output_name=network.get_output(0).name,
        min_shape=shapes[0],
        opt_shape=shapes[1],
        max_shape=shapes[2],
        source_sha256=source_sha256,
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    path = Path(path)
    write_atomically(path, lambda tmp: tmp.write_bytes(bytes(serialized)))
    write_atomically(
        sidecar_path(path), lambda tmp: tmp.write_text(sidecar.model_dump_json(indent=2))
    )
    return path


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def check_sidecar(sidecar: EngineSidecar, trt_version: str, gpu: str, cc: tuple[int, int]):
    """Refuse engines built for another GPU or TensorRT (they fail or compute garbage)."""
    if sidecar.tensorrt_version != trt_version:
        raise DeconvError(
            f"engine was built with TensorRT {sidecar.tensorrt_version}, this is {trt_version}: "
            "rebuild it with deconv export --format tensorrt"
        )
    if sidecar.gpu_name != gpu or tuple(sidecar.compute_capability) != tuple(cc):
        raise DeconvError(
            f"engine was built for {sidecar.gpu_name} (sm {sidecar.compute_capability}), this "
            f"GPU is {gpu} (sm {cc}): rebuild it with deconv export --format tensorrt"
        )


def read_sidecar(engine: str | Path) -> EngineSidecar:
    path = sidecar_path(engine)
    if not path.exists():
        raise DeconvError(f"{engine} has no sidecar {path.name}; rebuild the engine")
    try:
        return EngineSidecar.model_validate_json(path.read_text())
    except ValueError as error:
        raise DeconvError(f"{path.name} is not a deconv engine sidecar: {error}") from None


def load_engine(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy function running the engine on the current GPU (after the sidecar check)."""
    import torch

    sidecar = read_sidecar(path)
    trt = require_tensorrt()
    check_sidecar(sidecar, trt.__version__, *gpu_identity())
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(path).read_bytes())
    if engine is None:
        raise DeconvError(f"TensorRT could not load {path}")
    context = engine.create_execution_context()
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
    in_dtype = dtypes.get(engine.get_tensor_dtype(sidecar.input_name), torch.float32)
    out_dtype = dtypes.get(engine.get_tensor_dtype(sidecar.output_name), torch.float32)

    def run(x: np.ndarray) -> np.ndarray:
        lo, hi = sidecar.min_shape, sidecar.max_shape
        if not all(a <= s <= b for a, s, b in zip(lo, x.shape, hi)):
            raise DeconvError(f"input {x.shape} is outside the engine's profile {lo}..{hi}")
        data = torch.from_numpy(np.ascontiguousarray(x)).to("cuda", in_dtype)
        context.set_input_shape(sidecar.input_name, tuple(data.shape))
        out = torch.empty(
            tuple(context.get_tensor_shape(sidecar.output_name)), dtype=out_dtype, device="cuda"
        )
        context.set_tensor_address(sidecar.input_name, data.data_ptr())
        context.set_tensor_address(sidecar.output_name, out.data_ptr())
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise DeconvError("TensorRT execution failed")
        stream.synchronize()
        return out.float().cpu().numpy()

    return run
