"""Intensity normalisation as a model card states it: per whole image, never per tile.

Networks see normalised intensities; the same mapping is used when training, validating,
running and benchmarking, and its inverse maps results back to the input's range.
"""

from __future__ import annotations

import numpy as np

from deconv.zoo.card import Normalization


def percentile_range(image: np.ndarray, normalization: Normalization) -> tuple[float, float]:
    """The (low, high) intensities that the card's normalisation maps to 0 and 1."""
    if normalization.kind == "none":
        return 0.0, 1.0
    if normalization.kind == "min_max":
        return float(np.min(image)), float(np.max(image))
    lo, hi = np.percentile(image, [normalization.low, normalization.high])
    return float(lo), float(hi)


def normalize(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    """Per-image normalisation of the model card, in float32."""
    image = np.asarray(image, dtype=np.float32)
    return rescale(image, *percentile_range(image, normalization))


def rescale(image: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map ``low`` to 0 and ``high`` to 1, in float32: the normalisation of one image applied
    to another (fresh noise draws of a training volume keep that volume's range)."""
    image = np.asarray(image, dtype=np.float32)
    return ((image - low) / max(high - low, 1e-6)).astype(np.float32)
