"""Whole-volume network inference that respects a model's input-size constraints.

The volume is extended at its far end to the next size the card allows (min_size + k *
step, mirror padding) and the output is cropped back, so any volume runs on any model. This
is the one-tile case of :func:`deconv.runtime.tiling.predict_tiled`, so a tiled run and a
whole-volume run share every rule (padding, cropping) and agree exactly.
"""

from __future__ import annotations

import numpy as np
import torch

from deconv.runtime.tiling import TileGrid, allowed_size, predict_tiled
from deconv.zoo.card import ModelCard

__all__ = ["allowed_size", "predict"]


@torch.no_grad()
def predict(
    model: torch.nn.Module, card: ModelCard, image: np.ndarray, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Run ``model`` (eval mode) on one normalised image of the card's dimensionality."""
    was_training = model.training
    model.eval()

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
        return model(x).float().cpu().numpy()

    try:
        whole = TileGrid(image.shape, card).extended
        return predict_tiled(run, np.asarray(image, dtype=np.float32), card, core=whole)
    finally:
        model.train(was_training)
