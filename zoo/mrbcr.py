"""m-rBCR: multi-stage residual BCR network (Li, Kudryashev, Yakimovich, ECCV 2024).

Why this design: a BCR-Net forward stage (a learned wavelet transform in the nonstandard
form) models the blur cheaply at several scales, and an inverse stage of residual dense
blocks undoes it coarse to fine; every scale emits an output and is supervised, which is
what keeps the network small (about 30x fewer parameters than MIMO-UNet).

Graph for ``scales = 3`` (x_s = x[..., ::2**s, ::2**s], strided subsamples):

- forward, per scale (own weights): y_s = BCR_s(x_s), ``width`` channels;
- fusion (ONE module shared by all neighbour pairs, as released): for s < S-1,
  f_s = AFF(up(y_s), up(y_{s+1})) at full resolution, resized back to scale s;
- heads, per scale: z_s = conv1x1(cat(y_s, f_s)) (coarsest: conv1x1(y_s)), 1 channel;
- inverse, coarse to fine: xi_{S-1} = P_{S-1}(z_{S-1});
  xi_s = P_s(AFF_inv(z_s, up(xi_{s+1}))), with AFF_inv ONE module shared across scales
  and P_s per scale (own weights; the coarsest takes 1 channel, the others 48);
- outputs, per scale: out_s = conv9x9(xi_s + z_s) (z_s broadcast over channels).

``levels = 0`` reproduces the authors' released network, whose BCR levels never run
(L = L0): BCR_s is 12 per-pixel dense layers of width 32. Its trainable parameters are
exactly the checkpoint's **236,630**, no difference:

- forward dense stacks 3 x (64 + 11 x 1,056) = 35,040; shared AFF 64->32: 2,080 + 9,248 =
  11,328; heads 33 + 65 + 65 = 163;
- shared inverse AFF 49->48: 2,400 + 20,784 = 23,184;
- P row convs: coarsest 192 + 5 x 5,152 = 25,952, the two others 7,712 + 25,760 = 33,472
  each; 4 residual dense blocks per P: 4,524 + 4,972 + 5,420 + 5,868 = 20,784 (x 3);
- output convs 3 x (48 x 81 + 1) = 11,667.

That count pins down what is shared: a per-scale forward fusion would give 247,958, a
per-scale inverse fusion 259,814, one forward dense stack shared by all scales 213,270.

``levels >= 1`` (default 1) makes the BCR levels real (see ``_bcr_blocks.WaveletLevel``):
stride-2 2x2 analysis conv -> scaling part (recursed, dense stack at the bottom) + 3 detail
bands, each band refined by its own residual 3x3 conv stack (grouped conv), stride-2
transposed-conv synthesis. Width 32: 457,238 parameters at levels=1, 722,486 at levels=2;
the ``mrbcr2d_tiny`` golden-test config has 418.

Sizes: H and W must be multiples of 2**(scales - 1 + levels) (4 released, 8 default) so
every strided subsample and wavelet level divides exactly. The card's halo is a
conservative receptive-field bound (``halo()``): (y, x) = (184, 268) released, (208, 296)
default; a gradient probe with all ReLUs active measures (180, 264) and (200, 280).
Weights start Glorot-uniform with zero biases (the Keras defaults the authors trained
from), deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import Tensor, nn

from deconv.errors import DeconvError
from deconv.zoo._bcr_blocks import Fusion, InverseBranch, forward_stage, resize_like
from deconv.zoo.card import Citation, ModelCard, ModelConfig, Normalization, TrainingDefaults

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


class MRBCR(nn.Module):
    """The m-rBCR network for (N, 1, H, W) inputs; ``forward`` returns the finest output."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        cfg = MRBCRConfig(**kwargs)
        self.config = cfg
        w, n = cfg.width, cfg.scales
        c_inv = w + cfg.dense_blocks * cfg.growth
        self.forward_stages = nn.ModuleList(
            forward_stage(w, cfg.levels, cfg.forward_layers, cfg.detail_convs) for _ in range(n)
        )
        self.fusion = Fusion(2 * w, w) if n > 1 else None
        self.heads = nn.ModuleList(nn.Conv2d(2 * w if s < n - 1 else w, 1, 1) for s in range(n))
        self.inverse_fusion = Fusion(1 + c_inv, c_inv) if n > 1 else None
        self.inverse = nn.ModuleList(
            InverseBranch(
                1 if s == n - 1 else c_inv,
                w,
                cfg.inverse_convs,
                cfg.inverse_kernel,
                cfg.dense_blocks,
                cfg.growth,
                cfg.dense_layers,
            )
            for s in range(n)
        )
        k = cfg.output_kernel
        self.outputs = nn.ModuleList(nn.Conv2d(c_inv, 1, k, padding=k // 2) for _ in range(n))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 1:
            raise DeconvError(f"MRBCR expects (N, 1, H, W) input, got shape {tuple(x.shape)}")
        m = self.config.multiple
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % m or w % m or h < m or w < m:
            raise DeconvError(
                f"MRBCR needs H and W to be positive multiples of {m} "
                f"(2**(scales-1+levels)); got {h}x{w}: pad or crop the input"
            )

    def forward_multiscale(self, x: Tensor) -> list[Tensor]:
        """Outputs of every scale, finest first: shapes (N, 1, H / 2**s, W / 2**s)."""
        self._check(x)
        n = self.config.scales
        xs = [x[..., :: 2**s, :: 2**s] for s in range(n)]
        ys = [stage(xi) for stage, xi in zip(self.forward_stages, xs)]
        zs = []
        for s in range(n):
            if s < n - 1:
                assert self.fusion is not None
                f = self.fusion(resize_like(ys[s], ys[0]), resize_like(ys[s + 1], ys[0]))
                zs.append(self.heads[s](torch.cat([ys[s], resize_like(f, ys[s])], dim=1)))
            else:
                zs.append(self.heads[s](ys[s]))
        xis: list[Tensor] = [zs[-1]] * n
        xis[-1] = self.inverse[-1](zs[-1])
        for s in reversed(range(n - 1)):
            assert self.inverse_fusion is not None
            g = self.inverse_fusion(zs[s], resize_like(xis[s + 1], zs[s]))
            xis[s] = self.inverse[s](g)
        return [out(xi + z) for out, xi, z in zip(self.outputs, xis, zs)]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_multiscale(x)[0]


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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


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
