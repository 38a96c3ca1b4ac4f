"""``deconv train``: fit a zoo network to synthetic pairs from a PSF or to paired TIFFs.

Each architecture brings its own loss and published schedule (:class:`ModelSpec`); this
loop adds what every run needs: deterministic data, Adam with step decay, validation PSNR
and SSIM on held-out pairs, atomic ``last``/``best`` checkpoints, exact resumption, a
training curve, and mixed precision on CUDA.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from deconv.errors import DeconvError
from deconv.metrics import evaluate
from deconv.normalization import reference_floor
from deconv.psf import load_psf, save_psf, symmetric_axes
from deconv.reporter import SILENT, Reporter
from deconv.synth import STRUCTURE_CLASSES, SynthConfig
from deconv.training.data import (
    REFRESH_EVERY,
    DataDescription,
    PatchSource,
    SyntheticPool,
    load_pairs,
    paired_files,
    synthetic_validation,
)
from deconv.training.run_dir import RunDirectory
from deconv.zoo import get_model_card, get_model_spec
from deconv.zoo.card import ModelCard, PercentilePair, TrainingDefaults


class TrainConfig(BaseModel):
    """A training run as asked for; unset values come from the architecture's defaults."""

    model_config = ConfigDict(extra="forbid")

    model: str
    model_overrides: dict[str, Any] = Field(default_factory=dict)
    steps: int = Field(1000, ge=1)
    batch_size: int | None = Field(None, ge=1)
    patch: tuple[int, ...] | None = None
    learning_rate: float | None = Field(None, gt=0)
    seed: int = 0
    device: str = "auto"
    val_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    psf: str | None = None
    data: str | None = None
    volume_shape: tuple[int, ...] | None = None
    pool_size: int = Field(8, ge=1)
    refresh_every: int = Field(REFRESH_EVERY, ge=1)
    """Synthetic training: steps between replacing one pool volume by a newly drawn one.
    Drawing costs ~0.04 s for a 256^2 image and ~0.3 s for a 64x128x128 volume, so 2D runs
    can afford fresh data every step (every sample seen about once, as the paper's
    generator-backed training intends); 50 was chosen for 3D on a CPU."""
    train_structures: tuple[str, ...] = STRUCTURE_CLASSES
    validation_structures: tuple[str, ...] | None = None
    validation_count: int = Field(2, ge=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    """Validate, keep and ship an exponential moving average of the weights (and BatchNorm
    statistics) with this decay per step: small batches make single checkpoints of RLN swing
    by a dB or more between validations; the average does not."""
    photon_scale: tuple[float, float] | None = None
    """Synthetic training: draw each volume's photons per unit of truth log-uniformly in
    [LO, HI] instead of the generator's fixed value, so the network must read the noise level
    from the data; normalised intensities say nothing about photon counts. Validation keeps
    the generator's value."""
    intensity_scale: tuple[float, float] = (1.0, 1.0)
    """Random factor range (log-uniform) applied to each training patch and its truth alike:
    normalised test data are not always as bright as the training data."""
    flips: Literal["symmetric", "all"] = "symmetric"
    """Random flips of training patches. ``symmetric``: only along the axes the PSF is
    mirror-symmetric about (:func:`deconv.psf.symmetric_axes`; paired data, which come
    without a PSF: the lateral axes, since real PSFs are rarely symmetric along z). A flip
    along another axis pairs the data with the mirrored PSF, which the microscope does not
    have, so the network has to learn two PSFs and tell them apart (the shipped 3D network,
    trained that way, scores 0.3 dB lower on data imaged through the mirrored PSF; a
    fine-tune without the z flips did not gain on held-out data, benchmarks/quality-log.md
    session 32, so this is the physically right default rather than a measured gain). ``all``: every
    axis, what runs made before this option did (and what resuming one of them keeps)."""
    noise: Literal["fresh", "fixed"] = "fresh"
    """Synthetic training: ``fresh`` draws new Poisson and read noise for every patch from
    the pool volume's noise-free image, ``fixed`` crops the volume's one noisy realization
    (what runs made before this option did, and what resuming one of them keeps). Fresh is
    the default because it held held-out quality where fixed lost some: the same 1,500-step
    fine-tune of the shipped 3D network scored 32.44 / 32.41 / 32.42 dB on held-out shells
    at steps 500 / 750 / 1,500 with fresh noise, 32.24 / 32.24 / 32.35 with fixed
    (benchmarks/quality-log.md, session 33). Paired data have the noise they were recorded with, so
    this does not apply to them."""
    lr_schedule: Literal["step", "cosine"] = "step"
    """``step``: the architecture's published step decay. ``cosine``: half a cosine from the
    rate down to 1% of it at the last step. Published schedules were made for runs of 10^5
    steps; a run of a few thousand steps on a CPU ends with the rate still near its start,
    and RLN's validation then swings by 1-3 dB between checkpoints. Resuming with more
    ``--steps`` stretches the cosine over the new total."""
    precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Arithmetic of the training step's forward pass and loss (weights, optimiser state and
    validation stay float32). ``auto``: float16 autocast with loss scaling on CUDA, float32
    on a CPU. ``bfloat16``: bfloat16 autocast on either, no loss scaling needed. On the
    2-core AVX512-BF16 machines here an RLN-3D step runs 1.34x faster, but a 2D A/B learned
    less per step (-0.17 dB validation after 6,000 steps), about what the extra steps buy
    back, so float32 stays the CPU default (BENCHMARKS.md); CPUs with AMX gain more."""
    percentiles: PercentilePair | None = None
    """The (low, high) percentiles that normalise each raw image, instead of the model's
    own (RLN: 0.01, 99.8); recorded in the run and used wherever its weights run. A high
    percentile of 99.8 sits on a dense sample's brightest objects but inside a sparse
    sample's blur or background, so sparse samples reach the network several times brighter
    than training ones; 99.99 keeps them alike (benchmarks/quality-log.md, session 36)."""
    init_weights: str | None = None
    """Start from these weights instead of random ones (fine-tuning): a pretrained name
    (``rln3d.widefield-synthetic``) or a run directory (its best checkpoint)."""

    @field_validator("intensity_scale", "photon_scale")
    @classmethod
    def _scale_range(
        cls, value: tuple[float, float] | None, info: ValidationInfo
    ) -> tuple[float, float] | None:
        if value is not None and not 0 < value[0] <= value[1]:
            raise ValueError(f"{info.field_name} needs 0 < LO <= HI, got {value}")
        return value


def _recorded_config(run: RunDirectory) -> TrainConfig:
    """A run's training config as recorded, with the run's own copy of its PSF."""
    recorded = run.read_json("run.json")["train"]
    recorded.setdefault("flips", "all")  # runs recorded before the option flipped every axis
    recorded.setdefault("noise", "fixed")  # ... and had one noise draw per pool volume
    config = TrainConfig.model_validate(recorded)
    if config.psf is not None and (run.path / "psf.tif").exists():
        config = config.model_copy(update={"psf": str(run.path / "psf.tif")})  # runs can move
    return config


def run_reference_floor(run_path: str | Path) -> float:
    """The reference floor of a run's training data (its first pool and its validation
    inputs, rebuilt from the record), for runs recorded before floor matching existed."""
    run = RunDirectory(run_path)
    meta = run.read_json("run.json")
    config = _recorded_config(run)
    card = ModelCard.model_validate(meta["card"])
    source, validation, _, _ = _data(config, card, meta["resolved"], card.ndim)
    return _data_floor(source, validation)


def _data_floor(source, validation) -> float:
    """The reference floor of a run's training inputs: its pool (as first drawn) and its
    validation images, both normalised as the network sees them."""
    return reference_floor([raw for raw, _ in [*source.pairs, *validation]])


def _device(name: str) -> torch.device:
    from deconv.runtime.run import resolve_device

    return resolve_device(name)


def _resolved(config: TrainConfig, defaults: TrainingDefaults, ndim: int) -> dict[str, Any]:
    patch = tuple(config.patch or defaults.patch)
    if len(patch) != ndim:
        raise DeconvError(f"--patch needs {ndim} sizes for a {ndim}D model, got {patch}")
    volume = config.volume_shape or tuple(min(max(2 * p, 64), 256) for p in patch)
    return {
        "patch": patch,
        "volume_shape": tuple(volume),
        "batch_size": config.batch_size or defaults.batch_size,
        "learning_rate": config.learning_rate or defaults.learning_rate,
        "decay_rate": defaults.decay_rate,
        "decay_every": defaults.decay_every,
    }


def train(
    config: TrainConfig,
    run_path: str | Path,
    reporter: Reporter = SILENT,
    resume: bool = False,
    time_limit: float | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run in ``run_path``; returns the final validation metrics.

    ``time_limit`` (seconds of this call) stops the run cleanly after the step that reaches
    it, with a ``last`` checkpoint at that step, so work with a hard wall-clock budget (a
    lent GPU, a batch-queue slot, a session) ends resumable instead of killed; the result
    then has ``"stopped": True``. Resuming gives the same weights as an uninterrupted run.
    """
    invoked = time.perf_counter()
    run = RunDirectory(run_path)
    if resume:
        stored = _recorded_config(run)
        if stored.model != config.model:
            raise DeconvError(
                f"{run.path} trained {stored.model!r}; it cannot be resumed as {config.model!r}"
            )
        config = stored.model_copy(update={"steps": max(config.steps, stored.steps)})
    if (config.psf is None) == (config.data is None):
        raise DeconvError("give exactly one of --psf (synthetic training) or --data (pairs)")
    spec = get_model_spec(config.model)
    card = get_model_card(config.model, config.model_overrides)
    if not card.trainable or card.ndim is None:
        raise DeconvError(f"model {config.model!r} has no trainable weights")
    normalization = card.normalization.with_percentiles(config.percentiles, repr(config.model))
    card = card.model_copy(update={"normalization": normalization})
    ndim = card.ndim
    settings = _resolved(config, spec.training or TrainingDefaults(patch=(32,) * ndim), ndim)
    device = _device(config.device)

    torch.manual_seed(config.seed)
    model = spec.build(**config.model_overrides)
    if config.init_weights and not resume:
        _load_initial_weights(model, config.init_weights, spec.grow)
    layout = training_memory_format(device, ndim)
    model = model.to(device, memory_format=layout)
    objective = spec.objective or _mse_objective
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["learning_rate"])
    scheduler = _scheduler(optimizer, config, settings)
    ema = None
    if config.ema_decay:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
        )
    amp_dtype = autocast_dtype(config.precision, device)
    use_scaler = amp_dtype == torch.float16  # bfloat16 has float32's range: nothing to scale
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    source, validation, description, psf = _data(config, card, settings, ndim)
    if card.normalization.kind == "percentile":
        floor = _data_floor(source, validation)
        normalization = card.normalization.model_copy(update={"reference_floor": floor})
        card = card.model_copy(update={"normalization": normalization})
    start, best, elapsed = 0, -float("inf"), 0.0
    if resume:
        run.remove_partial_files()
        state = run.load_checkpoint("last")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if use_scaler and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
            ema.n_averaged.fill_(int(state["ema_averaged"]))
        start, best = int(state["step"]), float(state["best_psnr"])
        run.truncate_metrics(start)
        elapsed = _elapsed_at_checkpoint(state, run)
        reporter.info(f"resuming {run.path} at step {start} of {config.steps}")
    else:
        run.create()
        run.write_json(
            "run.json",
            {
                "train": config.model_dump(mode="json"),
                "resolved": settings,
                "model_config": model.config.model_dump(mode="json"),
                "card": card.model_dump(mode="json"),
            },
        )
        run.write_json("data.json", description.model_dump(mode="json"))
        run.write_json("normalization.json", card.normalization.model_dump(mode="json"))
        if psf is not None:
            save_psf(psf, run.path / "psf.tif")
            run.write_json("psf.json", psf.metadata.model_dump(mode="json"))

    last_metrics: dict[str, Any] = {}
    started = time.perf_counter() - elapsed  # "seconds" in metrics: the run's whole time
    with reporter.progress(config.steps - start, f"training {config.model}") as bar:
        for step in range(start, config.steps):
            model.train()
            raw, gt = source.batch(step, settings["batch_size"], config.seed)
            raw = raw.to(device, memory_format=layout)
            gt = gt.to(device, memory_format=layout)
            optimizer.zero_grad(set_to_none=True)
            with step_autocast(device, amp_dtype):
                loss = objective(model, raw, gt)
            if not torch.isfinite(loss):
                raise DeconvError(f"the loss became {loss.item()} at step {step + 1}; lower --lr")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            done = step + 1
            bar(1)
            bar.status(f"loss {loss.item():.4f}  PSNR {last_metrics.get('psnr', float('nan')):.2f}")
            if done % config.val_every == 0 or done == config.steps:
                last_metrics = validation_scores(
                    ema.module if ema else model, card, validation, device
                )
                record = {
                    "step": done,
                    "loss": float(loss.item()),
                    "learning_rate": scheduler.get_last_lr()[0],
                    "seconds": time.perf_counter() - started,
                    **last_metrics,
                }
                run.append_metrics(record)
                _write_curve(run)  # current after every validation, also for stopped runs
                if last_metrics["psnr"] > best:
                    best = last_metrics["psnr"]
                    state = _state(model, optimizer, scheduler, scaler, done, best, ema)
                    run.save_checkpoint("best", {**state, "seconds": time.perf_counter() - started})
            out_of_time = time_limit is not None and time.perf_counter() - invoked >= time_limit
            if done % config.checkpoint_every == 0 or done == config.steps or out_of_time:
                state = _state(model, optimizer, scheduler, scaler, done, best, ema)
                run.save_checkpoint("last", {**state, "seconds": time.perf_counter() - started})
            if out_of_time and done < config.steps:
                return {"step": done, "steps": config.steps, "best_psnr": best, "stopped": True,
                        **last_metrics}  # fmt: skip
    return {"step": config.steps, "best_psnr": best, **last_metrics}


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype a training step autocasts to; float32 means no autocast."""
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda":
        return torch.float16
    return torch.float32


def step_autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """The autocast region of one training step (off for float32); the CPU bench uses it too."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def training_memory_format(device: torch.device, ndim: int) -> torch.memory_format:
    """Channels-last for 3D training on CPUs, the default layout otherwise.

    oneDNN's 3D convolutions with RLN's 1-16 channels run forward and backward about twice as
    fast on channels-last tensors; BatchNorm and softplus lose part of that, so a whole RLN-3D
    step gains 1.35x on one thread and 1.05-1.16x on two (BENCHMARKS.md). 2D steps measured
    equal, and CUDA was never measured here, so both keep the default. Weights agree to
    float32 rounding (within 1e-4 after 4 steps; tested); checkpoints load into either layout.
    """
    if device.type == "cpu" and ndim == 3:
        return torch.channels_last_3d
    return torch.contiguous_format


