"""``deconv package``: a trained model as a bioimage.io model (format 0.5) with its PSF.

The description is built from bioimageio.spec's own classes (never hand-written YAML), the
package is assembled in a temporary folder, tested with bioimageio.core offline, and only
then moved to the output path: a package that fails its own test is never written.

Choices a client will notice (recorded in specs/packaging.md):
- one input ``raw`` and one output ``restored`` (ilastik and deepImageJ need exactly one of
  each), axes batch, channel, (z,) y, x with the PSF's voxel size as micrometre scales;
- input sizes ``min + n * step`` where step is the model's and min is the smallest valid
  size larger than twice the halo (bioimage.io requires ``min - 2 * halo >= 1``);
- preprocessing ``scale_range`` with the model's percentiles over the whole sample, which
  is the global normalisation the model was trained with; the output is left in those
  normalised units (no postprocessing), the convention of image-restoration models;
- weights: ``pytorch_state_dict`` (the parent) whose architecture is the torch-only network
  file from ``deconv.zoo.networks``, plus ``torchscript`` and single-file ``onnx`` (opset
  17), each verified against PyTorch on the test input and on a second, untraced size.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deconv.errors import DeconvError
from deconv.exporters.package_config import (
    DeconvPackageConfig,
    PackagedModel,
    WeightsCheck,
)
from deconv.exporters.sources import ModelSource
from deconv.exporters.verification import (
    TOLERANCES,
    Agreement,
    check_shapes,
    torch_reference,
    valid_size,
    verify,
)
from deconv.reporter import SILENT, Reporter

WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")
INPUT_ID, OUTPUT_ID = "raw", "restored"
TEST_SEED = 424_242
AUTHORS = ("deconv developers",)
LICENSE = "MIT"


NAME_CHARACTERS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+- ()")


def package_name(name: str) -> str:
    """A bioimage.io-valid name: ``rln3d.widefield-synthetic`` -> ``rln3d widefield-synthetic``."""
    cleaned = "".join(c if c in NAME_CHARACTERS else " " for c in name).strip()
    if len(cleaned) < 5:
        raise DeconvError(f"model name {name!r} is too short for bioimage.io (5+ characters)")
    return cleaned[:128]


def package_min_size(source: ModelSource) -> tuple[int, ...]:
    """Smallest accepted size per axis with at least one voxel left inside the halo."""
    card = source.card
    return valid_size(card, [2 * h + 1 for h in card.halo])


def network_file(model: torch.nn.Module) -> tuple[Path, str]:
    """The self-contained (torch-only) source file and class name of ``model``'s graph."""
    import inspect

    for cls in type(model).__mro__:
        if cls.__module__.startswith("deconv.zoo.networks."):
            return Path(inspect.getsourcefile(cls) or ""), cls.__name__
    raise DeconvError(
        f"{type(model).__name__} has no torch-only network file, so pytorch_state_dict weights "
        "cannot be packaged self-contained; use --weights torchscript,onnx"
    )


def _round_trips(size: int, scale: float) -> bool:
    """bioimage.io checks an output size as ``size * scale / scale`` in floating point, so a
    size that does not survive that round trip (48 at 0.2 µm) fails its test."""
    return size * scale / scale == size


