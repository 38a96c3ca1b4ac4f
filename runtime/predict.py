"""Whole-volume network inference that respects a model's input-size constraints.

Inputs are mirror-padded up to the next size the card allows (min_size + k * step) and the
output is cropped back, so any volume runs on any model. Tiled, out-of-core execution
builds on this in the runtime.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deconv.zoo.card import ModelCard


def allowed_size(size: int, minimum: int, step: int) -> int:
    """Smallest size >= ``size`` of the form minimum + k * step."""
    if size <= minimum:
        return minimum
    return minimum + step * math.ceil((size - minimum) / step)


def padded_shape(shape: Sequence[int], card: ModelCard) -> tuple[int, ...]:
    n = len(shape)
    mins = card.min_size if len(card.min_size) == n else card.min_size[:1] * n
    steps = card.step if len(card.step) == n else card.step[:1] * n
    return tuple(allowed_size(s, m, t) for s, m, t in zip(shape, mins, steps))


@torch.no_grad()
def predict(
    model: torch.nn.Module, card: ModelCard, image: np.ndarray, device: torch.device | str = "cpu"
) -> np.ndarray:
    """Run ``model`` (eval mode) on one normalised image of the card's dimensionality."""
    shape = tuple(image.shape)
    target = padded_shape(shape, card)
    x = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32, device=device)
    x = x[None, None]
    pads = []
    for s, t in zip(reversed(shape), reversed(target)):
        pads += [0, t - s]
    if any(pads):
        mode = "reflect" if all(p < s for p, s in zip(pads[1::2], reversed(shape))) else "replicate"
        x = F.pad(x, pads, mode=mode)
    was_training = model.training
    model.eval()
    try:
        y = model(x)
    finally:
        model.train(was_training)
    crop = (0, 0, *[slice(0, s) for s in shape])
    return y[crop].float().cpu().numpy()
