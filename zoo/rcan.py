"""RCAN in the zoo: config, card, loss and schedule; the graph is
:mod:`deconv.zoo.networks.rcan` (torch only, so packages can carry it).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from deconv.zoo.card import Citation, ModelCard, ModelConfig, Normalization, TrainingDefaults
from deconv.zoo.networks import rcan as network

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


class RCAN(network.RCAN):
    """RCAN built from keyword arguments only, ``RCAN(**config.model_dump())``, so that a
    config stored as JSON rebuilds exactly this network."""

    def __init__(self, **kwargs: Any) -> None:
        config = RCANConfig(**kwargs)
        super().__init__(**config.model_dump())
        self.config = config


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
        tiling="blend",
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
