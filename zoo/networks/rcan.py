"""RCAN network graph, self-contained (imports only torch): the residual channel attention
network of Chen et al., Nature Methods 18, 678-687 (2021).

Copied verbatim into bioimage.io packages as the ``pytorch_state_dict`` architecture;
:mod:`deconv.zoo.rcan` adds the config, card and loss.

The network is fully convolutional with no up-sampler, so the output has the input's size.
Its residual-in-residual layout (long skip around the body, short skip around each group,
skip around each block) lets a deep stack of 3x3(x3) convolutions learn only the correction
from the blurred image to the deconvolved one. Channel attention re-weights feature channels
by statistics of the *whole* input tile; that is what makes RCAN strong on images with
varying content, and also what makes tiled inference only approximate (see :func:`card`).

Graph (``C`` channels, ``G`` groups of ``B`` blocks, reduction ``r``)::

    x -> 2x-1 -> head conv3 1->C = h
    h -> G x [B x RCAB -> conv3, + group input]  (a single group has no conv/skip)
      -> conv3 -> + h -> conv3 C->1 -> 0.5y+0.5
    RCAB(z) = z + CA(conv3(relu(conv3(z))))
    CA(f)   = f * sigmoid(conv1 C/r->C(relu(conv1 C->C/r(mean over space of f))))
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(ndim: int, c_in: int, c_out: int, kernel: int) -> nn.Module:
    """Biased convolution with 'same' padding (odd kernels only), 2D or 3D."""
    cls = nn.Conv3d if ndim == 3 else nn.Conv2d
    return cls(c_in, c_out, kernel, padding=kernel // 2, bias=True)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: scale each channel by a gate computed from its global mean.

    The mean is over every spatial position of the tile, so the gate (and hence the output)
    changes when the same region is seen inside a different tile.
    """

    def __init__(self, ndim: int, channels: int, reduction: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1) if ndim == 3 else nn.AdaptiveAvgPool2d(1)
        self.squeeze = _conv(ndim, channels, channels // reduction, 1)
        self.excite = _conv(ndim, channels // reduction, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(self.pool(x)))))
        return x * gate


class RCAB(nn.Module):
    """Residual channel attention block: two conv3 with a ReLU between, gated, plus skip."""

    def __init__(self, ndim: int, channels: int, reduction: int) -> None:
        super().__init__()
        self.conv1 = _conv(ndim, channels, channels, 3)
        self.act = nn.ReLU()
        self.conv2 = _conv(ndim, channels, channels, 3)
        self.attention = ChannelAttention(ndim, channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.conv2(self.act(self.conv1(x))))


class ResidualGroup(nn.Module):
    """B RCABs then a conv3, with a short skip so each group also learns only a residual."""

    def __init__(self, ndim: int, channels: int, blocks: int, reduction: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(RCAB(ndim, channels, reduction) for _ in range(blocks)))
        self.conv = _conv(ndim, channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(self.blocks(x))


class RCAN(nn.Module):
    """RCAN mapping a (N, 1, *spatial) image in [0, 1] to a same-shaped restored image."""

    def __init__(
        self,
        architecture: str = "rcan",
        ndim: int = 3,
        channels: int = 32,
        blocks: int = 3,
        groups: int = 5,
        reduction: int = 8,
    ) -> None:
        super().__init__()
        if architecture != "rcan" or ndim not in (2, 3) or channels % reduction:
            raise ValueError(f"not an RCAN: {architecture=}, {ndim=}, {channels=}, {reduction=}")
        self.ndim = ndim
        self.head = _conv(ndim, 1, channels, 3)
        if groups == 1:
            # The published model drops the group conv and short skip for a single group:
            # the long skip already wraps the same span.
            self.body: nn.Module = nn.Sequential(
                *(RCAB(ndim, channels, reduction) for _ in range(blocks))
            )
        else:
            self.body = nn.Sequential(
                *(ResidualGroup(ndim, channels, blocks, reduction) for _ in range(groups))
            )
        self.tail = _conv(ndim, channels, channels, 3)
        self.out = _conv(ndim, channels, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ndim = self.ndim
        if x.ndim != ndim + 2 or x.shape[1] != 1:
            axes = "Z, Y, X" if ndim == 3 else "Y, X"
            raise ValueError(f"RCAN ({ndim}D) expects (N, 1, {axes}), got {tuple(x.shape)}")
        # Centre [0, 1] intensities on zero, as the original training did.
        h = self.head(2.0 * x - 1.0)
        y = self.out(self.tail(self.body(h)) + h)
        return 0.5 * y + 0.5
