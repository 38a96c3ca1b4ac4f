"""m-rBCR in the zoo: config, card, loss, schedule and receptive-field bound.

The graph and its design notes are in :mod:`deconv.zoo.networks.mrbcr` (torch only, so
packages can carry it); :class:`MRBCR` here validates its keyword arguments first and turns
bad input sizes into :class:`DeconvError`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor

from deconv.errors import DeconvError
from deconv.zoo.card import (
    Citation,
    ModelCard,
    ModelConfig,
    Normalization,
    TrainingDefaults,
    count_parameters,
)
from deconv.zoo.networks import mrbcr as network

__all__ = ["MRBCR", "VARIANTS", "MRBCRConfig", "card", "multiscale_loss"]


class MRBCRConfig(ModelConfig):
    """Settings of one m-rBCR network; ``model_dump()`` is the constructor's kwargs."""

    architecture: Literal["mrbcr"] = "mrbcr"
    ndim: Literal[2] = 2
    width: int = Field(32, ge=1, le=1024, description="feature channels (alpha)")
    levels: int = Field(1, ge=0, le=6, description="BCR wavelet levels; 0 = released")
    forward_layers: int = Field(12, ge=1, le=64, description="per-pixel dense layers (K)")
    dense_blocks: int = Field(4, ge=0, le=32, description="residual dense blocks per P")
    scales: int = Field(3, ge=1, le=5, description="input, /2, /4, ... strided subsamples")
    growth: int = Field(4, ge=1, le=256, description="channels each dense block adds")
    dense_layers: int = Field(3, ge=1, le=16, description="conv pairs inside a dense block")
    inverse_convs: int = Field(6, ge=1, le=32, description="(1, k) row convs opening each P")
    inverse_kernel: int = Field(5, ge=1, le=31, description="k of those row convs")
    output_kernel: int = Field(9, ge=1, le=31, description="kernel of the output convs")
    detail_convs: int = Field(2, ge=1, le=8, description="3x3 convs per detail band")

    @field_validator("inverse_kernel", "output_kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"must be odd so 'same' padding is symmetric, got {v}")
        return v

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this (subsampling and wavelet levels divide)."""
        return 2 ** (self.scales - 1 + self.levels)


class MRBCR(network.MRBCR):
    """The m-rBCR network for (N, 1, H, W) inputs; ``forward`` returns the finest output."""

    def __init__(self, **kwargs: Any) -> None:
        config = MRBCRConfig(**kwargs)
        super().__init__(**config.model_dump())
        self.config = config

    def _check(self, x: Tensor) -> None:
        try:
            super()._check(x)
        except ValueError as error:
            raise DeconvError(str(error)) from None


def multiscale_loss(outputs: list[Tensor], target: Tensor) -> Tensor:
    """Sum over scales of MSE + 0.5 * mean |FFT(target_s) - FFT(out_s)| (the paper's loss).

    Targets per scale are the same strided subsamples ``forward_multiscale`` feeds in. The
    FFT term (unnormalised 2D FFT, computed in float32) penalises lost high frequencies that
    a pixel MSE barely sees.
    """
    total = target.new_zeros((), dtype=torch.float32)
    for s, out in enumerate(outputs):
        t = target[..., :: 2**s, :: 2**s]
        if t.shape != out.shape:
            raise DeconvError(f"scale {s}: output {tuple(out.shape)} vs target {tuple(t.shape)}")
        diff = torch.fft.fft2(t.float()) - torch.fft.fft2(out.float())
        total = total + F.mse_loss(out.float(), t.float()) + 0.5 * diff.abs().mean()
    return total


def _resize_radius(a: int, b: int) -> int:
    # Bilinear (half-pixel) resize between pixel spacings a and b of grids that are
    # corner-aligned (strided subsamples): sample shift <= max/2, neighbours within max.
    return math.ceil(1.5 * max(a, b))


def _bcr_radius(c: MRBCRConfig, s: int, level: int = 0) -> int:
    # Analysis (+d), then max(deeper levels, detail 3x3 stack at 2d), then synthesis (+d).
    if level == c.levels:
        return 0
    d = 2 ** (s + level)
    return 2 * d + max(_bcr_radius(c, s, level + 1), 2 * d * c.detail_convs)


def _inverse_radius(c: MRBCRConfig, s: int, row: int) -> int:
    # P at scale s: row convs (x only: ``row`` = k // 2), then 2 convs3 per dense layer.
    return 2**s * (c.inverse_convs * row + c.dense_blocks * c.dense_layers * 2)


def halo(config: MRBCRConfig) -> tuple[int, int]:
    """Conservative receptive-field radius (y, x) in full-resolution pixels.

    Walks the graph: a k-kernel conv at pixel spacing d adds d * (k - 1) // 2; the stride-2
    analysis and transposed synthesis convs add the fine spacing; a resize adds 1.5x the
    coarser spacing; paths merge with max. Rounded up to a multiple of the size step so tiles
    stay aligned to the subsampling grid.
    """
    c, n = config, config.scales
    out = []
    for row in (0, c.inverse_kernel // 2):  # y, then x (the (1, k) row convs act on x)
        fwd = [_bcr_radius(c, s) for s in range(n)]
        z = list(fwd)  # heads are 1x1; the fused path goes through full resolution
        for s in range(n - 1):
            a = fwd[s] + (_resize_radius(2**s, 1) if s else 0)
            b = fwd[s + 1] + _resize_radius(2 ** (s + 1), 1)
            z[s] = max(fwd[s], max(a, b) + 1 + (_resize_radius(1, 2**s) if s else 0))
        xi = z[-1] + _inverse_radius(c, n - 1, row)
        for s in reversed(range(n - 1)):
            xi = max(z[s], xi + _resize_radius(2 ** (s + 1), 2**s)) + 2**s
            xi += _inverse_radius(c, s, row)
        r = max(xi, z[0]) + c.output_kernel // 2
        out.append(-(-r // c.multiple) * c.multiple)
    return out[0], out[1]


def card(name: str, config: MRBCRConfig) -> ModelCard:
    """The zoo card of one m-rBCR configuration (builds the network once to count)."""
    m = config.multiple
    return ModelCard(
        name=name,
        architecture="mrbcr",
        description=(
            f"m-rBCR, {config.scales} scales, {config.levels} BCR wavelet level(s)"
            + (" (released structure)" if config.levels == 0 else "")
            + f", width {config.width}"
        ),
        ndim=2,
        min_size=(m, m),
        step=(m, m),
        halo=halo(config),
        normalization=Normalization(kind="min_max"),
        loss="multiscale_mse_fft",
        citation=[
            Citation(
                text="Li, Kudryashev, Yakimovich: m-rBCR, multi-stage residual BCR network "
                "for microscopy deconvolution, ECCV 2024, arXiv:2407.03239",
                doi="10.48550/arXiv.2407.03239",
            )
        ],
        parameters=count_parameters(MRBCR(**config.model_dump())),
    )


VARIANTS: dict[str, MRBCRConfig] = {
    "mrbcr2d": MRBCRConfig(),
    "mrbcr2d_released": MRBCRConfig(levels=0),
    "mrbcr2d_tiny": MRBCRConfig(
        width=1,
        levels=1,
        forward_layers=1,
        dense_blocks=1,
        growth=1,
        dense_layers=1,
        inverse_convs=1,
        inverse_kernel=3,
        output_kernel=3,
        detail_convs=1,
    ),
}


def objective(model: MRBCR, raw: Tensor, target: Tensor) -> Tensor:
    """The multi-scale loss on every scale's output."""
    return multiscale_loss(model.forward_multiscale(raw), target)


def training_defaults(config: MRBCRConfig) -> TrainingDefaults:
    """Adam at 1e-3, 128x128 patches. The authors use batch 64 with early stopping; 16 keeps
    a CPU step affordable (pass --batch-size 64 to match them)."""
    return TrainingDefaults(
        learning_rate=1e-3, decay_rate=1.0, decay_every=1000, batch_size=16, patch=(128, 128)
    )
