"""``deconv run`` for one file: read, match the PSF, deconvolve, write atomically.

Everything that can be checked before computing is checked first (output writable and not the
input, PSF usable and of the image's dimensionality, pixels finite), so a bad call fails in
a second with one line instead of after minutes of work. The whole image is processed in
memory; tiled and out-of-core execution builds on this path in :mod:`deconv.runtime`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from deconv import zoo
from deconv.errors import DeconvError
from deconv.io import (
    OutputDType,
    check_output_path,
    image_format,
    read_image,
    to_output_dtype,
    write_image,
)
from deconv.psf import load_psf, psf_for_image, same_voxel_size
from deconv.reporter import SILENT, Reporter
from deconv.richardson_lucy import RLConfig, check_dimensions
from deconv.rl_transforms import Engine
from deconv.zoo.card import PercentilePair

# "auto" background: this low percentile of the image. Camera offsets dominate the darkest
# voxels of fluorescence images; a percentile is robust to hot and dead pixels.
AUTO_BACKGROUND_PERCENTILE = 0.5


class RunOptions(BaseModel):
    """What ``deconv run`` was asked to do, recorded in the output's metadata."""

    model_config = ConfigDict(extra="forbid")

    model: str = "rl"
    rl: RLConfig = Field(default_factory=RLConfig)
    fft: Engine = Field("auto", description="RL's FFT engine: auto, scipy, fftw or torch")
    background: float | Literal["auto"] = 0.0
    stack: bool = False
    voxel_size: tuple[float, ...] | None = None
    psf_voxel_size: tuple[float, ...] | None = None
    device: str = "auto"
    output_dtype: OutputDType = "float32"
    uint16_scale: float | None = Field(None, gt=0)
    key: str | None = None
    backend: str = "auto"
    precision: str | None = Field(None, description="fp32, fp16 or bf16; default per device")
    tile: tuple[int, ...] | None = Field(None, description="tile core size; default ~4 Mvoxel")
    batch_size: int = Field(1, ge=1, description="tiles per batch")
    blend: Literal["cosine", "linear"] = "cosine"
    tta: bool = Field(False, description="networks: average over the flips the PSF allows")
    rl_consensus: int | None = Field(
        None, ge=1, description="networks: mean with this many RL iterations (model's PSF)"
    )
    rl_refine: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        None,
        description="networks: this many RL iterations started from the output ('auto': "
        "the count the shipped weights record)",
    )
    dask: str | None = Field(None, description="local:N or a scheduler address (Zarr output)")
    percentiles: PercentilePair | None = Field(
        None, description="networks: normalise the input by these instead of the model's"
    )
    match_floor: bool = Field(
        True,
        description="networks: scale a sparse image down until its dark floor matches the "
        "training data's (deconv.normalization); False: percentiles only",
    )


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeconvError(f"device {device!r} requested but no CUDA GPU is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise DeconvError(f"unknown device {device!r} (use auto, cpu or cuda)") from None


def deconvolve_file(
    input_path: str | Path,
    output_path: str | Path,
    psf_path: str | Path | None,
    options: RunOptions | None = None,
    reporter: Reporter = SILENT,
) -> dict:
    """Deconvolve ``input_path`` into ``output_path``; returns a summary of what was done.

    ``rl`` needs a PSF; a trained network (``name.tag``) carries its own PSF metadata and
    takes no PSF file.
    """
    options = options or RunOptions()
    input_path, output_path = Path(input_path), Path(output_path)
    source = None
    if options.model == "rl":
        if psf_path is None:
            raise DeconvError("the rl model needs a PSF: pass --psf PSF.tif")
        if options.percentiles is not None:
            raise DeconvError("--percentiles sets how a network's input is normalised; RL "
                              "works on the raw counts")  # fmt: skip
    else:
        source = _network_source(options.model)
        normalization = source.normalization.with_percentiles(
            options.percentiles, repr(options.model)
        )
        if not options.match_floor:
            normalization = normalization.percentiles_only()
        source = dataclasses.replace(source, normalization=normalization)
    check_output_path(output_path, [input_path] + ([psf_path] if psf_path else []))
    streamed = image_format(output_path) == "zarr" and not options.stack
    _check_rl_hybrid(source, options, streamed)
    if source is None and streamed and options.output_dtype == "float32":
        return _stream_rl(input_path, output_path, psf_path, options, reporter)
    streamed = streamed and source is not None
    if options.dask and not (streamed and options.output_dtype == "float32"):
        raise DeconvError(
            "--dask runs trained networks into a .zarr output (float32, no --stack); "
            f"got model {options.model!r} -> {output_path.name}"
        )
    if streamed and options.output_dtype == "float32":
        return _stream_network(input_path, output_path, source, options, reporter)
    image = read_image(input_path, key=options.key)
    data = np.asarray(image.data[...], dtype=np.float32)
    voxel_size = options.voxel_size or image.voxel_size
    if not np.all(np.isfinite(data)):
        raise DeconvError(f"{input_path}: the image contains NaN or Inf values")
    device = resolve_device(options.device)
    if options.model == "rl":
        result, record = _run_rl(data, voxel_size, psf_path, options, device, reporter)
    else:
        result, record = _run_network(data, voxel_size, source, options, device, reporter)

    out, scale = to_output_dtype(result, options.output_dtype, options.uint16_scale)
    if options.output_dtype == "uint16":
        reporter.info(f"uint16 output: stored value = intensity x {scale:.6g}")
    extra = {**record, "deconv.uint16_scale": scale, "deconv.source": str(input_path)}
    write_image(output_path, out, voxel_size=voxel_size, extra=extra)
    return {
        "output": str(output_path),
        "shape": list(result.shape),
        "uint16_scale": scale,
        "device": str(device),
    }


def _run_rl(data, voxel_size, psf_path, options: RunOptions, device, reporter):
    psf = load_psf(psf_path, voxel_size=options.psf_voxel_size)
    check_dimensions(data.shape, psf.data.shape, options.stack, fit=False)
    psf = psf_for_image(psf, _spatial(voxel_size, psf.ndim), notify=reporter.info)
    check_dimensions(data.shape, psf.data.shape, options.stack)
    config = _rl_config(data, options, options.rl.iterations, reporter)
    result = _richardson_lucy(data, psf, config, options, device, reporter)
    record = {
        "deconv.run": options.model_copy(update={"rl": config}).model_dump(mode="json"),
        "deconv.psf": psf.metadata.model_dump(mode="json"),
    }
    return result, record


def _rl_config(data, options: RunOptions, iterations: int, reporter) -> RLConfig:
    """The RL options with the background resolved (``auto``: a low percentile of ``data``)."""
    background = options.background
    if background == "auto":
        background = float(np.percentile(data, AUTO_BACKGROUND_PERCENTILE))
        reporter.info(f"background (auto, {AUTO_BACKGROUND_PERCENTILE} percentile): {background:g}")
    return options.rl.model_copy(update={"background": float(background), "iterations": iterations})


def _richardson_lucy(
    data, psf, config: RLConfig, options: RunOptions, device, reporter, starts=None
):
    """RL on one image, or on each image of a ``--stack``, with a progress bar; ``starts``,
    one per image, replace RL's flat starting estimates."""
    model = zoo.create_model("rl", psf=psf.data, config=config, device=device, fft=options.fft)
    images = data if options.stack else data[None]
    result = np.empty(images.shape, dtype=np.float32)
    with reporter.progress(config.iterations * len(images), "Richardson-Lucy") as advance:
        for i, item in enumerate(images):
            start = None if starts is None else starts[i]
            result[i] = model(item, callback=lambda _k: advance(1), start=start).cpu().numpy()
    return result if options.stack else result[0]


def _check_network_input(shape, source, options: RunOptions, voxel_size, reporter) -> None:
    card = source.card
    expected = card.ndim + (1 if options.stack else 0)
    if len(shape) != expected:
        hint = "; pass --stack for a stack of 2D images" if len(shape) == card.ndim + 1 else ""
        raise DeconvError(
            f"{options.model} is a {card.ndim}D model but the input has shape {tuple(shape)}{hint}"
        )
    spatial_shape = tuple(shape)[-card.ndim :]
    if any(n < m for n, m in zip(spatial_shape, card.min_size)):
        reporter.info(
            f"the input {spatial_shape} is smaller than {options.model}'s minimum size "
            f"{tuple(card.min_size)}: it is mirror-padded for the network and cropped back"
        )
    if options.tile is not None and len(options.tile) != card.ndim:
        raise DeconvError(f"--tile needs {card.ndim} sizes for {options.model}, got {options.tile}")
    if options.tta:  # before any work: the model must say which flips are allowed
        from deconv.runtime.flip_averaging import tta_flips

        tta_flips(source)
    if source.psf is not None:
        trained = source.psf.voxel_size
        spatial = _spatial(voxel_size, card.ndim)
        if spatial is not None and not same_voxel_size(spatial, trained):
            reporter.info(
                f"{options.model} was trained for voxels {tuple(trained)} µm but the image has "
                f"{tuple(spatial)} µm; results may be worse (train a model for this sampling)"
            )


def _rl_hybrid(options: RunOptions, source) -> tuple[str, int] | None:
    """Which network-and-RL hybrid was asked for, as (flag, RL iterations)."""
    if options.rl_consensus and options.rl_refine:
        raise DeconvError("--rl-consensus and --rl-refine are two ways of combining a network "
                          "with RL: pick one")  # fmt: skip
    if options.rl_consensus:
        return "--rl-consensus", options.rl_consensus
    if options.rl_refine == "auto":
        if source is None or source.rl_refine is None:
            raise DeconvError(
                f"--rl-refine auto takes the count recorded with shipped weights, and "
                f"{options.model} records none: give a number"
            )
        return "--rl-refine", source.rl_refine
    if options.rl_refine:
        return "--rl-refine", options.rl_refine
    return None


def _check_rl_hybrid(source, options: RunOptions, streamed: bool) -> None:
    flag = "--rl-refine" if options.rl_refine else "--rl-consensus"
    if source is None and (options.rl_refine or options.rl_consensus):
        raise DeconvError(f"{flag} combines a trained network with RL; --model rl is "
                          "RL alone: pick a network with --model")  # fmt: skip
    if _rl_hybrid(options, source) is None:
        return
    if source.psf is None:
        raise DeconvError(f"{flag} runs RL with the model's PSF, and {options.model} "
                          "carries none")  # fmt: skip
    if streamed or options.dask:
        raise DeconvError(f"{flag} fits the network to the data over the whole image, which "
                          "needs it in memory: write a .tif output, without --dask")  # fmt: skip


def _stream_network(input_path: Path, output_path: Path, source, options: RunOptions, reporter):
    """Out-of-core: lazy input, tiles written into an OME-Zarr as they finish, resumable."""
    from deconv.runtime.backends import make_backend
    from deconv.runtime.streaming import deconvolve_to_zarr

    image = read_image(input_path, key=options.key, lazy=True)
    voxel_size = options.voxel_size or image.voxel_size
    _check_network_input(image.data.shape, source, options, voxel_size, reporter)
    if source.card.tiling != "exact":
        raise DeconvError(
            f"{options.model} pools over whole tiles (tiling=blend), which needs the volume in "
            "memory: write a .tif output, or use a model with exact tiling for Zarr streaming"
        )
    record = _network_record(source, options)
    extra = {**record, "deconv.source": str(input_path)}
    if options.dask:
        from deconv.runtime.distributed import connect, deconvolve_on_dask

        client = connect(options.dask, reporter)
        try:
            info = deconvolve_on_dask(client, input_path, options.key, image.data, output_path,
                                      source, options.model, options, voxel_size, extra,
                                      reporter)  # fmt: skip
        finally:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
        return {"output": str(output_path), "shape": list(image.data.shape),
                "uint16_scale": None, "device": "dask", **info}  # fmt: skip
    device = resolve_device(options.device)
    backend = make_backend(source, options.backend, device, options.precision, low_memory=True,
                           tta=options.tta)  # fmt: skip
    reporter.info(f"backend: {backend.describe()}")
    signature_options = options.model_dump(mode="json", exclude={"rl", "device", "backend"})
    from deconv.runtime.backend_onnx import weights_digest

    info = deconvolve_to_zarr(
        image.data, input_path, output_path, source.card, backend, source.normalization,
        weights_digest(source.model), voxel_size, extra, core=options.tile,
        batch_size=options.batch_size, options=signature_options, reporter=reporter,
    )  # fmt: skip
    return {"output": str(output_path), "shape": list(image.data.shape), "uint16_scale": None,
            "device": str(device), **info}  # fmt: skip


def _stream_rl(input_path: Path, output_path: Path, psf_path, options: RunOptions, reporter):
    """RL on a volume larger than memory: tiles with a halo of one PSF size per side.

    RL is not local (every iteration spreads influence by the PSF again), so tiles are not
    exact; a halo of one PSF size, the non-circulant edges of each window and a common
    starting level keep the cores within ~0.5% of the peak (0.2% on average) of a
    whole-volume run after 10 iterations (tests/test_streaming.py). Half a PSF gave 7%.
    """
    import hashlib

    from deconv.runtime.streaming import deconvolve_to_zarr, subsample
    from deconv.zoo.card import ModelCard, Normalization

    image = read_image(input_path, key=options.key, lazy=True)
    voxel_size = options.voxel_size or image.voxel_size
    psf = load_psf(psf_path, voxel_size=options.psf_voxel_size)
    check_dimensions(image.data.shape, psf.data.shape, False, fit=False)
    psf = psf_for_image(psf, _spatial(voxel_size, psf.ndim), notify=reporter.info)
    check_dimensions(image.data.shape, psf.data.shape, False)
    background = options.background
    if background == "auto":
        background = float(np.percentile(subsample(image.data), AUTO_BACKGROUND_PERCENTILE))
        reporter.info(f"background (auto, {AUTO_BACKGROUND_PERCENTILE} percentile): {background:g}")
    config = options.rl.model_copy(update={"background": float(background)})
    if config.init is None:  # every tile starts where a whole-volume run starts
        level = float(np.mean(subsample(image.data))) - float(background)
        config = config.model_copy(update={"init": max(level, 1e-6)})
    device = resolve_device(options.device)
    model = zoo.create_model("rl", psf=psf.data, config=config, device=device, fft=options.fft)
    ndim = psf.ndim
    card = ModelCard(
        name="rl", architecture="rl", description="tiled Richardson-Lucy", ndim=ndim,
        trainable=False, min_size=psf.data.shape, step=(1,) * ndim,
        halo=tuple(psf.data.shape), normalization=Normalization(kind="none"),
        loss="", citation=[],
    )  # fmt: skip

    def backend(batch: np.ndarray) -> np.ndarray:
        return model(batch[:, 0]).cpu().numpy()[:, None]

    identity = hashlib.sha256(psf.data.tobytes() + config.model_dump_json().encode()).hexdigest()
    record = {
        "deconv.run": options.model_copy(update={"rl": config}).model_dump(mode="json"),
        "deconv.psf": psf.metadata.model_dump(mode="json"),
        "deconv.source": str(input_path),
    }
    signature_options = options.model_dump(mode="json", exclude={"device", "backend"})
    info = deconvolve_to_zarr(
        image.data, input_path, output_path, card, backend, None, identity, voxel_size,
        record, core=options.tile, options=signature_options, reporter=reporter,
    )  # fmt: skip
    return {"output": str(output_path), "shape": list(image.data.shape), "uint16_scale": None,
            "device": str(device), **info}  # fmt: skip


def _network_record(source, options: RunOptions) -> dict:
    return {
        "deconv.run": options.model_dump(mode="json", exclude={"rl"}),
        "deconv.psf": source.psf.metadata.model_dump(mode="json") if source.psf else None,
        "deconv.model": {"name": options.model, "origin": source.origin},
    }


def _network_source(model: str):
    """A pretrained name, run directory or package; bare architecture names are refused."""
    from deconv.exporters.sources import resolve_source

    if model in zoo.list_models():
        tags = ", ".join(zoo.list_models(f"{model}.*", pretrained=True)) or "none yet"
        raise DeconvError(
            f"model {model!r} has no trained weights; use a pretrained name "
            f"(available: {tags}), a run directory or a package, or train one with deconv train"
        )
    if not Path(model).exists():
        zoo.get_model_card(model)  # unknown architecture or tag: the error lists the names
    return resolve_source(model)


def _run_network(data, voxel_size, source, options: RunOptions, device, reporter):
    """Normalise globally (never per tile), predict tile by tile, map back to the input range.

    The network works in normalised units; its output is mapped back with the input's own
    percentiles so the result reads in roughly the input's intensity scale.
    """
    from deconv.normalization import input_range, report_floor_matching
    from deconv.runtime.backends import make_backend
    from deconv.runtime.tiling import predict_blended, predict_tiled

    card = source.card
    _check_network_input(data.shape, source, options, voxel_size, reporter)
    hybrid_psf = None
    if _rl_hybrid(options, source):  # before the network runs: the image must suit RL with this PSF
        hybrid_psf = psf_for_image(source.psf, _spatial(voxel_size, card.ndim),
                                   notify=reporter.info)  # fmt: skip
        check_dimensions(data.shape, hybrid_psf.data.shape, options.stack)
    backend = make_backend(source, options.backend, device, options.precision, tta=options.tta)
    reporter.info(f"backend: {backend.describe()}")
    images = data if options.stack else data[None]
    result = np.empty(images.shape, dtype=np.float32)
    gains: list[float] = []
    with reporter.progress(len(images), options.model) as advance:
        for i, item in enumerate(images):
            lo, hi, gain = input_range(item, source.normalization)
            gains.append(gain)
            scale = max(hi - lo, 1e-6)

            def normalise(window, lo=lo, scale=scale):
                return (window - lo) / scale

            if card.tiling == "exact":
                y = predict_tiled(backend, item, card, core=options.tile,
                                  batch_size=options.batch_size, transform=normalise)  # fmt: skip
            else:
                default = (64, 256, 256)[-card.ndim :]
                tile = options.tile or tuple(min(s, t) for s, t in zip(item.shape, default))
                overlap = tuple(max(8, t // 8) for t in tile)
                y = predict_blended(backend, item, card, tile, overlap, options.blend,
                                    transform=normalise)  # fmt: skip
            result[i] = y * scale + lo
            advance(1)
    report_floor_matching(gains, reporter)
    result = result if options.stack else result[0]
    record = _network_record(source, options)
    if hybrid_psf is not None:
        result, config = _with_rl(data, result, hybrid_psf, source, options, device, reporter)
        record["deconv.run"]["rl"] = config.model_dump(mode="json")
        if options.rl_refine:  # the count that ran, also for 'auto'
            record["deconv.run"]["rl_refine"] = config.iterations
    return result, record


def _with_rl(data, network, psf, source, options: RunOptions, device, reporter):
    """The hybrids, per image, with RL on the model's own PSF: ``--rl-consensus`` (the mean
    of the network and RL) or ``--rl-refine`` (RL started from the network's output)."""
    from deconv.runtime.rl_consensus import rl_consensus
    from deconv.runtime.rl_refine import fit_start

    flag, iterations = _rl_hybrid(options, source)
    config = _rl_config(data, options, iterations, reporter)
    images, outputs = (data, network) if options.stack else (data[None], network[None])
    starts = None
    if flag == "--rl-refine":
        starts = [fit_start(n, d, psf.data, config.background) for n, d in zip(outputs, images)]
    rl = _richardson_lucy(data, psf, config, options, device, reporter, starts)
    if flag == "--rl-consensus":
        rl = np.stack([rl_consensus(n, r) for n, r in zip(outputs, rl if options.stack else [rl])])
        rl = rl if options.stack else rl[0]
    return rl, config


def _spatial(voxel_size: Sequence[float] | None, ndim: int) -> tuple[float, ...] | None:
    if voxel_size is None or len(voxel_size) < ndim:
        return None
    return tuple(voxel_size[-ndim:])
