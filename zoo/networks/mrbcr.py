"""m-rBCR network graph, self-contained (imports only torch): the multi-stage residual BCR
network of Li, Kudryashev, Yakimovich (ECCV 2024).

Copied verbatim into bioimage.io packages as the ``pytorch_state_dict`` architecture;
:mod:`deconv.zoo.mrbcr` adds the config, card, loss and receptive-field bound. Only ops that
export cleanly to ONNX are used: ordinary and grouped convolutions, one transposed
convolution, bilinear resizing, ReLU and concatenation (no locally-connected layers).

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

``levels >= 1`` (default 1) makes the BCR levels real (see ``WaveletLevel``):
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

from types import SimpleNamespace

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


class MRBCR(nn.Module):
    """The m-rBCR network for (N, 1, H, W) inputs; ``forward`` returns the finest output."""

    def __init__(
        self,
        architecture: str = "mrbcr",
        ndim: int = 2,
        width: int = 32,
        levels: int = 1,
        forward_layers: int = 12,
        dense_blocks: int = 4,
        scales: int = 3,
        growth: int = 4,
        dense_layers: int = 3,
        inverse_convs: int = 6,
        inverse_kernel: int = 5,
        output_kernel: int = 9,
        detail_convs: int = 2,
    ) -> None:
        super().__init__()
        if (
            architecture != "mrbcr"
            or ndim != 2
            or inverse_kernel % 2 == 0
            or output_kernel % 2 == 0
        ):
            raise ValueError(f"not an m-rBCR: {architecture=}, {ndim=}, odd kernels required")
        cfg = SimpleNamespace(
            width=width, levels=levels, forward_layers=forward_layers, dense_blocks=dense_blocks,
            scales=scales, growth=growth, dense_layers=dense_layers, inverse_convs=inverse_convs,
            inverse_kernel=inverse_kernel, output_kernel=output_kernel, detail_convs=detail_convs,
        )  # fmt: skip
        self.scales = scales
        self.multiple = 2 ** (scales - 1 + levels)
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
            raise ValueError(f"MRBCR expects (N, 1, H, W) input, got shape {tuple(x.shape)}")
        m = self.multiple
        h, w = int(x.shape[-2]), int(x.shape[-1])
        if h % m or w % m or h < m or w < m:
            raise ValueError(
                f"MRBCR needs H and W to be positive multiples of {m} "
                f"(2**(scales-1+levels)); got {h}x{w}: pad or crop the input"
            )

    def forward_multiscale(self, x: Tensor) -> list[Tensor]:
        """Outputs of every scale, finest first: shapes (N, 1, H / 2**s, W / 2**s)."""
        self._check(x)
        n = self.scales
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
