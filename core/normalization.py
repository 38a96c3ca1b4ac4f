"""Intensity normalisation as a model card states it: per whole image, never per tile.

Networks see normalised intensities; the same mapping is used when training, validating,
running and benchmarking, and its inverse maps results back to the input's range.

Floor matching (inference only). Percentiles put a sparse sample's upper point on the flanks
of its few objects, not on their peaks, and its background far above where a dense
training image's background sits: the network then sees a brighter, lifted image than it
was trained on, and it ties shapes to levels (benchmarks/quality-log.md, sessions 3 and 36-37). The
*dark floor* of a normalised image, the 1st percentile of its 5-voxel box mean (the
background's level, with the noise averaged out), tells the two apart without the PSF: a
model records the highest floor among its training inputs (``reference_floor``), and an
image whose floor lies above it is scaled down towards it by ``(reference / floor) ** 0.75``
(matching the floors exactly, power 1, overshoots on the sparsest 3D samples: 3D boxes
-0.8 dB). Images like the training data are left alone (gain 1). Measured on the shipped
networks (session 37): sparse 2D dots +4 dB, 3D lines +1.5 dB, dense training mixtures
unchanged.
"""

from __future__ import annotations

import numpy as np

from deconv.reporter import Reporter
from deconv.zoo.card import Normalization

FLOOR_PERCENTILE = 1.0
FLOOR_BOX = 5
FLOOR_EXPONENT = 0.75  # chosen on validation seeds (benchmarks/quality-log.md, session 37)


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


def dark_floor(normalized: np.ndarray) -> float:
    """The 1st percentile of the image's 5-voxel box mean: where its background sits."""
    import scipy.ndimage

    smooth = scipy.ndimage.uniform_filter(np.asarray(normalized, np.float32), FLOOR_BOX)
    return float(np.percentile(smooth, FLOOR_PERCENTILE))


def floor_gain(normalized: np.ndarray, reference: float | None) -> float:
    """The factor (at most 1) that brings the image's dark floor down towards ``reference``."""
    if reference is None:
        return 1.0
    floor = dark_floor(normalized)
    return 1.0 if floor <= reference else (reference / floor) ** FLOOR_EXPONENT


def input_range(image: np.ndarray, normalization: Normalization) -> tuple[float, float, float]:
    """(low, high, gain): the intensities a network's input maps to 0 and 1, with the floor
    matching gain folded into ``high`` (so the inverse maps results back as before)."""
    lo, hi = percentile_range(image, normalization)
    if normalization.kind != "percentile" or normalization.reference_floor is None:
        return lo, hi, 1.0
    gain = floor_gain(rescale(image, lo, hi), normalization.reference_floor)
    return lo, lo + max(hi - lo, 1e-6) / gain, gain


def network_input(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    """A whole image normalised for inference: the card's percentiles, then floor matching."""
    lo, hi, _ = input_range(image, normalization)
    return rescale(image, lo, hi)


def reference_floor(training_inputs) -> float:
    """The highest dark floor among normalised training inputs: what floor matching keeps."""
    return max(dark_floor(x) for x in training_inputs)


def report_floor_matching(gains: list[float], reporter: Reporter) -> None:
    """Say when floor matching changed the input: the user should know, and can turn it off."""
    scaled = [g for g in gains if g < 1.0]
    if not scaled:
        return
    which = "the input" if len(gains) == 1 else f"{len(scaled)} of {len(gains)} images"
    reporter.info(
        f"floor matching: {which} scaled by {min(scaled):.3g}"
        + (f"-{max(scaled):.3g}" if len(scaled) > 1 else "")
        + " (a sparse sample; its background sits above the training data's; "
        "--no-match-floor turns this off)"
    )
