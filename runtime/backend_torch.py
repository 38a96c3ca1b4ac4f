"""PyTorch backend: eager (optionally torch.compile'd) execution on CPU or CUDA.

Reduced precision runs under autocast, so the operations the model itself pins to float32
(RLN's divisions and products by ``x + 1e-3``) stay in float32. On CUDA, host batches are
copied from pinned memory without blocking, so the copy overlaps the previous batch's
compute.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from deconv.errors import DeconvError

PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise DeconvError(f"--precision must be fp32, fp16 or bf16, got {precision!r}")
        self.device = torch.device(device)
        if self.device.type == "cpu" and precision == "fp16":
            raise DeconvError("fp16 needs a CUDA GPU; on CPUs use fp32 or bf16")
        self.precision = precision
        tensors = [*model.parameters(), *model.buffers()]
        if tensors and tensors[0].device != self.device:
            model = copy.deepcopy(model)  # the caller's model stays where it was
        self.model = model.eval().to(self.device)
        self._run = torch.compile(self.model) if compile else self.model

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        dtype = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=bool(dtype)):
            y = self._run(x)
        return y.float().cpu().numpy()

    def describe(self) -> str:
        return f"torch {self.device.type} {self.precision}"
