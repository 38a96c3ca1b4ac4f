"""A training run on disk: everything needed to resume it, package it, or judge it.

    RUN_DIR/
      run.json            the TrainConfig, model config and card (what was asked)
      psf.json, psf.tif   the PSF and its metadata (synthetic training)
      data.json           what the model was trained and validated on
      normalization.json  how inputs were normalised
      metrics.jsonl       one line per validation: step, loss, PSNR, SSIM, learning rate
      curve.png           loss and validation PSNR against steps
      checkpoints/last.pt, checkpoints/best.pt

Every file is written atomically (temporary name, then rename), so a run killed at any
moment (even with kill -9) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import torch

from deconv.errors import DeconvError
from deconv.io import write_atomically


class RunDirectory:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def create(self, overwrite: bool = False) -> None:
        if (self.path / "run.json").exists() and not overwrite:
            raise DeconvError(
                f"{self.path} already holds a run; continue it with --resume {self.path} "
                "or choose another folder"
            )
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DeconvError(f"cannot create {self.path}: {exc.strerror or exc}") from None

    def write_json(self, name: str, value: Any) -> None:
        text = json.dumps(value, indent=2, default=str)
        write_atomically(self.path / name, lambda tmp: tmp.write_text(text))

    def read_json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise DeconvError(f"{self.path} is not a training run (no {name})") from None
        except json.JSONDecodeError as exc:
            raise DeconvError(f"{path} is corrupt: {exc}") from None

    def append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self, until_step: int | None = None) -> list[dict[str, Any]]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in records if until_step is None or r["step"] <= until_step]

    def truncate_metrics(self, step: int) -> None:
        """Drop records written after the checkpoint a resumed run restarts from."""
        kept = self.metrics(until_step=step)
        text = "".join(json.dumps(r) + "\n" for r in kept)
        write_atomically(self.path / "metrics.jsonl", lambda tmp: tmp.write_text(text))

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        return write_atomically(self.checkpoints / f"{name}.pt", lambda tmp: tmp.write_bytes(data))

    def remove_partial_files(self) -> None:
        """Temporary files a killed run left behind (never the complete checkpoints)."""
        for folder in (self.path, self.checkpoints):
            for leftover in folder.glob(".*.partial-*"):
                leftover.unlink(missing_ok=True)

    def inference_weights(self, name: str = "best") -> dict[str, Any]:
        return inference_state(self.load_checkpoint(name))

    def load_checkpoint(self, name: str = "last") -> dict[str, Any]:
        path = self.checkpoints / f"{name}.pt"
        if not path.exists():
            raise DeconvError(f"{self.path} has no checkpoint {name}.pt to resume from")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DeconvError(f"checkpoint {path} is corrupt: {type(exc).__name__}") from None


def inference_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The weights to predict with: the averaged (EMA) ones when the run kept them."""
    return checkpoint.get("ema") or checkpoint["model"]
