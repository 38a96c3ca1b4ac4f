"""Golden outputs of every tiny zoo variant: any change to a layer or its initialisation shows.

Each case builds the registered model under ``torch.manual_seed(0)`` and feeds it
``torch.manual_seed(1); torch.rand(shape)``. Regenerate the files only after a deliberate
change of an architecture: ``DECONV_REGEN_GOLDEN=1 pytest tests/test_zoo_golden.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from deconv.zoo import create_model

GOLDEN = Path(__file__).parent / "golden"
# odd sizes where the architecture allows them, so padding paths are covered too
SHAPES = {
    "rln3d_tiny": (1, 1, 9, 12, 11),
    "rln2d_tiny": (1, 1, 17, 20),
    "rcan3d_tiny": (1, 1, 8, 12, 10),
    "rcan2d_tiny": (1, 1, 16, 20),
    "mrbcr2d_tiny": (1, 1, 32, 32),
}


def golden_case(name: str) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    model = create_model(name).eval()
    torch.manual_seed(1)
    x = torch.rand(SHAPES[name])
    with torch.no_grad():
        y = model(x)
    return x.numpy(), y.numpy()


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_golden_output(name: str) -> None:
    path = GOLDEN / f"{name}.npz"
    if os.environ.get("DECONV_REGEN_GOLDEN") == "1":
        GOLDEN.mkdir(exist_ok=True)
        np.savez_compressed(path, **dict(zip(("input", "output"), golden_case(name))))
    assert path.stat().st_size < 16_000, "golden files must stay small"
    with np.load(path) as golden:
        x, y = golden_case(name)
        np.testing.assert_array_equal(x, golden["input"])
        np.testing.assert_allclose(y, golden["output"], rtol=0, atol=1e-5)
