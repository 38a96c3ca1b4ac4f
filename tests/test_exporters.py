"""ONNX / TorchScript / TensorRT export: agreement with PyTorch, client-facing properties,
the torch-only network files, and the errors users meet."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from deconv.errors import DeconvError
from deconv.exporters.export import export_model
from deconv.exporters.onnx import export_onnx, onnx_facts, onnx_runner
from deconv.exporters.sources import ModelSource, from_registry, resolve_source
from deconv.exporters.tensorrt import EngineSidecar, check_sidecar, profile_shapes
from deconv.exporters.torchscript import export_torchscript, torchscript_runner
from deconv.exporters.verification import check_input, check_shapes, valid_size
from deconv.zoo import get_model_card

NETWORK_FILES = sorted((Path(__file__).parents[1] / "zoo" / "networks").glob("[!_]*.py"))
TINY = ["rln3d_tiny", "rln2d_tiny", "rcan3d_tiny", "rcan2d_tiny", "mrbcr2d_tiny"]


def _torch(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("name", TINY)
def test_onnx_runtime_reproduces_pytorch_on_an_unseen_size(tmp_path, name):
    source = from_registry(name)
    traced, unseen = check_shapes(source.card)
    path = export_onnx(source.model, check_input(traced), tmp_path / "m.onnx")
    x = check_input(unseen, seed=5)
    np.testing.assert_allclose(onnx_runner(path)(x), _torch(source.model, x), rtol=1e-4, atol=1e-5)
    # batch 2 through the dynamic batch axis
    x2 = np.concatenate([x, x[..., ::-1].copy()])
    np.testing.assert_allclose(
        onnx_runner(path)(x2), _torch(source.model, x2), rtol=1e-4, atol=1e-5
    )


def test_onnx_file_is_what_deepimagej_and_ilastik_load(tmp_path):
    source = from_registry("rln3d_tiny")
    path = export_onnx(source.model, check_input((16, 32, 32)), tmp_path / "m.onnx")
    facts = onnx_facts(path)
    assert facts["opset"] == 17
    assert facts["external_data"] == [] and list(tmp_path.iterdir()) == [path]
    assert facts["inputs"] == ["input"] and facts["outputs"] == ["output"]
    assert facts["custom_domains"] == []
    dims = [
        d.dim_param or d.dim_value
        for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    ]
    assert dims == ["batch", 1, "z", "y", "x"]


def test_fp16_onnx_keeps_divisions_in_float32(tmp_path):
    source = from_registry("rln3d_tiny")
    path = export_onnx(source.model, check_input((16, 32, 32)), tmp_path / "h.onnx",
                       precision="fp16")  # fmt: skip
    graph = onnx.load(str(path)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    divisions = [n for n in graph.node if n.op_type == "Div"]
    assert divisions, "RLN's graph has divisions"
    # every Div is fed through a Cast to float32 by the converter's block list
    to_float = [
        n for n in graph.node if n.op_type == "Cast" and n.attribute[0].i == onnx.TensorProto.FLOAT
    ]
    casts = {o for n in to_float for o in n.output}
    assert all(any(i in casts for i in d.input) for d in divisions)
    x = check_input((24, 40, 40), seed=3)
    np.testing.assert_allclose(onnx_runner(path)(x), _torch(source.model, x), atol=2e-2)


@pytest.mark.parametrize("name", ["rln3d_tiny", "mrbcr2d_tiny", "rcan2d_tiny"])
def test_torchscript_reproduces_pytorch_on_an_unseen_size(tmp_path, name):
    source = from_registry(name)
    traced, unseen = check_shapes(source.card)
    path = export_torchscript(source.model, check_input(traced), tmp_path / "m.pt")
    x = check_input(unseen, seed=7)
    np.testing.assert_allclose(torchscript_runner(path)(x), _torch(source.model, x), atol=1e-6)


def test_odd_sizes_still_work_in_eager_rln_after_export_changes():
    """The pad-to-even path is eager only; it must still crop back exactly."""
    model = from_registry("rln2d_tiny").model
    x = torch.rand(1, 1, 33, 47)
    with torch.no_grad():
        y = model(x)
        ref = model(torch.nn.functional.pad(x, (0, 1, 0, 1), mode="reflect"))[..., :33, :47]
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref)


@pytest.mark.parametrize("path", NETWORK_FILES, ids=lambda p: p.name)
def test_network_files_import_only_torch_and_the_standard_library(path):
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add((node.module or "").split(".")[0])
    assert imported <= {"torch", "__future__", "math", "types", "typing"}, imported


@pytest.mark.parametrize("name", ["rln3d_tiny", "rcan2d_tiny", "mrbcr2d_tiny"])
def test_network_file_rebuilds_the_model_without_deconv(tmp_path, name):
    """What a bioimage.io client does: import the file alone, build from kwargs, load weights."""
    from deconv.exporters.bioimageio_package import network_file

    source = from_registry(name)
    file, callable_name = network_file(source.model)
    torch.save(source.model.state_dict(), tmp_path / "w.pt")
    x = check_input(check_shapes(source.card)[1])
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "kwargs.json").write_text(json.dumps(source.config))
    script = f"""
