"""Where a trained model comes from: a shipped pretrained name, a run directory or a package.

Packaging and export accept all three, so each is resolved once into a :class:`ModelSource`:
the network in eval mode on the CPU plus everything a package must carry about it (registry
name and config, card, PSF, normalisation, training description and metrics). Packages are
resolved through the registry by the ``config.deconv.model`` entry they carry, never by
running code found inside the zip (see :mod:`deconv.exporters.package_loader`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deconv.errors import DeconvError
from deconv.psf import PSF, PSFMetadata, load_psf, regenerate_psf
from deconv.zoo import create_model, get_model_card
from deconv.zoo.card import ModelCard, Normalization


@dataclass
class ModelSource:
    """A trained model and its provenance, ready to package or export."""

    name: str
    registry_name: str
    config: dict[str, Any]
    model: torch.nn.Module
    card: ModelCard
    normalization: Normalization
    psf: PSF | None = None
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    origin: str = ""
    sha256: str | None = None
    """sha256 of the source file (package zip), recorded in TensorRT engine sidecars."""
    rl_refine: int | None = None
    """RL iterations that ``--rl-refine auto`` runs from this network's output, where known."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_registered(registry_name: str, config: dict[str, Any], state: dict) -> torch.nn.Module:
    """Build ``registry_name`` with ``config`` and load ``state``; mismatches are DeconvErrors."""
    overrides = {k: v for k, v in config.items() if k != "architecture"}
    model = create_model(registry_name, **overrides)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        last = str(error).strip().splitlines()[-1].strip()
        raise DeconvError(f"the weights do not fit {registry_name}: {last}") from None
    return model.eval()


def from_pretrained(name: str) -> ModelSource:
    from deconv.zoo.pretrained import load_pretrained

    model, record = load_pretrained(name)
    psf = regenerate_psf(record.psf)
    return ModelSource(
        name=name,
        registry_name=record.base_model,
        config=record.config,
        model=model,
        card=get_model_card(record.base_model, record.config),
        normalization=record.normalization,
        psf=psf,
        training={"command": record.command, **record.training},
        metrics={
            k.removeprefix("validation_"): v
            for k, v in record.metrics.items()
            if k.startswith("validation_")
        },
        origin=f"pretrained weights {name}",
        rl_refine=record.rl_refine,
    )


def from_run(path: Path) -> ModelSource:
    from deconv.training.run_dir import RunDirectory, inference_state

    run = RunDirectory(path)
    meta = run.read_json("run.json")
    state = run.load_checkpoint("best")
    registry_name = meta["train"]["model"]
    model = build_registered(registry_name, meta["model_config"], inference_state(state))
    psf = None
    if (run.path / "psf.tif").exists():
        psf = load_psf(run.path / "psf.tif")
        if (run.path / "psf.json").exists():
            psf = PSF(psf.data, PSFMetadata.model_validate(run.read_json("psf.json")))
    records = [m for m in run.metrics() if m["step"] == state["step"]]
    metrics = {k: float(records[-1][k]) for k in ("psnr", "ssim")} if records else {}
    training = {"steps": state["step"], "resolved": meta["resolved"]}
    if (run.path / "data.json").exists():
        training["data"] = run.read_json("data.json")
    return ModelSource(
        name=run.path.name,
        registry_name=registry_name,
        config=meta["model_config"],
        model=model,
        card=get_model_card(registry_name, meta["model_config"]),
        normalization=Normalization.model_validate(run.read_json("normalization.json")),
        psf=psf,
        training=training,
        metrics=metrics,
        origin=f"run directory {run.path}",
    )


def from_registry(name: str, psf: PSF | None = None, seed: int = 0) -> ModelSource:
    """A registered model with fresh (seeded) weights: packaging tests and plugin checks."""
    torch.manual_seed(seed)
    model = create_model(name).eval()
    card = get_model_card(name)
    return ModelSource(
        name=name, registry_name=name, config=model.config.model_dump(mode="json"),
        model=model, card=card, normalization=card.normalization, psf=psf,
        origin=f"untrained {name} (seed {seed})",
    )  # fmt: skip


def resolve_source(text: str | Path, trust_code: bool = False) -> ModelSource:
    """A pretrained name, a run directory, or a bioimage.io package (.zip or rdf.yaml)."""
    from deconv.zoo.pretrained import list_pretrained

    text = str(text)
    path = Path(text)
    if text in list_pretrained():
        return from_pretrained(text)
    if path.is_dir() and (path / "run.json").exists():
        return from_run(path)
    if path.suffix in (".zip", ".yaml") and path.exists():
        from deconv.exporters.package_loader import load_package

        return load_package(path, trust_code=trust_code)
    if path.exists():
        raise DeconvError(
            f"{path} is neither a run directory (with run.json) nor a bioimage.io package "
            "(.zip or rdf.yaml)"
        )
    raise DeconvError(
        f"{text!r} is not a pretrained model ({', '.join(list_pretrained())}), a run "
        "directory or a package file"
    )
