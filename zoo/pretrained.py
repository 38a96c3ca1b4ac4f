"""Pretrained weights shipped inside the package, addressed as ``architecture.tag``.

Each entry is two files in ``zoo/weights/``: ``NAME.json`` (a :class:`PretrainedRecord`:
which registered model and config, the PSF it was trained for, the normalisation, the exact
command that produced it, and its validation metrics) and ``NAME.pt`` (the state dict,
checked against the sha256 in the record before it is loaded). Weights are small (RLN has
16k parameters), so shipping them beats downloading them, which cannot work offline.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from deconv.errors import DeconvError
from deconv.psf import PSFMetadata
from deconv.zoo.card import Normalization

WEIGHTS_DIR = Path(__file__).parent / "weights"


class PretrainedRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    base_model: str
    config: dict[str, Any]
    psf: PSFMetadata
    normalization: Normalization
    command: str
    training: dict[str, Any]
    metrics: dict[str, float]
    sha256: str
    rl_refine: int | None = Field(
        None,
        ge=1,
        description="RL iterations for `deconv run --rl-refine auto`, chosen on validation "
        "images of the training classes (benchmarks/quality-log.md, session 35)",
    )


def list_pretrained() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.json"))


def pretrained_record(name: str) -> PretrainedRecord:
    path = WEIGHTS_DIR / f"{name}.json"
    if not path.exists():
        available = ", ".join(list_pretrained()) or "none"
        raise DeconvError(f"no pretrained weights {name!r}; available: {available}")
    return PretrainedRecord.model_validate_json(path.read_text())


def load_pretrained(name: str) -> tuple[torch.nn.Module, PretrainedRecord]:
    """The model with its weights, in eval mode, and its record."""
    from deconv.zoo.registry import create_model

    record = pretrained_record(name)
    weights = WEIGHTS_DIR / f"{name}.pt"
    data = weights.read_bytes() if weights.exists() else b""
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise DeconvError(f"{weights} is missing or does not match its recorded sha256")
    model = create_model(record.base_model, **record.config)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval(), record


def export_pretrained(
    run_dir: str | Path,
    name: str,
    command: str,
    metrics: dict[str, float],
    which: str = "best",
    rl_refine: int | None = None,
) -> Path:
    """Copy a run's checkpoint into the package as ``name`` (how shipped weights are made).

    ``rl_refine`` is the count for ``deconv run --rl-refine auto``: choose it on validation
    images of the training classes (``benchmarks/bench_quality.py --seed``), not test data.
    """
    import json

    from deconv.training.run_dir import RunDirectory, inference_state

    run = RunDirectory(run_dir)
    meta = run.read_json("run.json")
    state = run.load_checkpoint(which)
    WEIGHTS_DIR.mkdir(exist_ok=True)
    weights = WEIGHTS_DIR / f"{name}.pt"
    # the default layout: 3D runs train channels-last on CPUs, shipped files stay neutral
    torch.save({k: v.contiguous() for k, v in inference_state(state).items()}, weights)
    normalization = Normalization.model_validate(run.read_json("normalization.json"))
    if normalization.kind == "percentile" and normalization.reference_floor is None:
        from deconv.training.loop import run_reference_floor  # runs from before floor matching

        normalization = normalization.model_copy(
            update={"reference_floor": run_reference_floor(run.path)}
        )
    record = PretrainedRecord(
        name=name,
        base_model=meta["train"]["model"],
        config=meta["model_config"],
        psf=PSFMetadata.model_validate(run.read_json("psf.json")),
        normalization=normalization,
        command=command,
        training={
            "steps": state["step"],
            "resolved": meta["resolved"],
            "data": run.read_json("data.json"),
        },
        metrics=metrics,
        sha256=hashlib.sha256(weights.read_bytes()).hexdigest(),
        rl_refine=rl_refine,
    )
    (WEIGHTS_DIR / f"{name}.json").write_text(json.dumps(record.model_dump(mode="json"), indent=2))
    return weights
