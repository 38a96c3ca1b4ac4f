"""RLN network graph, self-contained (imports only torch): the Richardson-Lucy Network of
Li et al., Nature Methods 19, 1427-1437 (2022).

This file is copied verbatim into bioimage.io packages as the architecture of their
``pytorch_state_dict`` weights, so that tools without ``deconv`` installed can rebuild the
network; :mod:`deconv.zoo.rln` adds the config, card and loss on top.

A network shaped like one RL iteration, run twice: at half scale (H1) a learned forward
projector FP blurs the input, a division DV compares it with the data and a learned back
projector BP turns the ratio into a multiplicative update of the input; at full scale (H2)
a second forward projector and back projector refine that estimate; a small merge (H3)
combines both. The physics prior is why ~16k parameters suffice and why a model trained on
synthetic data of one PSF restores real data of that PSF.

Facts kept from the paper's released network: convolutions 3x3(x3) without bias, BatchNorm
(eps 1e-3, momentum 0.01), softplus everywhere, 15,968 trainable parameters in 3D (15,808
conv weights + 160 BatchNorm affine), 5,472 in 2D (same graph with 2D ops). The first
forward-projector convolutions start as isotropic Gaussians (peak 1, sigma 4, 1, 2, 3 voxels
for the four output filters, each input channel scaled by U(0.7, 1)); the others start
truncated-normal (std 0.05). The divisions and products use plain autograd (the original
uses surrogate gradients); they are kept in float32 under autocast because their 1e-3
offset is close to float16's resolution.

Odd sizes: average pooling floors and the transposed convolution would need a size-dependent
output_padding (static in ONNX), so inputs are mirror-padded to multiples of H1's pooling
window (even sizes with the paper's window of 2) and cropped back.

``h1_lateral_pool=4`` (not in the paper) runs H1 at a quarter of the lateral resolution, so
its projectors reach twice as far sideways: the widefield PSF spreads light ~32 pixels to
each side, the paper's H1 sees 16.

``h1_undecimated=True`` (not in the paper) runs H1 without decimation: pooling at stride 1,
its 3x3 convolutions dilated by the pooling window, and the transposed convolution replaced
by the ordinary convolution that averages its outputs over all phases. Every phase of the
dilated grid computes exactly what the paper's H1 computes on a shifted input, so the weights
are the same tensors and carry over either way, but the output no longer depends on where
the pooling grid falls (the paper's H1 is shift-variant: averaging a 2D network's outputs
over the 4 one-pixel shifts gained 0.3 dB). H1 then costs as much as at full scale (2D width
16: the whole network ~1.4x as long on a CPU), and any input size works without padding.

``flip_axes`` (not in the paper) makes the network exactly equivariant to flips of those
spatial axes, the flips that leave a widefield PSF unchanged. A plain network answers a
flipped image only approximately with the flipped answer, and that asymmetric error grows on
structures it was not trained on. The network runs once per combination of the flips (a
"frame": 2^k of them, stacked along the batch), each frame on its flipped copy of the input,
and the frames meet twice, before the merge layers ``m2`` and ``out``: every frame adds a
learned 1x1 mix of the other frames' features at the same physical voxel (flipped into its
own orientation). With the mixing weights at zero the network is the mean of its frames,
i.e. the flip average of the plain network; trained, the frames exchange what each sees
(a group convolution over the flips, after Cohen and Welling, ICML 2016). The cost is one
plain network per frame. Equivariance is exact for sizes that need no padding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.01
DIVISION_OFFSET = 1e-3
GAUSSIAN_SIGMAS = (4.0, 1.0, 2.0, 3.0)  # {2s, s/2, s, 1.5s} with s = 2


class _ConvBN(nn.Module):
    """conv (no bias) -> BatchNorm -> softplus, the unit RLN is made of."""

    def __init__(
        self, ndim: int, cin: int, cout: int, bn: bool = True, dilation: int | tuple = 1
    ) -> None:
        super().__init__()
        conv = nn.Conv3d if ndim == 3 else nn.Conv2d
        norm = nn.BatchNorm3d if ndim == 3 else nn.BatchNorm2d
        self.conv = conv(cin, cout, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn = norm(cout, eps=BN_EPS, momentum=BN_MOMENTUM) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.bn(self.conv(x)))


def _norm(ndim: int, channels: int) -> nn.Module:
    cls = nn.BatchNorm3d if ndim == 3 else nn.BatchNorm2d
    return cls(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class RLN(nn.Module):
    """RLN for single-channel 2D or 3D inputs (N, 1, *spatial) -> (N, 1, *spatial)."""

    def __init__(
        self,
        architecture: str = "rln",
        ndim: int = 3,
        width: int = 4,
        bp_width: int = 8,
        h1_lateral_pool: int = 2,
        h1_undecimated: bool = False,
        flip_axes: tuple[int, ...] | list[int] = (),
    ) -> None:
        super().__init__()
        flip_axes = tuple(int(a) for a in flip_axes)
        if (
            architecture != "rln"
            or ndim not in (2, 3)
            or min(width, bp_width) < 1
            or h1_lateral_pool not in (2, 4)
            or len(set(flip_axes)) != len(flip_axes)
            or not all(0 <= a < ndim for a in flip_axes)
        ):
            raise ValueError(
                f"not an RLN: {architecture=}, {ndim=}, {width=}, {bp_width=}, {h1_lateral_pool=}"
                f", {h1_undecimated=}, {flip_axes=}"
            )
        n, w, b = ndim, width, bp_width
        self.ndim, self.width = n, w
        # H1's pooling window: 2 along z (the PSF's axial reach is within H1's at 2), 2 or 4
        # laterally (4 doubles H1's lateral reach, towards the widefield PSF's width)
        p = h1_lateral_pool
        self.h1_pool = (2, p, p) if n == 3 else (p, p)
        self.h1_undecimated = bool(h1_undecimated)
        # input sizes must be multiples of this; other sizes are mirror-padded and cropped
        self.size_step = (1,) * n if self.h1_undecimated else self.h1_pool
        dilation = self.h1_pool if self.h1_undecimated else 1
        # H1: half scale
        self.fp1_a1 = _ConvBN(n, 1, w, dilation=dilation)
        self.fp1_a2 = _ConvBN(n, w, w, dilation=dilation)
        self.fp1_f = _ConvBN(n, 2 * w, w, dilation=dilation)
        self.dv1_bn = _norm(n, 1)
        self.bp1_b1 = _ConvBN(n, 1, b, dilation=dilation)
        self.bp1_b2 = _ConvBN(n, b, b, dilation=dilation)
        self.bp1_b3 = _ConvBN(n, 2 * b, b, dilation=dilation)
        up = nn.ConvTranspose3d if n == 3 else nn.ConvTranspose2d
        self.bp1_up = up(b, w, self.h1_pool, stride=self.h1_pool, bias=False)
        self.bp1_up_bn = _norm(n, w)
        self.bp1_b4 = _ConvBN(n, w, w)
        self.e1_bn = _norm(n, 1)
        # H2: full scale
        self.fp2_a1 = _ConvBN(n, 1, w)
        self.fp2_a2 = _ConvBN(n, w, w)
        self.dv2_bn = _norm(n, 1)
        self.bp2_b1 = _ConvBN(n, 1, b)
        self.bp2_b2 = _ConvBN(n, b, b)
        self.e2_bn = _norm(n, 1)
        # H3: merge
        self.m1 = _ConvBN(n, 1, b, bn=False)
        self.m2 = _ConvBN(n, b + 2, b, bn=False)
        self.out = _ConvBN(n, 2 * b, b)
        self._init_weights()
        # frame f sees the input flipped along these spatial axes (frame 0: unflipped); frames
        # are numbered by bit masks over flip_axes, so frame f seen from frame g is frame f ^ g
        self.frame_flips = [
            tuple(a for i, a in enumerate(flip_axes) if f >> i & 1)
            for f in range(2 ** len(flip_axes))
        ]
        if flip_axes:
            conv = nn.Conv3d if n == 3 else nn.Conv2d
            others = len(self.frame_flips) - 1
            self.frame_mix_merge = conv(others * (b + 2), b + 2, 1, bias=False)
            self.frame_mix_out = conv(others * 2 * b, 2 * b, 1, bias=False)
            nn.init.zeros_(self.frame_mix_merge.weight)
            nn.init.zeros_(self.frame_mix_out.weight)
        else:
            self.frame_mix_merge = self.frame_mix_out = None

    def _init_weights(self) -> None:
        gaussian = [self.fp1_a1, self.fp1_a2, self.fp1_f, self.fp2_a1, self.fp2_a2]
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.ConvTranspose3d):
                nn.init.trunc_normal_(module.weight, std=0.05, a=-0.1, b=0.1)
        for unit in gaussian:
            _gaussian_init_(unit.conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and the H1 update before its BatchNorm (target of the auxiliary loss)."""
        spatial = x.shape[2:]
        pads = []
        for size, factor in zip(reversed(spatial), reversed(self.size_step)):
            pads += [0, -int(size) % factor]
        if not any(pads):  # the only path traced/exported graphs contain: no size constants
            return self._forward_even(x)
        x = F.pad(x, pads, mode="reflect" if min(spatial) > 1 else "replicate")
        out, aux = self._forward_even(x)
        crop = (slice(None), slice(None), *[slice(0, int(s)) for s in spatial])
        return out[crop], aux[crop]

    def _forward_even(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(self.frame_flips) == 1:
            return self._forward_frames(y)
        frames = torch.cat([_flip(y, axes) for axes in self.frame_flips], 0)
        out, aux = self._forward_frames(frames)
        return self._mean_of_frames(out), self._mean_of_frames(aux)

    def _mean_of_frames(self, t: torch.Tensor) -> torch.Tensor:
        """Each frame's answer flipped back into the input's orientation, averaged."""
        parts = t.chunk(len(self.frame_flips), 0)
        return sum(_flip(p, axes) for p, axes in zip(parts, self.frame_flips)) / len(parts)

    def _mix_frames(self, z: torch.Tensor, mix: nn.Module | None) -> torch.Tensor:
        """z plus a learned mix of the other frames' z, each seen from this frame."""
        if mix is None:
            return z
        parts = z.chunk(len(self.frame_flips), 0)
        seen = [
            _flip(torch.cat([parts[g ^ f] for g in range(len(parts))], 0), axes)
            for f, axes in enumerate(self.frame_flips)
            if f
        ]
        return z + mix(torch.cat(seen, 1))

    def _forward_frames(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Intermediates are deleted after their last use: inference memory is then a few
        # feature maps, not all of them (what bounds the tile size on CPUs and GPUs).
        width = self.width
        # H1 at half scale (undecimated: every phase of it, on the full grid)
        yd = self._h1_pool(y)
        a1 = self.fp1_a1(yd)
        a2 = self.fp1_a2(a1)
        f1 = self.fp1_f(torch.cat([a1, a2], 1)) + F.softplus(yd.expand(-1, width, *yd.shape[2:]))
        del a1, a2
        d1 = self.dv1_bn(_divide(yd, f1.mean(1, keepdim=True)))
        del f1, yd
        b1 = self.bp1_b1(d1)
        b2 = self.bp1_b2(b1)
        b3 = self.bp1_b3(torch.cat([b2, b1], 1))
        del b1, b2, d1
        up = F.softplus(self.bp1_up_bn(self._h1_upsample(b3)))
        del b3
        b4 = self.bp1_b4(up)
        del up
        t2 = _multiply(y, b4.mean(1, keepdim=True))
        del b4
        e1 = F.softplus(self.e1_bn(t2))
        # H2 at full scale: FP2 and DV2 act on the data, BP2 refines E1
        f2 = self.fp2_a2(self.fp2_a1(y)) + F.softplus(y.expand(-1, width, *y.shape[2:]))
        d2 = self.dv2_bn(_divide(y, f2.mean(1, keepdim=True)))
        del f2
        g2 = self.bp2_b2(self.bp2_b1(d2)) + 1.0
        del d2
        e2 = F.softplus(self.e2_bn(_multiply(e1, g2.mean(1, keepdim=True))))
        del g2
        # H3 merge
        m1 = self.m1(e2)
        merge = torch.cat([m1, e2, e1], 1)
        del e1, e2
        m2 = self.m2(self._mix_frames(merge, self.frame_mix_merge))
        del merge
        out = self.out(self._mix_frames(torch.cat([m1, m2], 1), self.frame_mix_out))
        del m1, m2
        return out.mean(1, keepdim=True), t2

    def _h1_pool(self, y: torch.Tensor) -> torch.Tensor:
        pool = F.avg_pool3d if self.ndim == 3 else F.avg_pool2d
        if not self.h1_undecimated:
            return pool(y, self.h1_pool)
        # the window's mean at every voxel (window starting there), the trailing edge replicated
        trailing = [pad for p in reversed(self.h1_pool) for pad in (0, p - 1)]
        return pool(F.pad(y, trailing, mode="replicate"), self.h1_pool, stride=1)

    def _h1_upsample(self, b3: torch.Tensor) -> torch.Tensor:
        if not self.h1_undecimated:
            return self.bp1_up(b3)
        # The transposed convolution writes W[a] * B[i] to voxel p * i + a. With every phase
        # present, voxel x receives W[a] * B[x - a] from the phase starting at x - a; the mean
        # over the phases is a plain convolution with the flipped kernel, padded on the
        # leading side.
        spatial = list(range(2, 2 + self.ndim))
        kernel = self.bp1_up.weight.transpose(0, 1).flip(spatial)
        kernel = kernel / math.prod(self.h1_pool)
        leading = [pad for p in reversed(self.h1_pool) for pad in (p - 1, 0)]
        conv = F.conv3d if self.ndim == 3 else F.conv2d
        return conv(F.pad(b3, leading), kernel)


def _flip(t: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """``t`` (N, C, *spatial) flipped along spatial ``axes``."""
    return torch.flip(t, [2 + a for a in axes]) if axes else t


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    with torch.autocast(a.device.type, enabled=False):
        return _at_least_float32(a) / (_at_least_float32(b) + DIVISION_OFFSET)


def _multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    with torch.autocast(a.device.type, enabled=False):
        return _at_least_float32(a) * _at_least_float32(b)


@torch.no_grad()
def _gaussian_init_(weight: torch.Tensor) -> None:
    """Isotropic Gaussians with peak 1, sigma by output filter, U(0.7, 1) per input channel."""
    cout, cin, *kernel = weight.shape
    grids = torch.meshgrid(
        *[torch.arange(k, dtype=torch.float32) - (k - 1) / 2 for k in kernel], indexing="ij"
    )
    r2 = sum(g**2 for g in grids)
    for o in range(cout):
        sigma = GAUSSIAN_SIGMAS[o % len(GAUSSIAN_SIGMAS)]
        base = torch.exp(-r2 / (2 * sigma**2))
        for i in range(cin):
            weight[o, i] = base * torch.empty(()).uniform_(0.7, 1.0)
