"""``deconv export``: one artefact from a package (or pretrained name, or run), verified.

Nothing is reported as written before it has been run against PyTorch on two spatial sizes,
one of them not used when tracing (:mod:`deconv.exporters.verification`); a failed check
removes the artefact and says by how much it missed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deconv.errors import DeconvError
from deconv.exporters.sources import ModelSource
from deconv.exporters.verification import (
    TOLERANCES,
    Agreement,
    check_input,
    check_shapes,
    torch_reference,
    verify,
)

FORMATS = ("onnx", "torchscript", "tensorrt")


def export_model(
    source: ModelSource,
    fmt: str,
    output: str | Path,
    precision: str = "fp32",
    opset: int = 17,
    min_shape: Sequence[int] | None = None,
    opt_shape: Sequence[int] | None = None,
    max_shape: Sequence[int] | None = None,
) -> tuple[Path, list[Agreement]]:
    """Write ``source`` as ``fmt`` to ``output``; returns the path and the agreement rows."""
    from deconv.io import check_output_path

    if fmt not in FORMATS:
        raise DeconvError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    output = Path(output)
    check_output_path(output, image=False)
    card = source.card
    reference = torch_reference(source.model)
    if fmt == "tensorrt":
        return _export_tensorrt(source, output, precision, opset, min_shape, opt_shape, max_shape)
    if (fmt, precision) not in TOLERANCES:
        raise DeconvError(
            f"{fmt} export supports precision fp32"
            + (" or fp16" if fmt == "onnx" else "")
            + f", not {precision!r}"
        )
    shapes = check_shapes(card)
    example = check_input(shapes[0])
    if fmt == "onnx":
        from deconv.exporters.onnx import export_onnx, onnx_runner

        export_onnx(source.model, example, output, opset=opset, precision=precision,
                    dynamic_spatial=any(card.step))  # fmt: skip
        runner = onnx_runner(output)
    else:
        from deconv.exporters.torchscript import export_torchscript, torchscript_runner

        export_torchscript(source.model, example, output)
        runner = torchscript_runner(output)
    rows = verify(fmt, reference, runner, shapes, TOLERANCES[(fmt, precision)])
    _keep_only_if_verified(output, rows)
    return output, rows


def _keep_only_if_verified(output: Path, rows: list[Agreement], extra: Sequence[Path] = ()):
    failed = [r for r in rows if not r.passed]
    if failed:
        for path in (output, *extra):
            path.unlink(missing_ok=True)
        r = failed[0]
        raise DeconvError(
            f"the {r.check} export does not reproduce PyTorch at size {r.shape} (max error "
            f"{r.max_abs_error:.3g} > {r.absolute:g} + {r.relative:g} x |reference|"
            f"{'; ' + r.detail if r.detail else ''}); nothing was written"
        )


def _export_tensorrt(source, output, precision, opset, min_shape, opt_shape, max_shape):
    from deconv.exporters.onnx import export_onnx
    from deconv.exporters.tensorrt import (
        build_engine,
        load_engine,
        profile_shapes,
        require_tensorrt,
        sidecar_path,
    )

    require_tensorrt()
    if precision not in ("fp32", "fp16", "bf16"):
        raise DeconvError(f"--precision must be fp32, fp16 or bf16, got {precision!r}")
    shapes = profile_shapes(source.card, min_shape, opt_shape, max_shape)
    example = check_input(shapes[1][2:])
    build_engine(
        lambda p: export_onnx(source.model, example, p, opset=opset),
        lambda p: export_onnx(source.model, example, p, opset=opset, precision="fp16"),
        output,
        precision,
        shapes,
        source_sha256=source.sha256,
    )
    other = [
        min(max(a, b), c)
        for a, b, c in zip(shapes[0][2:], check_shapes(source.card)[1], shapes[2][2:])
    ]
    from deconv.exporters.verification import valid_size

    test_shapes = [shapes[1][2:], valid_size(source.card, other)]
    rows = verify(
        "tensorrt",
        torch_reference(source.model),
        load_engine(output),
        test_shapes,
        TOLERANCES[("tensorrt", precision)],
    )
    _keep_only_if_verified(output, rows, extra=(sidecar_path(output),))
    return output, rows
