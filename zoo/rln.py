"""RLN in the zoo: its config, card, loss and training schedule.

The graph itself lives in :mod:`deconv.zoo.networks.rln` (torch only, so packages can carry
it); :class:`RLN` here validates its keyword arguments through :class:`RLNConfig` first.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from deconv.zoo.card import (
    Citation,
    ModelCard,
    ModelConfig,
    Normalization,
    TrainingDefaults,
    count_parameters,
)
from deconv.zoo.networks import rln as network

AUX_WEIGHT = 0.1


class RLNConfig(ModelConfig):
    architecture: Literal["rln"] = "rln"
    ndim: Literal[2, 3] = 3
    width: int = Field(4, ge=1, description="channels of the forward projectors")
    bp_width: int = Field(8, ge=1, description="channels of the back projectors and merge")
    h1_lateral_pool: Literal[2, 4] = Field(
        2,
        description="lateral pooling window of the half-scale branch H1 (the paper's: 2); 4 "
        "doubles H1's lateral reach",
    )
    h1_undecimated: bool = Field(
        False,
        description="run H1 on every phase of its pooling grid (dilated, not decimated): same "
        "weights, shift-equivariant output, any input size; H1 costs as much as at full scale",
    )
    flip_axes: tuple[int, ...] = Field(
        (),
        description="spatial axes (0 = z in 3D) whose flips the network is exactly equivariant "
        "to (the PSF must be symmetric under them): it runs once per combination of the flips "
        "and mixes those frames' features before its merge layers; () is the paper's network",
    )

    @field_validator("flip_axes")
    @classmethod
    def _distinct_sorted_axes(cls, axes: tuple[int, ...], info) -> tuple[int, ...]:
        ndim = info.data.get("ndim", 3)
        if len(set(axes)) != len(axes) or not all(0 <= a < ndim for a in axes):
            raise ValueError(f"flip_axes must be distinct spatial axes 0..{ndim - 1}, got {axes}")
        return tuple(sorted(axes))


class RLN(network.RLN):
    """RLN for single-channel 2D or 3D inputs (N, 1, *spatial) -> (N, 1, *spatial)."""

    def __init__(self, **kwargs) -> None:
        config = RLNConfig(**kwargs)
        super().__init__(**config.model_dump())
        self.config = config


def rln_loss(
    output: torch.Tensor, aux: torch.Tensor, target: torch.Tensor, raw: torch.Tensor
) -> torch.Tensor:
    """MSE - log((1 + SSIM) / 2) + 0.1 * MSE(aux, 0.8 * target + 0.2 * raw)."""
    from deconv.zoo.losses import ssim_torch

    mse = F.mse_loss(output, target)
    structural = -torch.log((1 + ssim_torch(output, target)) / 2)
    auxiliary = F.mse_loss(aux, 0.8 * target + 0.2 * raw)
    return mse + structural + AUX_WEIGHT * auxiliary


def receptive_halo(config: RLNConfig) -> tuple[int, ...]:
    """Voxels per side that can influence one output voxel, per axis (the larger side; exact).

    H1 at pooling window p: six 3x3 convolutions at 1/p scale (FP1: 3, BP1: 3) span 6 coarse
    voxels = 6p full-scale voxels, plus p - 1 for the pooling window (on one side), plus the
    full-scale conv after the transposed convolution (1): 7p. H3 adds three convolutions in
    sequence (m1, m2, out): 3. H2's four convolutions lie on a shorter parallel path. The
    paper's p = 2 gives 17; a lateral window of 4 gives 31. Undecimated, the six convolutions
    are dilated by p (6p), the pooling reaches p - 1 to one side and the phase-averaging
    convolution p - 1 to the other: the same 7p + 3 on both sides. The tests check this
    against autograd.
    """
    p = config.h1_lateral_pool
    pools = (2, p, p) if config.ndim == 3 else (p, p)
    return tuple(7 * q + 3 for q in pools)


def card(name: str, config: RLNConfig) -> ModelCard:
    n = config.ndim
    model = RLN(**config.model_dump())
    return ModelCard(
        name=name,
        architecture="rln",
        description=f"Richardson-Lucy Network, {n}D, physics-informed (FP/DV/BP at two scales)",
        ndim=n,
        min_size=(4,) * n,
        step=model.size_step,
        halo=receptive_halo(config),
        normalization=Normalization(kind="percentile", low=0.01, high=99.8),
        loss="mse - log((1 + ssim) / 2) + 0.1 * mse(aux, 0.8 gt + 0.2 raw)",
        citation=[
            Citation(
                text="Li et al., Incorporating the image formation process into deep learning "
                "improves network performance, Nature Methods 19, 1427-1437 (2022)",
                doi="10.1038/s41592-022-01652-7",
            )
        ],
        parameters=count_parameters(model),
    )


VARIANTS: dict[str, RLNConfig] = {
    "rln3d": RLNConfig(ndim=3),
    "rln2d": RLNConfig(ndim=2),
    "rln3d_tiny": RLNConfig(ndim=3, width=1, bp_width=1),
    "rln2d_tiny": RLNConfig(ndim=2, width=1, bp_width=1),
}

__all__ = ["RLN", "VARIANTS", "RLNConfig", "card", "rln_loss"]


def objective(model: RLN, raw: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's loss, with the auxiliary term on the H1 update."""
    output, aux = model.forward_with_aux(raw)
    return rln_loss(output, aux, target, raw)


def training_defaults(config: RLNConfig) -> TrainingDefaults:
    """Adam at 0.015 decayed by 0.95 every 500 steps, batch 4, 64^3 (3D) or 128^2 patches."""
    patch = (64, 64, 64) if config.ndim == 3 else (128, 128)
    return TrainingDefaults(
        learning_rate=0.015, decay_rate=0.95, decay_every=500, batch_size=4, patch=patch
    )
