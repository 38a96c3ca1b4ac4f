"""TorchScript export: the format deepImageJ (via JDLL) and ilastik run without Python code.

Tracing, not scripting: the zoo networks branch on Python values (odd sizes, group counts)
that scripting would have to type, and every traced path here reads sizes from the tensor at
run time, so the graph stays size-generic. That claim is checked, not assumed: the export is
compared with PyTorch on a second size that was not traced.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from deconv.io import write_atomically


def export_torchscript(model: torch.nn.Module, example: np.ndarray, path: str | Path) -> Path:
    """Trace ``model`` (eval mode, CPU, float32) on ``example`` and save it to ``path``."""
    model = model.eval().cpu().float()
    with warnings.catch_warnings(), torch.no_grad():
        # TracerWarnings flag Python-side size reads, which the verification then tests;
        # torch.jit's deprecation notice is about torch's roadmap, not this file's validity.
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, torch.from_numpy(example), check_trace=False)
        return write_atomically(path, lambda tmp: torch.jit.save(traced, str(tmp)))


def torchscript_runner(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(x)).float().numpy()

    return run
