"""Differentiable image-quality terms shared by the networks' losses.

SSIM here follows the evaluation convention of :mod:`deconv.metrics` (Gaussian window,
sigma 1.5, truncated at 3.5 sigma, K1 = 0.01, K2 = 0.03, data range 1) so that what a
network is trained to maximise is what it is judged by; only the border handling differs
(valid-mode convolution instead of excluding a margin afterwards).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5


def _gaussian_window(sigma: float, device, dtype) -> torch.Tensor:
    radius = int(SSIM_TRUNCATE * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable valid-mode Gaussian over every spatial axis of (N, C, *spatial)."""
    ndim = x.ndim - 2
    conv = F.conv3d if ndim == 3 else F.conv2d
    channels = x.shape[1]
    for axis in range(ndim):
        shape = [1] * ndim
        shape[axis] = window.numel()
        kernel = window.reshape(1, 1, *shape).expand(channels, 1, *shape)
        x = conv(x, kernel, groups=channels)
    return x


def ssim_torch(
    prediction: torch.Tensor, target: torch.Tensor, data_range: float = 1.0
) -> torch.Tensor:
    """Mean SSIM over a batch of (N, C, *spatial) tensors (2D or 3D).

    Always float32, also inside an autocast region: the variances are differences of nearly
    equal moments, and in bfloat16 or float16 they cancel to negative values that turn the
    loss's log(1 + SSIM) into -inf on the first step.
    """
    with torch.autocast(prediction.device.type, enabled=False):
        return _ssim(prediction.float(), target.float(), data_range)


def _ssim(prediction: torch.Tensor, target: torch.Tensor, data_range: float) -> torch.Tensor:
    window = _gaussian_window(SSIM_SIGMA, prediction.device, prediction.dtype)
    if any(s < window.numel() for s in prediction.shape[2:]):
        raise ValueError(f"SSIM needs every spatial size >= {window.numel()}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    x, y = prediction, target
    mx, my = _blur(x, window), _blur(y, window)
    vx = _blur(x * x, window) - mx * mx
    vy = _blur(y * y, window) - my * my
    cxy = _blur(x * y, window) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean()
