"""TensorRT engines and ONNX Runtime's GPU providers against PyTorch (skipped without them)."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from deconv.errors import DeconvError
from deconv.exporters.export import export_model
from deconv.exporters.sources import resolve_source
from deconv.exporters.tensorrt import load_engine, sidecar_path
from deconv.exporters.verification import check_input

HAS_GPU = torch.cuda.is_available()
HAS_TRT = importlib.util.find_spec("tensorrt") is not None

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU"),
]
SHIPPED = "rln3d.widefield-synthetic"


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT (deconv[tensorrt])")
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-3), ("fp16", 3e-2)])
def test_tensorrt_engine_matches_pytorch(tmp_path, precision, atol):
    source = resolve_source(SHIPPED)
    engine = tmp_path / f"rln3d_{precision}.engine"
    _, rows = export_model(source, "tensorrt", engine, precision=precision,
                           min_shape=(8, 32, 32), opt_shape=(32, 64, 64),
                           max_shape=(2, 1, 64, 128, 128))  # fmt: skip
    assert all(r.passed for r in rows) and len(rows) == 2
    sidecar = json.loads(sidecar_path(engine).read_text())
    assert sidecar["gpu_name"] == torch.cuda.get_device_name()
    assert sidecar["precision"] == precision and sidecar["opt_shape"] == [1, 1, 32, 64, 64]
    run = load_engine(engine)
    x = check_input((40, 96, 112), seed=4)  # inside the profile, not a profile shape
    with torch.no_grad():
        reference = source.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(x), reference, atol=atol, rtol=atol)
    with pytest.raises(DeconvError, match="outside the engine's profile"):
        run(check_input((80, 32, 32)))


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT (deconv[tensorrt])")
def test_engine_with_a_foreign_sidecar_is_refused(tmp_path):
    source = resolve_source(SHIPPED)
    engine = tmp_path / "rln3d.engine"
    export_model(source, "tensorrt", engine, min_shape=(8, 32, 32), opt_shape=(16, 32, 32),
                 max_shape=(16, 64, 64))  # fmt: skip
    sidecar = json.loads(sidecar_path(engine).read_text())
    sidecar["gpu_name"] = "NVIDIA GeForce GTX 480"
    sidecar_path(engine).write_text(json.dumps(sidecar))
    with pytest.raises(DeconvError, match="built for NVIDIA GeForce GTX 480"):
        load_engine(engine)


def test_onnxruntime_cuda_provider_matches_pytorch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (install deconv[gpu])")
    from deconv.exporters.onnx import onnx_runner

    source = resolve_source(SHIPPED)
    path, _ = export_model(source, "onnx", tmp_path / "m.onnx")
    run = onnx_runner(path, providers=["CUDAExecutionProvider"])
    x = check_input((32, 64, 64), seed=1)
    with torch.no_grad():
        reference = source.model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(run(x), reference, atol=1e-3, rtol=1e-3)
