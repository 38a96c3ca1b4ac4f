"""RCAN: residual channel attention network for deconvolution (Chen et al., Nat. Methods 2021).

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

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from deconv.zoo.card import Citation, ModelCard, ModelConfig, Normalization, TrainingDefaults

__all__ = ["RCAN", "VARIANTS", "RCANConfig", "card", "receptive_radius"]


class RCANConfig(ModelConfig):
    """Settings of one RCAN; ``model_dump()`` is exactly the :class:`RCAN` keyword arguments."""

    architecture: Literal["rcan"] = "rcan"
    ndim: Literal[2, 3] = 3
    channels: int = Field(32, gt=0, description="feature channels C")
    blocks: int = Field(3, gt=0, description="residual channel attention blocks per group B")
    groups: int = Field(5, gt=0, description="residual groups G")
    reduction: int = Field(8, gt=0, description="channel-attention reduction ratio r")

    @model_validator(mode="after")
    def _bottleneck_is_whole(self) -> RCANConfig:
        # The attention bottleneck has C/r channels; a fractional width would be silently
        # truncated by integer division, giving a different network than the config says.
        if self.channels % self.reduction:
            raise ValueError(
                f"channels ({self.channels}) must be divisible by reduction "
                f"({self.reduction}): channel attention squeezes C to C/r channels"
            )
        return self


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
    """RCAN mapping a (N, 1, *spatial) image in [0, 1] to a same-shaped restored image.

    Build it from keyword arguments only, ``RCAN(**config.model_dump())``, so that a config
    stored as JSON rebuilds exactly this network.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.config = RCANConfig(**kwargs)
        c = self.config
        self.head = _conv(c.ndim, 1, c.channels, 3)
        if c.groups == 1:
            # The published model drops the group conv and short skip for a single group:
            # the long skip already wraps the same span.
            self.body: nn.Module = nn.Sequential(
                *(RCAB(c.ndim, c.channels, c.reduction) for _ in range(c.blocks))
            )
        else:
            self.body = nn.Sequential(
                *(ResidualGroup(c.ndim, c.channels, c.blocks, c.reduction) for _ in range(c.groups))
            )
        self.tail = _conv(c.ndim, c.channels, c.channels, 3)
        self.out = _conv(c.ndim, c.channels, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ndim = self.config.ndim
        if x.ndim != ndim + 2 or x.shape[1] != 1:
            axes = "Z, Y, X" if ndim == 3 else "Y, X"
            raise ValueError(f"RCAN ({ndim}D) expects (N, 1, {axes}), got {tuple(x.shape)}")
        # Centre [0, 1] intensities on zero, as the original training did.
        h = self.head(2.0 * x - 1.0)
        y = self.out(self.tail(self.body(h)) + h)
        return 0.5 * y + 0.5


def receptive_radius(config: RCANConfig) -> int:
    """Voxels per side that the convolutions see: one per 3x3(x3) conv on the longest path.

    Head, 2 per RCAB, 1 per group conv (only when G > 1), tail and output conv. 1x1 convs
    and skips add nothing. Channel attention's global pool is deliberately not counted.
    """
    group_convs = config.groups if config.groups > 1 else 0
    return 1 + 2 * config.blocks * config.groups + group_convs + 1 + 1


def _parameter_count(config: RCANConfig) -> int:
    """Trainable parameters, computed without building (building would consume the RNG)."""
    k = 3**config.ndim
    c, cr = config.channels, config.channels // config.reduction

    def conv(c_in: int, c_out: int, taps: int) -> int:
        return c_in * c_out * taps + c_out

    rcab = 2 * conv(c, c, k) + conv(c, cr, 1) + conv(cr, c, 1)
    group = config.blocks * rcab + (conv(c, c, k) if config.groups > 1 else 0)
    return conv(1, c, k) + config.groups * group + conv(c, c, k) + conv(c, 1, k)


def card(name: str, config: RCANConfig) -> ModelCard:
    """The card of an RCAN registered under ``name``."""
    radius = receptive_radius(config)
    return ModelCard(
        name=name,
        architecture="rcan",
        description=(
            f"{config.ndim}D RCAN (C={config.channels}, B={config.blocks}, G={config.groups}, "
            f"r={config.reduction}): residual channel attention network, output size = input "
            "size. Channel attention pools over the whole tile, so outputs depend on the tile "
            "and tiled inference is only approximate: use large tiles with generous overlap "
            "(at least the halo, the original uses 1/8 of the tile) and blend the seams."
        ),
        ndim=config.ndim,
        min_size=(1,) * config.ndim,
        step=(1,) * config.ndim,
        halo=(radius,) * config.ndim,
        normalization=Normalization(kind="percentile", low=2.0, high=99.9),
        loss="mae",
        citation=[
            Citation(
                text=(
                    "Chen et al., Three-dimensional residual channel attention networks "
                    "denoise and sharpen fluorescence microscopy image volumes, "
                    "Nature Methods 18, 678-687 (2021)"
                ),
                doi="10.1038/s41592-021-01155-x",
            )
        ],
        parameters=_parameter_count(config),
    )


_TINY = {"channels": 2, "blocks": 1, "groups": 2, "reduction": 2}

VARIANTS: dict[str, RCANConfig] = {
    "rcan3d": RCANConfig(ndim=3),
    "rcan2d": RCANConfig(ndim=2),
    # Tiny variants keep two groups so tests exercise the group conv and short skip.
    "rcan3d_tiny": RCANConfig(ndim=3, **_TINY),
    "rcan2d_tiny": RCANConfig(ndim=2, **_TINY),
}


def objective(model: RCAN, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error, as published."""
    return torch.nn.functional.l1_loss(model(raw), target)


def training_defaults(config: RCANConfig) -> TrainingDefaults:
    """Adam at 1e-4 halved every 2,500 steps (a quarter of a 10k-step run), batch 4.

    The published patch is (16, 256, 256) capped at the image size; 128 laterally keeps a
    CPU step affordable.
    """
    patch = (16, 128, 128) if config.ndim == 3 else (256, 256)
    return TrainingDefaults(
        learning_rate=1e-4, decay_rate=0.5, decay_every=2500, batch_size=4, patch=patch
    )
