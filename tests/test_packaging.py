"""bioimage.io packages: what the peer tools accept, what we put in, and tampering."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from deconv.errors import DeconvError
from deconv.exporters.bioimageio_package import package_model
from deconv.exporters.package_checks import validate_package
from deconv.exporters.package_loader import load_package
from deconv.exporters.sources import from_registry, resolve_source
from deconv.zoo.pretrained import pretrained_record
from tests.test_cli import call, run_cli

BIOIMAGEIO = shutil.which("bioimageio", path=str(Path(sys.executable).parent)) or "bioimageio"
SHIPPED = "rln3d.widefield-synthetic"


@pytest.fixture(scope="module")
def shipped_package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pkg") / "rln3d.zip"
    run_cli("package", SHIPPED, "-o", str(out), "-q")
    return out


def _rdf(package: Path) -> dict:
    with zipfile.ZipFile(package) as archive:
        return yaml.safe_load(archive.read("rdf.yaml"))


def _rewrite(package: Path, out: Path, edit) -> Path:
    """Copy ``package`` to ``out`` with ``edit(name, data) -> data | None`` applied."""
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = edit(item.filename, src.read(item.filename))
            if data is not None:
                dst.writestr(item.filename, data)
    return out


def test_the_peer_cli_bioimageio_test_passes_offline(shipped_package, tmp_path):
    proc = subprocess.run(
        [BIOIMAGEIO, "test", str(shipped_package)], capture_output=True, text=True,
        timeout=600, env={**__import__("os").environ, "BIOIMAGEIO_CACHE_PATH": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "status" in proc.stdout and "passed" in proc.stdout


def test_rdf_carries_psf_voxel_size_constraints_and_citation(shipped_package):
    rdf = _rdf(shipped_package)
    record = pretrained_record(SHIPPED)
    assert rdf["format_version"].startswith("0.5")
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    space = [a for a in inp["axes"] if a["type"] == "space"]
    assert [a["id"] for a in space] == ["z", "y", "x"]
    assert [a["scale"] for a in space] == list(record.psf.voxel_size)
    assert {a["unit"] for a in space} == {"micrometer"}
    # min - 2 * halo >= 1 and sizes min + n * step with RLN's step 2
    assert all(a["size"]["step"] == 2 and a["size"]["min"] == 36 for a in space)
    assert [a["halo"] for a in out["axes"] if a["type"] == "space"] == [17, 17, 17]
    deconv_config = rdf["config"]["deconv"]
    assert deconv_config["psf"] == record.psf.model_dump(mode="json")
    assert deconv_config["model"]["registry_name"] == "rln3d"
    metrics = record.metrics
    assert deconv_config["metrics"] == {
        "psnr": metrics["validation_psnr"],
        "ssim": metrics["validation_ssim"],
    }
    assert rdf["cite"][0]["doi"] == "10.1038/s41592-022-01652-7"
    assert all("github_user" not in a for a in rdf["authors"])
    assert rdf["weights"]["onnx"]["opset_version"] == 17
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["source"] == "rln.py"
    with zipfile.ZipFile(shipped_package) as archive:
        names = set(archive.namelist())
        readme = archive.read("README.md").decode()
    assert {"psf.tif", "cover.png", "rln.py", "weights.onnx", "weights.pt"} <= names
    assert "# Validation" in readme and f"{record.metrics['validation_psnr']:.2f} dB" in readme


def test_validate_passes_and_reports_json(shipped_package, capsys):
    code, out, _ = call(capsys, "validate", str(shipped_package), "--json")
    report = json.loads(out)
    assert code == 0 and report["passed"]
    checks = {r["check"] for r in report["checks"]}
    assert {"bioimageio.core test", "psf metadata", "onnx opset 17, single file (deepImageJ)",
            "one input, one output (ilastik, deepImageJ)"} <= checks  # fmt: skip
    assert sum(c.startswith("onnx = pytorch @") for c in checks) == 2


def test_package_reloads_to_the_same_network(shipped_package):
    source = load_package(shipped_package)
    original = resolve_source(SHIPPED)
    for (k, a), b in zip(source.model.state_dict().items(), original.model.state_dict().values()):
        assert np.array_equal(a.numpy(), b.numpy()), k
    assert source.psf is not None and source.psf.data.shape == tuple(original.psf.metadata.shape)
    np.testing.assert_allclose(source.psf.data, original.psf.data, rtol=1e-6)
    # `--rl-refine auto` runs the same count from the package as from the shipped name
    assert source.rl_refine == original.rl_refine == pretrained_record(SHIPPED).rl_refine == 200


def test_tampered_weights_fail_on_their_sha256(shipped_package, tmp_path):
    def edit(name, data):
        return data[:-8] + b"\0" * 8 if name == "weights.pt" else data

    bad = _rewrite(shipped_package, tmp_path / "bad.zip", edit)
    rows = validate_package(bad)
    assert not rows[0].passed and "sha" in rows[0].detail.lower()


def test_missing_file_fails(shipped_package, tmp_path):
    bad = _rewrite(shipped_package, tmp_path / "bad.zip",
                   lambda name, data: None if name == "weights.onnx" else data)  # fmt: skip
    rows = validate_package(bad)
    assert not rows[0].passed and "weights.onnx" in rows[0].detail


def test_edited_voxel_size_fails_the_psf_check(shipped_package, tmp_path, capsys):
    def edit(name, data):
        if name != "rdf.yaml":
            return data
        rdf = yaml.safe_load(data)
        for axis in rdf["inputs"][0]["axes"] + rdf["outputs"][0]["axes"]:
            if axis.get("id") == "z":
                axis["scale"] = 0.3
        return yaml.safe_dump(rdf).encode()

    bad = _rewrite(shipped_package, tmp_path / "bad.zip", edit)
    code, out, _ = call(capsys, "validate", str(bad))
    assert code == 1
    line = next(x for x in out.splitlines() if "psf metadata" in x)
    assert line.startswith("FAIL") and "!= axes' scales" in line


def test_foreign_registry_name_needs_trust_code(shipped_package, tmp_path):
    def edit(name, data):
        if name != "rdf.yaml":
            return data
        rdf = yaml.safe_load(data)
        rdf["config"]["deconv"]["model"]["registry_name"] = "someone_elses_rln"
        return yaml.safe_dump(rdf).encode()

    foreign = _rewrite(shipped_package, tmp_path / "foreign.zip", edit)
    with pytest.raises(DeconvError, match="--trust-code"):
        load_package(foreign)
    trusted = load_package(foreign, trust_code=True)  # runs rln.py from the package
    reference = load_package(shipped_package)
    x = np.random.default_rng(0).random((1, 1, 36, 40, 40), dtype=np.float32)
    import torch

    with torch.no_grad():
        np.testing.assert_array_equal(trusted.model(torch.from_numpy(x)).numpy(),
                                      reference.model(torch.from_numpy(x)).numpy())  # fmt: skip


def test_a_package_failing_its_test_is_not_written(tmp_path, monkeypatch):
    from deconv.exporters import package_checks

    monkeypatch.setattr(package_checks, "bioimageio_test", lambda path: (False, ["made up"]))
    out = tmp_path / "never.zip"
    with pytest.raises(DeconvError, match=r"failed bioimageio\.core's test, nothing was written"):
        package_model(from_registry("rln2d_tiny"), out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["rcan3d_tiny", "mrbcr2d_tiny", "rln2d_tiny"])
def test_every_architecture_packages_and_passes_bioimageio_core(tmp_path, name, psf2d, psf3d):
    source = from_registry(name, psf=psf3d if "3d" in name else psf2d)
    out, checks = package_model(source, tmp_path / f"{name}.zip")  # runs test_model itself
    assert all(c.passed for c in checks) and {c.check for c in checks} == {
        "pytorch_state_dict", "torchscript", "onnx"}  # fmt: skip
    rows = validate_package(out)
    assert all(r.passed for r in rows), [r for r in rows if not r.passed]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["package", "rln9d.nothing", "-o", "x.zip"], "not a pretrained model"),
        (["package", SHIPPED, "-o", "x.tar"], "must be a .zip"),
        (["package", SHIPPED, "-o", "x.zip", "--weights", "keras"], "--weights must be"),
        (["export", SHIPPED, "-f", "tflite", "-o", "m.tflite"], "--format must be one of"),
        (["export", SHIPPED, "-f", "torchscript", "-o", "m.pt", "--precision", "fp16"],
         "supports precision fp32"),
        (["export", SHIPPED, "-f", "tensorrt", "-o", "m.engine"], 'deconv\\[tensorrt\\]'),
        (["validate", "missing.zip"], "does not exist"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    import torch

    if "tensorrt" in args and torch.cuda.is_available():
        pytest.skip("a GPU is present: the missing-TensorRT message cannot be provoked")
    code, out, err = call(capsys, *args)
    text = out + err
    assert code != 0
    assert __import__("re").search(message, text), text
    assert "Traceback" not in text
    assert not any(p.suffix in (".zip", ".onnx", ".pt", ".engine") for p in tmp_path.iterdir())


@pytest.mark.parametrize(("back_projector", "iterations"), [("wiener-butterworth", None),
                                                            ("traditional", 10)])  # fmt: skip
def test_rl_graph_reproduces_classical_richardson_lucy(psf3d, back_projector, iterations):
    import torch

    from deconv.exporters.rl_source import classical_reference, rl_source
    from deconv.synth import simulate_pair

    source = rl_source(psf3d, back_projector, iterations, tile=(16, 32, 32), background=30.0)
    raw = simulate_pair((16, 32, 32), psf3d.data, 3)[0]
    with torch.no_grad():
        graph = source.model(torch.from_numpy(raw)[None, None]).numpy()[0, 0]
    reference = classical_reference(source)(raw).numpy()
    assert np.abs(graph - reference).max() <= 1e-5 * reference.max()


def test_rl_packages_with_its_psf_and_passes_validation(tmp_path, psf3d, capsys):
    from deconv.psf import save_psf

    save_psf(psf3d, tmp_path / "psf.tif")
    out = tmp_path / "rl.zip"
    code, _, err = call(capsys, "package", "rl", "--psf", str(tmp_path / "psf.tif"),
                           "--tile", "16,32,32", "-o", str(out), "-q")  # fmt: skip
    assert code == 0, err
    rdf = _rdf(out)
    space = [a for a in rdf["inputs"][0]["axes"] if a["type"] == "space"]
    assert [a["size"] for a in space] == [16, 32, 32]  # fixed tile
    assert [a["halo"] for a in rdf["outputs"][0]["axes"] if a["type"] == "space"] == [4, 8, 8]
    assert rdf["inputs"][0].get("preprocessing", [{"id": "ensure_dtype"}])[-1]["id"] in (
        "ensure_dtype",)  # raw counts in, no normalisation  # fmt: skip
    assert rdf["config"]["deconv"]["model"]["architecture"] == "rl_fft"
    rows = validate_package(out)
    assert all(r.passed for r in rows), [r for r in rows if not r.passed]


def test_rl_package_needs_a_psf(tmp_path, capsys):
    code, out, err = call(capsys, "package", "rl", "-o", str(tmp_path / "rl.zip"))
    assert code != 0 and "needs --psf" in out + err