def _test_shape(source: ModelSource, minimum: Sequence[int]) -> tuple[int, ...]:
    """Test tensor size: valid, at least (40, 64, 64), and safe from the round trip above."""
    card = source.card
    scales = source.psf.voxel_size if source.psf is not None else (1.0,) * card.ndim
    shape = []
    for i, target in enumerate((40, 64, 64)[-card.ndim :]):
        lo, step = minimum[i], card.step[i]
        size = lo if step == 0 else lo + max(0, -(-(target - lo) // step)) * step
        while step and not _round_trips(size, scales[i]):
            size += step
        if not _round_trips(size, scales[i]):
            raise DeconvError(
                f"tile size {size} at voxel size {scales[i]} µm is rejected by bioimage.io's "
                f"size check (floating-point rounding); use {size - 1} or {size + 1}"
            )
        shape.append(size)
    return tuple(shape)


def test_input(source: ModelSource, shape: Sequence[int]) -> np.ndarray:
    """A raw test image for the package: synthetic data through the model's own PSF."""
    from deconv.exporters.verification import check_input
    from deconv.synth import SynthConfig, simulate_pair

    if source.psf is not None and source.psf.ndim == len(shape):
        crowded = SynthConfig(density=3.0)  # a test tile with enough objects to see
        return simulate_pair(tuple(shape), source.psf.data, TEST_SEED, crowded)[0]
    return check_input(shape)[0, 0] * 1000.0 + 100.0


def normalized(raw: np.ndarray, source: ModelSource) -> np.ndarray:
    """bioimage.io's scale_range: (x - p_low) / (p_high - p_low + eps), eps 1e-6."""
    norm = source.normalization
    if norm.kind == "none":
        return raw.astype(np.float32)
    lo_p, hi_p = (0.0, 100.0) if norm.kind == "min_max" else (norm.low, norm.high)
    lo, hi = np.percentile(raw, [lo_p, hi_p])
    return ((raw - lo) / (hi - lo + 1e-6)).astype(np.float32)


def _export_weights(
    source: ModelSource, formats: Sequence[str], folder: Path, example: np.ndarray
) -> tuple[dict[str, Any], list[Agreement]]:
    """Write each weights format into ``folder`` and verify it; returns descrs and checks."""
    from bioimageio.spec.model import v0_5 as spec

    version = spec.Version(torch.__version__.split("+")[0])
    shapes = check_shapes(source.card, example.shape[2:])
    reference = torch_reference(source.model)
    descrs: dict[str, Any] = {}
    checks: list[Agreement] = []
    parent = "pytorch_state_dict" if "pytorch_state_dict" in formats else None
    if parent:
        path, callable_name = network_file(source.model)
        arch_file = folder / path.name
        shutil.copyfile(path, arch_file)
        weights = folder / "weights.pt"
        torch.save(source.model.state_dict(), weights)
        kwargs = dict(source.config)
        descrs["pytorch_state_dict"] = spec.PytorchStateDictWeightsDescr(
            source=weights,
            pytorch_version=version,
            architecture=spec.ArchitectureFromFileDescr(
                source=arch_file, callable=callable_name, kwargs=kwargs
            ),
        )
        checks += _verify_state_dict(arch_file, callable_name, kwargs, weights, reference, shapes)
    if "torchscript" in formats:
        from deconv.exporters.torchscript import export_torchscript, torchscript_runner

        path = export_torchscript(source.model, example, folder / "weights_torchscript.pt")
        descrs["torchscript"] = spec.TorchscriptWeightsDescr(
            source=path, pytorch_version=version, parent=parent
        )
        tolerance = TOLERANCES[("torchscript", "fp32")]
        checks += verify("torchscript", reference, torchscript_runner(path), shapes, tolerance)
    if "onnx" in formats:
        from deconv.exporters.onnx import DEFAULT_OPSET, export_onnx, onnx_runner

        path = export_onnx(source.model, example, folder / "weights.onnx",
                           dynamic_spatial=any(source.card.step))  # fmt: skip
        descrs["onnx"] = spec.OnnxWeightsDescr(
            source=path, opset_version=DEFAULT_OPSET, parent=parent or "torchscript"
        )
        checks += verify("onnx", reference, onnx_runner(path), shapes, TOLERANCES[("onnx", "fp32")])
    return descrs, checks


def _verify_state_dict(arch_file, callable_name, kwargs, weights, reference, shapes):
    """Rebuild the network from the copied file alone (as bioimage.io clients will)."""
    from deconv.exporters.package_loader import import_network_file

    network = import_network_file(arch_file, callable_name)(**kwargs)
    network.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    tolerance = TOLERANCES[("pytorch_state_dict", "fp32")]
    return verify(
        "pytorch_state_dict", reference, torch_reference(network.eval()), shapes, tolerance
    )


def _axes(source: ModelSource, minimum: Sequence[int], output: bool) -> list[Any]:
    from bioimageio.spec.model import v0_5 as spec

    card = source.card
    names = ("z", "y", "x")[-card.ndim :]
    voxel = source.psf.voxel_size if source.psf is not None else None
    if voxel is not None and len(voxel) != card.ndim:
        voxel = None
    axes: list[Any] = [
        spec.BatchAxis(),
        spec.ChannelAxis(channel_names=[spec.Identifier(OUTPUT_ID if output else INPUT_ID)]),
    ]
    for i, name in enumerate(names):
        unit = {"unit": "micrometer", "scale": float(voxel[i])} if voxel else {}
        if output:
            axes.append(
                spec.SpaceOutputAxisWithHalo(
                    id=spec.AxisId(name),
                    halo=card.halo[i],
                    size=spec.SizeReference(
                        tensor_id=spec.TensorId(INPUT_ID), axis_id=spec.AxisId(name)
                    ),
                    **unit,
                )
            )
        else:
            size = (
                spec.ParameterizedSize(min=minimum[i], step=card.step[i])
                if card.step[i]
                else int(minimum[i])  # fixed-size graph (RL with baked-in transfer functions)
            )
            axes.append(spec.SpaceInputAxis(id=spec.AxisId(name), size=size, **unit))
    return axes


def _preprocessing(source: ModelSource) -> list[Any]:
    from bioimageio.spec.model import v0_5 as spec

    norm = source.normalization
    if norm.kind == "none":
        return []
    lo, hi = (0.0, 100.0) if norm.kind == "min_max" else (norm.low, norm.high)
    names = [spec.AxisId(a) for a in ("channel", *("z", "y", "x")[-source.card.ndim :])]
    return [
        spec.ScaleRangeDescr(
            kwargs=spec.ScaleRangeKwargs(axes=names, min_percentile=lo, max_percentile=hi)
        )
    ]


def _documentation(source: ModelSource, name: str, checks: list[Agreement], path: Path) -> Path:
    card = source.card
    lines = [
        f"# {name}",
        "",
        card.description,
        "",
        f"Packaged by `deconv package` from {source.origin}. Registry model "
        f"`{source.registry_name}` ({card.parameters:,} trainable parameters).",
        "",
        "## Input and output",
        "",
        f"One {card.ndim}D single-channel input `{INPUT_ID}` (raw camera counts) and one output "
        f"`{OUTPUT_ID}` of the same size. The input is normalised per sample with the "
        f"{source.normalization.low}/{source.normalization.high} percentiles "
        "(`scale_range`); the output is in those normalised units. Sizes must be "
        "`min + n * step` per axis (see the rdf); the output halo "
        f"({', '.join(map(str, card.halo))} voxels) is the receptive field: crop it when tiling.",
        "",
    ]
    if source.normalization.reference_floor is not None:
        lines[-1:-1] = [
            "",
            "Sparse samples (beads, puncta): `deconv run` also scales an image whose background "
            "sits above the training data's down towards it (floor matching, reference floor "
            f"{source.normalization.reference_floor:.4g} in normalised units; up to +4.5 dB on "
            "sparse test images). bioimage.io's `scale_range` cannot express that, so other "
            "tools see the percentile normalisation alone; for sparse samples, run this model with "
            "`deconv run`.",
        ]
    if source.psf is not None:
        meta = source.psf.metadata
        lines += [
            "## Point spread function",
            "",
            f"Trained for a {meta.generator} PSF: NA {meta.na}, emission "
            f"{meta.wavelength_emission} µm, immersion n={meta.ni}, sample n={meta.ns}, "
            f"voxel size {meta.voxel_size} µm, shape {meta.shape}. Full metadata under "
            "`config.deconv.psf`; the PSF itself is the attachment `psf.tif`. Use the model "
            "only on data acquired with this PSF and voxel size.",
            "",
        ]
        if source.rl_refine:
            lines += [
                "With `deconv`, `deconv run IMAGE -o OUT --model THIS.zip --rl-refine auto` "
                f"also runs {source.rl_refine} Richardson-Lucy iterations with this PSF, started "
                "from the network's output: better than either alone on every structure class "
                "measured (`config.deconv.rl_refine`).",
                "",
            ]
    if source.training:
        steps = source.training.get("steps")
        data = source.training.get("data", {})
        lines += [
            "## Training",
            "",
            f"Steps: {steps}. Data: {data.get('kind', 'see config')}.",
            f"Loss: {card.loss}.",
            "",
        ]
        if "command" in source.training:
            lines += ["Command:", "", "```", str(source.training["command"]), "```", ""]
    lines += ["# Validation", ""]
    if source.metrics:
        lines += [
            "Final validation of training (held-out synthetic pairs): PSNR "
            f"{source.metrics.get('psnr', float('nan')):.2f} dB, SSIM "
            f"{source.metrics.get('ssim', float('nan')):.3f}.",
            "",
        ]
    lines += [
        "Each weights format reproduces the PyTorch model (|a - b| <= abs + rel * |b|):",
        "",
        "| weights | input size | max abs. error | rel. tol. | abs. tol. | passed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for c in checks:
        lines.append(
            f"| {c.check} | {'x'.join(map(str, c.shape))} | {c.max_abs_error:.2e} | "
            f"{c.relative:g} | {c.absolute:g} | {'yes' if c.passed else 'NO'} |"
        )
    if card.citation:
        lines += ["", "## Citation", ""]
        lines += [f"- {c.text}" + (f" doi:{c.doi}" if c.doi else "") for c in card.citation]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_description(
    source: ModelSource, folder: Path, name: str, formats: Sequence[str]
) -> tuple[Any, list[Agreement]]:
    """Write every file of the package into ``folder`` and return its ModelDescr."""
    from bioimageio.spec.model import v0_5 as spec

    from deconv.figures import cover_image
    from deconv.psf import save_psf

    unknown = [f for f in formats if f not in WEIGHT_FORMATS]
    if unknown or not formats:
        raise DeconvError(
            f"--weights must be a comma list of {', '.join(WEIGHT_FORMATS)}; got {list(formats)}"
        )
    card = source.card
    minimum = package_min_size(source)
    shape = _test_shape(source, minimum)
    raw = test_input(source, shape)
    x = normalized(raw, source)[None, None]
    with torch.no_grad():
        y = source.model(torch.from_numpy(x)).float().numpy()
    np.save(folder / "test_input.npy", raw[None, None].astype(np.float32))
    np.save(folder / "test_output.npy", y)
    import tifffile

    tifffile.imwrite(folder / "sample_input.tif", raw[None, None].astype(np.float32))
    tifffile.imwrite(folder / "sample_output.tif", y)
    cover = cover_image(raw, y[0, 0], folder / "cover.png", OUTPUT_ID)
    weights, checks = _export_weights(source, formats, folder, x)
    failed = [c for c in checks if not c.passed]
    if failed:
        c = failed[0]
        raise DeconvError(
            f"{c.check} weights do not reproduce PyTorch at size {c.shape} "
            f"(max error {c.max_abs_error:.3g}{'; ' + c.detail if c.detail else ''}); "
            "nothing was written"
        )
    attachments = []
    psf_meta = None
    if source.psf is not None:
        attachments.append(spec.FileDescr(source=save_psf(source.psf, folder / "psf.tif")))
        psf_meta = source.psf.metadata
    tolerances = {f: TOLERANCES[(f, "fp32")] for f in formats}
    scale = max(1.0, float(np.abs(y).max()))  # absolute tolerances follow the output's range
    deconv_config = DeconvPackageConfig(
        model=PackagedModel(
            registry_name=source.registry_name,
            architecture=card.architecture,
            config=dict(source.config),
        ),
        psf=psf_meta,
        psf_file="psf.tif" if psf_meta else None,
        normalization=source.normalization,
        halo=card.halo,
        training=source.training,
        metrics=source.metrics,
        tolerances=tolerances,
        source=source.origin,
        rl_refine=source.rl_refine,
        checks=[
            WeightsCheck(
                weights_format=c.check,
                shape=c.shape,
                max_abs_error=c.max_abs_error,
                relative_tolerance=c.relative,
                absolute_tolerance=c.absolute,
                passed=c.passed,
            )
            for c in checks
        ],
    )
    documentation = _documentation(source, name, checks, folder / "README.md")
    bioimageio_config = spec.BioimageioConfig(
        reproducibility_tolerance=[
            spec.ReproducibilityTolerance(
                relative_tolerance=rel, absolute_tolerance=abs_ * scale, weights_formats=[fmt]
            )
            for fmt, (rel, abs_) in tolerances.items()
        ],
        architecture_type=card.architecture,
        task="deconvolution",
        modality="fluorescence-light-microscopy",
        model_parameter_count=card.parameters,
        training=spec.TrainingDetails(
            loss_function=card.loss,
            training_epochs=None,
            training_batch_size=source.training.get("resolved", {}).get("batch_size"),
            initial_learning_rate=source.training.get("resolved", {}).get("learning_rate"),
        ),
    )
    descr = spec.ModelDescr(
        name=name,
        description=card.description[:1024],
        authors=[spec.Author(name=a) for a in AUTHORS],
        cite=[spec.CiteEntry(text=c.text, doi=spec.Doi(c.doi)) for c in card.citation if c.doi],
        license=spec.LicenseId(LICENSE),
        documentation=spec.FileDescr(source=documentation),
        covers=[spec.FileDescr(source=cover)],
        attachments=attachments,
        tags=[
            "fluorescence-light-microscopy",
            f"{card.ndim}d",
            "pytorch",
            "image-restoration",
            "deconvolution",
            card.architecture,
        ],
        inputs=[
            spec.InputTensorDescr(
                id=spec.TensorId(INPUT_ID),
                axes=_axes(source, minimum, output=False),
                test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
                sample_tensor=spec.FileDescr(source=folder / "sample_input.tif"),
                preprocessing=_preprocessing(source),
            )
        ],
        outputs=[
            spec.OutputTensorDescr(
                id=spec.TensorId(OUTPUT_ID),
                axes=_axes(source, minimum, output=True),
                test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
                sample_tensor=spec.FileDescr(source=folder / "sample_output.tif"),
            )
        ],
        weights=spec.WeightsDescr(**weights),
        config=spec.Config(
            bioimageio=bioimageio_config, deconv=deconv_config.model_dump(mode="json")
        ),
    )
    return descr, checks


def package_model(
    source: ModelSource,
    output: str | Path,
    name: str | None = None,
    formats: Sequence[str] = WEIGHT_FORMATS,
    reporter: Reporter = SILENT,
) -> tuple[Path, list[Agreement]]:
    """Build, test (bioimageio.core, offline) and only then write the package ``output``."""
    from deconv.exporters.package_checks import bioimageio_test, offline_settings
    from deconv.io import check_output_path, write_atomically

    output = Path(output)
    if output.suffix != ".zip":
        raise DeconvError(f"the package must be a .zip file, got {output}")
    check_output_path(output, image=False)
    offline_settings()
    from bioimageio.spec import save_bioimageio_package

    with tempfile.TemporaryDirectory(prefix="deconv-package-") as tmp:
        folder = Path(tmp) / "files"
        folder.mkdir()
        reporter.info(f"building {source.name} ({', '.join(formats)})")
        descr, checks = build_description(
            source, folder, package_name(name or source.name), formats
        )
        staged = Path(tmp) / "package.zip"
        save_bioimageio_package(descr, output_path=staged)
        reporter.info("testing the package with bioimageio.core")
        passed, problems = bioimageio_test(staged)
        if not passed:
            raise DeconvError(
                "the package failed bioimageio.core's test, nothing was written: "
                + "; ".join(problems[:3])
            )
        write_atomically(output, lambda dst: shutil.copyfile(staged, dst))
    return output, checks