COSINE_FLOOR = 0.01


def _scheduler(optimizer, config: TrainConfig, settings: dict[str, Any]):
    if config.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=settings["decay_every"], gamma=settings["decay_rate"]
        )
    total = config.steps

    def cosine(step: int) -> float:
        progress = min(step, total) / total
        # plain floats: numpy scalars in the scheduler state would not load with weights_only
        return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)


def _load_initial_weights(
    model: torch.nn.Module, source: str, grow: Callable[[dict, dict, dict], dict] | None = None
) -> None:
    """Copy weights from a pretrained name or a run directory; shapes must match exactly,
    unless the architecture can grow them into this (larger) config (``ModelSpec.grow``)."""
    from deconv.zoo.pretrained import list_pretrained, load_pretrained

    if source in list_pretrained():
        network, record = load_pretrained(source)
        state, source_config = network.state_dict(), record.config
    elif (Path(source) / "checkpoints").is_dir():
        run = RunDirectory(source)
        state = run.inference_weights("best")
        source_config = run.read_json("run.json").get("model_config")
    else:
        raise DeconvError(
            f"--init-weights {source!r} is neither a pretrained name "
            f"({', '.join(list_pretrained())}) nor a run directory"
        )
    target = model.state_dict()
    resized = any(k in target and target[k].shape != v.shape for k, v in state.items())
    resized = resized or not set(target) <= set(state)  # e.g. a plain RLN made equivariant
    if resized and grow is not None and source_config is not None:
        try:
            state = grow(state, source_config, model.config.model_dump())
        except DeconvError as error:
            raise DeconvError(
                f"--init-weights {source!r} does not fit this model: {error}"
            ) from None
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[-1].strip()
        raise DeconvError(f"--init-weights {source!r} does not fit this model: {first}") from None