import importlib.util, json, sys
import numpy as np, torch
sys.modules["deconv"] = None  # any import of deconv now fails
spec = importlib.util.spec_from_file_location("net", {str(file)!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
model = getattr(module, {callable_name!r})(**json.load(open({str(tmp_path / "kwargs.json")!r})))
model.load_state_dict(torch.load({str(tmp_path / "w.pt")!r}, weights_only=True))
with torch.no_grad():
    y = model.eval()(torch.from_numpy(np.load({str(tmp_path / "x.npy")!r})))
np.save({str(tmp_path / "y.npy")!r}, y.numpy())
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), _torch(source.model, x))


class _SizeBakingNet(torch.nn.Module):
    """Reads a size as a Python number: tracing freezes it, so other sizes go wrong."""

    def forward(self, x):
        return x * float(x.shape[-1])


def test_an_export_that_only_works_at_the_traced_size_is_refused(tmp_path):
    card = get_model_card("rcan2d_tiny")
    bad = ModelSource(name="bad", registry_name="rcan2d_tiny", config={}, model=_SizeBakingNet(),
                      card=card, normalization=card.normalization)  # fmt: skip
    out = tmp_path / "bad.onnx"
    with pytest.raises(DeconvError, match=r"does not reproduce PyTorch at size .*nothing was"):
        export_model(bad, "onnx", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_of_a_shipped_model_from_its_name(tmp_path):
    out, rows = export_model(
        resolve_source("rln2d.widefield-synthetic"), "onnx", tmp_path / "m.onnx"
    )
    assert out.exists() and len(rows) == 2 and all(r.passed for r in rows)
    assert rows[0].shape != rows[1].shape


def test_valid_size_rounds_up_to_min_plus_steps():
    card = get_model_card("mrbcr2d")  # min 8, step 8
    assert valid_size(card, (1, 17)) == (8, 24)
    card = get_model_card("rln3d")  # min 4, step 2
    assert valid_size(card, (5, 36, 3)) == (6, 36, 4)


def test_tensorrt_profile_defaults_follow_the_model_constraints():
    card = get_model_card("rln3d")
    lo, opt, hi = profile_shapes(card)
    assert lo == (1, 1, 4, 4, 4) and opt == (1, 1, 32, 128, 128) and hi == (4, 1, 128, 512, 512)
    lo, opt, hi = profile_shapes(card, (8, 32, 32), None, (2, 1, 64, 256, 256))
    assert lo == (1, 1, 8, 32, 32) and hi == (2, 1, 64, 256, 256)


@pytest.mark.parametrize(
    ("shapes", "message"),
    [
        (((7, 32, 32), None, None), r"sizes must be 4 \+ k \* 2"),
        (((64, 256, 256), None, None), "min <= opt <= max"),
        (((32, 32), None, None), "3 spatial sizes"),
    ],
)
def test_tensorrt_profile_errors(shapes, message):
    with pytest.raises(DeconvError, match=message):
        profile_shapes(get_model_card("rln3d"), *shapes)


def test_engine_sidecar_refuses_another_gpu_or_tensorrt():
    sidecar = EngineSidecar(
        tensorrt_version="10.13.3", gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
        precision="fp16", strongly_typed=False, min_shape=(1, 1, 4, 4, 4),
        opt_shape=(1, 1, 32, 64, 64), max_shape=(4, 1, 64, 128, 128), source_sha256=None,
        onnx_sha256="0" * 64, created="2026-11-22T00:00:00+00:00",
    )  # fmt: skip
    check_sidecar(sidecar, "10.13.3", "NVIDIA H100 80GB HBM3", (9, 0))  # same: accepted
    with pytest.raises(DeconvError, match=r"built for NVIDIA H100.*this GPU is NVIDIA L4"):
        check_sidecar(sidecar, "10.13.3", "NVIDIA L4", (8, 9))
    with pytest.raises(DeconvError, match=r"built with TensorRT 10\.13\.3, this is 11\.4\.0"):
        check_sidecar(sidecar, "11.4.0", "NVIDIA H100 80GB HBM3", (9, 0))
