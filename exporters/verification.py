"""Does an exported artefact compute what the PyTorch model computes?

Every export (and every weights format inside a package) is checked the same way: run the
PyTorch model and the artefact on the size used when tracing *and* on a second size that
was not, and compare element-wise with ``|candidate - reference| <= absolute + relative *
|reference|`` (numpy's ``allclose`` rule, the one bioimage.io's reproducibility tolerances
use). A traced graph that silently baked in the example's size fails the second size.
``absolute`` is relative to the output's range: it is multiplied by ``max(1, max|reference|)``
so that models whose outputs are in camera counts (RL) are held to the same standard as
networks with normalised outputs. Fixed-size graphs (step 0) are checked on two inputs of
their one size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from deconv.zoo.card import ModelCard

# Tolerances per (format, precision). float32 graphs differ from eager torch only by
# operator order (~1e-6 relative); half precision keeps ~3 significant digits.
TOLERANCES: dict[tuple[str, str], tuple[float, float]] = {
    ("pytorch_state_dict", "fp32"): (1e-5, 1e-6),
    ("torchscript", "fp32"): (1e-4, 1e-5),
    ("onnx", "fp32"): (1e-3, 1e-4),
    ("onnx", "fp16"): (2e-2, 2e-2),
    ("tensorrt", "fp32"): (1e-3, 1e-3),
    ("tensorrt", "fp16"): (3e-2, 3e-2),
    ("tensorrt", "bf16"): (6e-2, 6e-2),
}


@dataclass
class Agreement:
    """Outcome of one comparison, printable as a row of ``deconv validate``."""

    check: str
    shape: tuple[int, ...]
    max_abs_error: float
    relative: float
    absolute: float
    passed: bool
    detail: str = ""


def valid_size(card: ModelCard, target: Sequence[int]) -> tuple[int, ...]:
    """The smallest size >= ``target`` per axis that the model accepts (min + k * step)."""
    from deconv.runtime.tiling import allowed_size

    sizes = []
    for t, lo, step in zip(target, card.min_size, card.step, strict=True):
        sizes.append(lo if step == 0 else allowed_size(int(t), lo, step))  # step 0: fixed size
    return tuple(sizes)


def check_shapes(card: ModelCard, traced: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Two spatial shapes: the one to trace with, and a different one per axis."""
    base = tuple(traced) if traced else valid_size(card, (16, 32, 32)[-card.ndim :])
    if not any(card.step):
        return [base, base]
    other = valid_size(
        card, [b + max(s, 8) + 2 * s * i for i, (b, s) in enumerate(zip(base, card.step))]
    )
    return [base, other]


def check_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A smooth, positive, image-like (1, 1, *shape) input in [0, 1]: pure noise would test
    the graph on inputs no microscope produces."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random(tuple(shape)), 1.5)
    x = (x - x.min()) / max(float(np.ptp(x)), 1e-6)
    return x[None, None].astype(np.float32)


def torch_reference(model: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).float().numpy()

    return run


def compare(
    check: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    tolerance: tuple[float, float],
) -> Agreement:
    relative, absolute = tolerance
    absolute *= max(1.0, float(np.abs(reference).max()))
    shape = tuple(reference.shape[2:])
    if candidate.shape != reference.shape:
        return Agreement(
            check,
            shape,
            float("inf"),
            relative,
            absolute,
            False,
            f"output shape {candidate.shape} != {reference.shape}",
        )
    candidate = candidate.astype(np.float32)
    error = np.abs(candidate - reference)
    finite = bool(np.isfinite(candidate).all())
    passed = finite and bool(np.all(error <= absolute + relative * np.abs(reference)))
    return Agreement(
        check,
        shape,
        float(error.max()) if finite else float("inf"),
        relative,
        absolute,
        passed,
        "" if finite else "non-finite output",
    )


def verify(
    check: str,
    reference: Callable[[np.ndarray], np.ndarray],
    candidate: Callable[[np.ndarray], np.ndarray],
    shapes: Sequence[Sequence[int]],
    tolerance: tuple[float, float],
) -> list[Agreement]:
    """Compare ``candidate`` with ``reference`` on one input per shape."""
    rows = []
    for i, shape in enumerate(shapes):
        x = check_input(shape, seed=i)
        try:
            out = candidate(x)
        except Exception as error:  # an artefact that cannot run at this size fails the check
            message = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            rows.append(
                Agreement(
                    check,
                    tuple(shape),
                    float("inf"),
                    *tolerance,
                    False,
                    f"{type(error).__name__}: {message}",
                )
            )
            continue
        rows.append(compare(check, reference(x), np.asarray(out), tolerance))
    return rows