def _mse_objective(model, raw, target):
    return torch.nn.functional.mse_loss(model(raw), target)


def _elapsed_at_checkpoint(state: dict[str, Any], run: RunDirectory) -> float:
    """Training seconds before ``state`` was saved, so a resumed run's clock goes on.

    Checkpoints written before this was recorded fall back to the last validation's time.
    Time lost to a kill after the checkpoint is not counted: those steps are trained again.
    """
    if "seconds" in state:
        return float(state["seconds"])
    records = run.metrics(until_step=int(state["step"]))
    return float(records[-1].get("seconds", 0.0)) if records else 0.0


def _state(model, optimizer, scheduler, scaler, step: int, best: float, ema=None) -> dict:
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "best_psnr": best,
    }
    if ema is not None:
        state["ema"] = ema.module.state_dict()
        state["ema_averaged"] = int(ema.n_averaged)
    return state


def _flip_axes(flips: str, ndim: int, psf: np.ndarray | None) -> tuple[int, ...]:
    """The axes training patches may be flipped along (see ``TrainConfig.flips``)."""
    if flips == "all":
        return tuple(range(ndim))
    if psf is None:
        return tuple(range(ndim - 2, ndim))
    return symmetric_axes(psf)


def _check_built_in_flips(config: TrainConfig, psf: np.ndarray) -> None:
    """A network made equivariant to a flip (an RLN's ``flip_axes``) is right only if the
    imaging is: the PSF must be mirror-symmetric along each of those axes."""
    symmetric = symmetric_axes(psf)
    wrong = sorted(set(config.model_overrides.get("flip_axes", ())) - set(symmetric))
    if wrong:
        raise DeconvError(
            f"flip_axes {wrong}: the PSF {config.psf} is not mirror-symmetric along "
            f"{'this axis' if len(wrong) == 1 else 'these axes'}, so a network equivariant to "
            f"those flips would be wrong by construction; it is symmetric along {list(symmetric)}"
        )


