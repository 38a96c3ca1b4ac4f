"""Building blocks of the m-rBCR network (private to :mod:`deconv.zoo.mrbcr`).

Each block is a small ``torch.nn.Module`` written for this package from the published
description (Li, Kudryashev, Yakimovich, ECCV 2024). They live here so that ``mrbcr.py``
reads as the wiring of one architecture. Only ops that export cleanly to ONNX are used:
ordinary and grouped convolutions, one transposed convolution, ReLU and concatenation (no
locally-connected layers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_like(x: Tensor, ref: Tensor) -> Tensor:
    """Bilinear resize of ``x`` to the spatial size of ``ref``.

    ``align_corners=False`` without antialiasing is what TensorFlow's ``image.resize``
    computes in the authors' code; the target size is read from ``ref`` so that no size is
    hard-coded and traced graphs stay size-generic.
    """
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class PointwiseStack(nn.Sequential):
    """``n`` per-pixel dense layers (1x1 conv + ReLU), the first mapping ``cin -> width``.

    This is what the released forward stage actually runs (Keras ``Dense`` on the channel
    axis); in the wavelet version it processes the coarsest scaling part.
    """

    def __init__(self, cin: int, width: int, n: int) -> None:
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [nn.Conv2d(cin if i == 0 else width, width, 1), nn.ReLU()]
        super().__init__(*layers)


class WaveletLevel(nn.Module):
    """One level of a learned nonstandard-form (BCR) wavelet transform.

    A stride-2 2x2 conv plays the analysis filter bank: it maps the input to ``4 * width``
    channels, read as one scaling part (``width`` channels, handed to ``inner``: the next
    level or, at the coarsest level, the per-pixel dense stack) and three detail bands
    (horizontal, vertical, diagonal; ``width`` channels each). Each band is processed by its
    own small 3x3 conv stack (a grouped conv with one group per band, so bands never mix),
    applied as a residual so the level starts close to a plain wavelet round trip. A
    stride-2 transposed conv is the synthesis filter bank that merges the processed coarse
    part with the processed details back at the input resolution.
    """

    def __init__(self, cin: int, width: int, detail_convs: int, inner: nn.Module) -> None:
        super().__init__()
        self.width = width
        self.analysis = nn.Conv2d(cin, 4 * width, 2, stride=2)
        convs: list[nn.Module] = []
        for i in range(detail_convs):
            convs.append(nn.Conv2d(3 * width, 3 * width, 3, padding=1, groups=3))
            if i < detail_convs - 1:
                convs.append(nn.ReLU())
        self.details = nn.Sequential(*convs)
        self.inner = inner
        self.synthesis = nn.ConvTranspose2d(4 * width, width, 2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        bands = self.analysis(x)
        scaling, details = bands[:, : self.width], bands[:, self.width :]
        details = details + self.details(details)
        coarse = self.inner(scaling)
        return torch.relu(self.synthesis(torch.cat([coarse, details], dim=1)))


def forward_stage(width: int, levels: int, forward_layers: int, detail_convs: int) -> nn.Module:
    """The forward (BCR) stage for one scale: 1 channel in, ``width`` channels out.

    ``levels == 0`` is the released network (the dense stack on the raw pixels); otherwise
    the dense stack sits at the bottom of ``levels`` nested wavelet levels.
    """
    if levels == 0:
        return PointwiseStack(1, width, forward_layers)
    module: nn.Module = PointwiseStack(width, width, forward_layers)
    for level in reversed(range(levels)):
        module = WaveletLevel(1 if level == 0 else width, width, detail_convs, module)
    return module


class Fusion(nn.Module):
    """AFF-style fusion: concat, 1x1 conv + ReLU, 3x3 conv (as in MIMO-UNet's AFF)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.mix = nn.Conv2d(cin, cout, 1)
        self.smooth = nn.Conv2d(cout, cout, 3, padding=1)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        return self.smooth(torch.relu(self.mix(torch.cat([a, b], dim=1))))


class ResidualDenseBlock(nn.Module):
    """``layers`` x [conv3 + ReLU, conv3, concat], a 1x1 squeeze to ``growth`` channels, then
    concatenation with the block input, so each block adds ``growth`` channels."""

    def __init__(self, cin: int, growth: int, layers: int) -> None:
        super().__init__()
        self.pairs = nn.ModuleList()
        c = cin
        for _ in range(layers):
            self.pairs.append(
                nn.Sequential(
                    nn.Conv2d(c, growth, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(growth, growth, 3, padding=1),
                )
            )
            c += growth
        self.squeeze = nn.Conv2d(c, growth, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = x
        for pair in self.pairs:
            y = torch.cat([y, pair(y)], dim=1)
        return torch.cat([self.squeeze(y), x], dim=1)


class InverseBranch(nn.Sequential):
    """The inverse (deconvolution) operator P of one scale: ``convs`` row convs of kernel
    (1, k) + ReLU (the released code's ``Conv1D`` on a 4D tensor acts along x only), then
    ``blocks`` residual dense blocks; output channels ``width + blocks * growth``."""

    def __init__(
        self, cin: int, width: int, convs: int, kernel: int, blocks: int, growth: int, layers: int
    ) -> None:
        mods: list[nn.Module] = []
        for i in range(convs):
            mods += [
                nn.Conv2d(cin if i == 0 else width, width, (1, kernel), padding=(0, kernel // 2)),
                nn.ReLU(),
            ]
        for b in range(blocks):
            mods.append(ResidualDenseBlock(width + b * growth, growth, layers))
        super().__init__(*mods)
