"""``deconv validate``: bioimageio.core's own test plus the checks real clients make.

Rows of the report (each passes or fails on its own; exit 0 only when all pass):
- ``bioimageio.core test``: the peer's test of the package, offline (format, file hashes,
  test tensors reproduced by every weights format, batch and size variations);
- ``psf metadata``: ``config.deconv.psf`` is present, its voxel size equals the space axes'
  scales, and the attached PSF has the recorded shape and sums to 1;
- ``<format> @ size``: each weights format reproduces the PyTorch model (rebuilt through the
  registry) on the test input and on a second size within the recorded tolerances;
- ``onnx opset/single file`` (deepImageJ) and ``one input, one output`` (ilastik).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deconv.errors import DeconvError


@dataclass
class CheckRow:
    check: str
    passed: bool
    detail: str = ""


def offline_settings() -> None:
    """Point bioimageio's cache at a writable folder before bioimageio is imported.

    Everything in our packages is local and cited by DOI, so nothing needs the network.
    """
    if "BIOIMAGEIO_CACHE_PATH" not in os.environ:
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "bioimageio"
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError:
            cache = Path(tempfile.gettempdir()) / "deconv-bioimageio-cache"
            cache.mkdir(parents=True, exist_ok=True)
        os.environ["BIOIMAGEIO_CACHE_PATH"] = str(cache)
    os.environ.setdefault("BIOIMAGEIO_LOG_WARNINGS", "false")
    from loguru import logger

    logger.disable("bioimageio")  # its progress logging would drown our one-line messages


def first_problems(summary: Any) -> list[str]:
    """One line per failed detail of a bioimageio ValidationSummary."""
    problems = []
    for detail in summary.details:
        if detail.status == "passed":
            continue
        messages = [
            f"{'.'.join(map(str, e.loc))}: {e.msg}" if e.loc else e.msg for e in detail.errors
        ]
        problems.append(f"{detail.name}: {' | '.join(messages) or detail.status}"[:400])
    return problems or [f"status {summary.status}"]


def bioimageio_test(path: str | Path) -> tuple[bool, list[str]]:
    """bioimageio.core's ``test_model`` on ``path``: (passed, problems)."""
    offline_settings()
    from bioimageio.core import test_model

    summary = test_model(Path(path))
    passed = summary.status in ("passed", "valid-format")
    return passed, [] if passed else first_problems(summary)


def _psf_row(descr: Any, config: Any) -> CheckRow:
    from deconv.exporters.package_loader import _read

    if config.psf is None:
        return CheckRow("psf metadata", False, "config.deconv.psf is missing")
    space = [a for a in descr.inputs[0].axes if a.type == "space"]
    scales = tuple(float(a.scale) for a in space)
    voxel = tuple(float(v) for v in config.psf.voxel_size)
    if len(voxel) != len(scales) or not np.allclose(voxel, scales, rtol=1e-6):
        return CheckRow("psf metadata", False, f"PSF voxel size {voxel} != axes' scales {scales}")
    units = {a.unit for a in space}
    if units != {"micrometer"}:
        return CheckRow("psf metadata", False, f"space axes' units are {units}, not micrometer")
    attachment = next(
        (a for a in descr.attachments if Path(str(a.source)).name == config.psf_file), None
    )
    if attachment is None:
        return CheckRow("psf metadata", False, f"attachment {config.psf_file} is missing")
    from deconv.psf import load_psf

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "psf.tif"
        file.write_bytes(_read(descr, attachment))
        data = load_psf(file).data
    if tuple(data.shape) != tuple(config.psf.shape) or abs(float(data.sum()) - 1) > 1e-3:
        return CheckRow(
            "psf metadata",
            False,
            f"attached PSF {data.shape} sum {data.sum():.4f} does not match "
            f"metadata shape {config.psf.shape}, sum 1",
        )
    return CheckRow("psf metadata", True, f"voxel size {voxel} µm, PSF {data.shape}")


def _weights_rows(descr: Any, source: Any, config: Any) -> list[CheckRow]:
    from deconv.exporters.onnx import onnx_facts, onnx_runner
    from deconv.exporters.package_loader import _read, read_array
    from deconv.exporters.torchscript import torchscript_runner
    from deconv.exporters.verification import check_shapes, torch_reference, verify

    raw = read_array(descr, descr.inputs[0].test_tensor)
    from deconv.exporters.bioimageio_package import normalized

    x = normalized(raw[0, 0], source)[None, None]
    shapes = check_shapes(source.card, x.shape[2:])
    reference = torch_reference(source.model)
    rows: list[CheckRow] = []
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        if descr.weights.torchscript is not None:
            file = Path(tmp) / "model.pt"
            file.write_bytes(_read(descr, descr.weights.torchscript))
            runners["torchscript"] = torchscript_runner(file)
        if descr.weights.onnx is not None:
            file = Path(tmp) / "model.onnx"
            file.write_bytes(_read(descr, descr.weights.onnx))
            facts = onnx_facts(file)
            ok = facts["opset"] == 17 and not facts["external_data"]
            rows.append(
                CheckRow(
                    "onnx opset 17, single file (deepImageJ)",
                    ok,
                    f"opset {facts['opset']}, external tensors {len(facts['external_data'])}",
                )
            )
            ok = not facts["custom_domains"]
            rows.append(
                CheckRow(
                    "onnx standard ops only", ok, ", ".join(facts["custom_domains"]) or "ai.onnx"
                )
            )
            runners["onnx"] = onnx_runner(file)
        for fmt, runner in runners.items():
            tolerance = tuple(config.tolerances.get(fmt, (1e-3, 1e-4)))
            for a in verify(fmt, reference, runner, shapes, tolerance):
                size = "x".join(map(str, a.shape))
                rows.append(
                    CheckRow(
                        f"{fmt} = pytorch @ {size}",
                        a.passed,
                        a.detail or f"max abs. error {a.max_abs_error:.2e}",
                    )
                )
    return rows


def validate_package(path: str | Path, trust_code: bool = False) -> list[CheckRow]:
    """Every check of ``deconv validate``; never raises for a failing check, only reports."""
    from deconv.exporters.package_loader import deconv_config, load_description, load_package

    path = Path(path)
    rows: list[CheckRow] = []
    try:
        descr = load_description(path)
    except DeconvError as error:
        return [CheckRow("package format and file hashes", False, str(error))]
    rows.append(CheckRow("package format and file hashes", True, f"format {descr.format_version}"))
    passed, problems = bioimageio_test(path)
    rows.append(CheckRow("bioimageio.core test", passed, "; ".join(problems[:2]) or "passed"))
    n_in, n_out = len(descr.inputs), len(descr.outputs)
    rows.append(
        CheckRow(
            "one input, one output (ilastik, deepImageJ)",
            n_in == n_out == 1,
            f"{n_in} input(s), {n_out} output(s)",
        )
    )
    config = deconv_config(descr)
    if config is None:
        rows.append(CheckRow("deconv metadata", False, "no config.deconv: not written by deconv"))
        return rows
    rows.append(_psf_row(descr, config))
    try:
        source = load_package(path, trust_code=trust_code)
    except DeconvError as error:
        rows.append(CheckRow("model rebuilt from the registry", False, str(error)))
        return rows
    rows.append(CheckRow("model rebuilt from the registry", True, source.registry_name))
    rows += _weights_rows(descr, source, config)
    return rows
