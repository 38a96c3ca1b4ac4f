"""Richardson-Lucy with a baked-in PSF as an exportable graph (imports only torch).

This is how the classical ``rl`` model travels in a bioimage.io package, so that Fiji
(deepImageJ) users get Richardson-Lucy or Wiener-Butterworth deconvolution with the PSF of
their microscope. Choice of graph: FFT convolution, not spatial convolution. A widefield PSF
has ~10^5 taps (33x65x65), so one spatial convolution of a 48x128x128 tile costs ~10^11
multiply-adds, while an FFT round trip on the padded grid costs ~10^8. The transfer
functions are stored as real and imaginary float32 buffers (ONNX has no complex tensors);
the complex products are written out in real arithmetic; the FFTs export as ONNX ``DFT``
(opset 17), which ONNX Runtime runs on CPUs.

Because the transfer functions are precomputed, the tile size is fixed (``tile``); clients
tile larger images with the rdf's halo (the PSF's half size). Inside a tile the data are
mirror-padded to ``padded`` (at least tile + PSF - 1 per axis), so edges do not ring; this
reproduces ``RichardsonLucy`` with ``boundary="reflect"`` and no acceleration: the estimate
starts at the mean of (data - background), the forward model adds the background, the
denominator is floored at ``floor * max(data)`` per image, and unmatched back projectors
with negative lobes are clamped at zero after each update.
"""

from __future__ import annotations

import torch
from torch import nn


class RichardsonLucyFFT(nn.Module):
    """(N, 1, *tile) raw counts -> (N, 1, *tile) deconvolved intensities (same units)."""

    def __init__(
        self,
        architecture: str = "rl_fft",
        tile: tuple[int, ...] = (48, 128, 128),
        padded: tuple[int, ...] = (128, 256, 256),
        iterations: int = 30,
        background: float = 0.0,
        floor: float = 1e-4,
        clamp: bool = False,
    ) -> None:
        super().__init__()
        if architecture != "rl_fft" or len(tile) != len(padded) or len(tile) not in (2, 3):
            raise ValueError(f"not an rl_fft graph: {architecture=}, {tile=}, {padded=}")
        if any(p < t for t, p in zip(tile, padded)):
            raise ValueError(f"padded {padded} must be at least the tile {tile}")
        self.tile, self.padded = tuple(tile), tuple(padded)
        self.iterations, self.background = int(iterations), float(background)
        self.floor, self.clamp = float(floor), bool(clamp)
        self.dims = tuple(range(-len(tile), 0))
        half = (*self.padded[:-1], self.padded[-1] // 2 + 1)
        for name in ("psf_re", "psf_im", "bp_re", "bp_im"):
            self.register_buffer(name, torch.zeros(half))
        if any(p - t - (p - t) // 2 > t for t, p in zip(self.tile, self.padded)):
            raise ValueError(f"mirror padding to {padded} needs more than the tile {tile}")

    def _mirror(self, x: torch.Tensor) -> torch.Tensor:
        """Mirror padding that repeats the edge sample (numpy's "symmetric"), axis by axis."""
        for axis, (t, p) in enumerate(zip(self.tile, self.padded)):
            dim = 2 + axis
            before = (p - t) // 2
            after = p - t - before
            parts = [x]
            if before:
                parts.insert(0, torch.flip(x.narrow(dim, 0, before), [dim]))
            if after:
                parts.append(torch.flip(x.narrow(dim, t - after, after), [dim]))
            x = torch.cat(parts, dim=dim)
        return x

    def _filter(self, x: torch.Tensor, re: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
        spectrum = torch.fft.rfftn(x, dim=self.dims)
        a, b = spectrum.real, spectrum.imag
        product = torch.complex(a * re - b * im, a * im + b * re)
        return torch.fft.irfftn(product, s=self.padded, dim=self.dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        data = self._mirror(x)
        reduce = tuple(range(1, x.ndim))
        count = 1.0
        for size in self.tile:
            count *= size
        peak = torch.amax(x, dim=reduce, keepdim=True)
        level = (x - self.background).sum(dim=reduce, keepdim=True) / count
        level = torch.maximum(level, torch.clamp(peak, min=1e-12) * 1e-6)
        floor = torch.clamp(peak * self.floor, min=1e-12)
        estimate = torch.ones_like(data) * level
        for _ in range(self.iterations):
            blurred = self._filter(estimate, self.psf_re, self.psf_im) + self.background
            ratio = data / torch.maximum(blurred, floor)
            estimate = estimate * self._filter(ratio, self.bp_re, self.bp_im)
            if self.clamp:
                estimate = torch.clamp(estimate, min=0.0)
        crop = [slice(None), slice(None)]
        for t, p in zip(self.tile, self.padded):
            start = (p - t) // 2
            crop.append(slice(start, start + t))
        return estimate[tuple(crop)]