def _data(config: TrainConfig, card, settings, ndim: int):
    """The training source, the validation pairs and their description."""
    norm = card.normalization
    if config.psf is not None:
        psf = load_psf(config.psf)
        if psf.ndim != ndim:
            raise DeconvError(
                f"model {config.model!r} is {ndim}D but the PSF {config.psf} is {psf.ndim}D"
            )
        synth = SynthConfig(structures=config.train_structures)
        flip_axes = _flip_axes(config.flips, ndim, psf.data)
        _check_built_in_flips(config, psf.data)
        source = SyntheticPool(
            psf.data, settings["volume_shape"], settings["patch"], norm, config.seed,
            config.pool_size, synth, config.intensity_scale,
            refresh_every=config.refresh_every, photon_scale=config.photon_scale,
            flip_axes=flip_axes, fresh_noise=config.noise == "fresh",
        )  # fmt: skip
        # the held-out class of a benchmark must not choose checkpoints: validation draws
        # the training classes unless told otherwise
        validation_classes = config.validation_structures or config.train_structures
        validation = synthetic_validation(
            psf.data, settings["volume_shape"], norm, config.seed, config.validation_count,
            validation_classes,
        )  # fmt: skip
        description = DataDescription(
            kind="synthetic",
            volume_shape=settings["volume_shape"],
            pool_size=config.pool_size,
            refresh_every=config.refresh_every,
            photon_scale=config.photon_scale,
            synth=synth,
            validation_structures=validation_classes,
            seed=config.seed,
            flip_axes=flip_axes,
            noise=config.noise,
        )
        return source, validation, description, psf
    files = paired_files(config.data)
    held_out = max(1, len(files) // 10) if len(files) > 1 else 0
    train_files, val_files = files[: len(files) - held_out], files[len(files) - held_out :]
    val_files = val_files or files  # a single pair validates on itself (stated in data.json)
    pairs = load_pairs(train_files, norm)
    if pairs and pairs[0][0].ndim != ndim:
        raise DeconvError(f"model {config.model!r} is {ndim}D but the data are {pairs[0][0].ndim}D")
    flip_axes = _flip_axes(config.flips, ndim, None)
    source = PatchSource(pairs, settings["patch"], config.intensity_scale, flip_axes)
    validation = load_pairs(val_files, norm, normalize_gt=False)
    description = DataDescription(
        kind="paired",
        folder=str(config.data),
        train_files=[p[0].name for p in train_files],
        validation_files=[p[0].name for p in val_files],
        seed=config.seed,
        flip_axes=flip_axes,
    )
    return source, validation, description, None


def validation_scores(model, card, pairs, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean PSNR/SSIM of ``model`` on (normalised raw, truth) pairs: what validation records,
    also used to compare checkpoints of different runs on one common set."""
    from deconv.runtime.predict import predict

    scores = [evaluate(predict(model, card, raw, device), gt) for raw, gt in pairs]
    return {
        "psnr": float(np.mean([s["psnr"] for s in scores])),
        "ssim": float(np.mean([s["ssim"] for s in scores])),
    }


def _write_curve(run: RunDirectory) -> None:
    records = run.metrics()
    if not records:
        return
    from deconv.figures import training_curve

    training_curve(records, run.path / "curve.png")
