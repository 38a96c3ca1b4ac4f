"""Image-quality metrics with the convention of the deconvolution literature.

RLN, RCAN, CARE and their peers report PSNR and SSIM after the same normalisation, so numbers
are only comparable when it is followed exactly:

1. the ground truth is normalised by its (0.1, 99.9) percentiles;
2. the prediction is fitted to it affinely (least squares: scale = cov(p, t) / var(p)), which
   makes the score blind to the arbitrary intensity scale of a deconvolution;
3. PSNR with data range 1, and SSIM with a Gaussian window (sigma 1.5, 2D or 3D),
   K1 = 0.01, K2 = 0.03, population statistics, as scikit-image computes it with
   ``gaussian_weights=True, use_sample_covariance=False``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from deconv.errors import DeconvError

GT_PERCENTILES = (0.1, 99.9)


def normalize_percentile(
    image: np.ndarray, low: float = GT_PERCENTILES[0], high: float = GT_PERCENTILES[1]
) -> np.ndarray:
    """Map the ``low``/``high`` percentiles to 0/1 (float64, not clipped)."""
    image = np.asarray(image, dtype=np.float64)
    lo, hi = np.percentile(image, [low, high])
    return (image - lo) / max(hi - lo, 1e-12)


def fit_affine(prediction: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``prediction`` scaled and offset to best match ``target`` in the least-squares sense."""
    p = np.asarray(prediction, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    pc = p - p.mean()
    var = float((pc * pc).mean())
    scale = float((pc * (t - t.mean())).mean()) / var if var > 0 else 0.0
    return t.mean() + scale * pc


def psnr(prediction: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(prediction, np.float64) - target) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def ssim(
    prediction: np.ndarray, target: np.ndarray, data_range: float = 1.0, sigma: float = 1.5
) -> float:
    """Mean SSIM with a Gaussian window, borders excluded like scikit-image does."""
    x = np.asarray(prediction, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    truncate = 3.5
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(a):
        return gaussian_filter(a, sigma, truncate=truncate, mode="reflect")

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    pad = (2 * int(truncate * sigma + 0.5) + 1 - 1) // 2
    inner = tuple(slice(pad, n - pad) for n in s.shape)
    return float(s[inner].mean())


def evaluate(prediction: np.ndarray, ground_truth: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of a restoration under the convention above."""
    if np.shape(prediction) != np.shape(ground_truth):
        raise DeconvError(
            f"prediction {np.shape(prediction)} and ground truth {np.shape(ground_truth)} "
            "differ in shape"
        )
    target = normalize_percentile(ground_truth)
    fitted = fit_affine(prediction, target)
    return {"psnr": psnr(fitted, target), "ssim": ssim(fitted, target)}
