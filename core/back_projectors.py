"""Back projectors for Richardson-Lucy: traditional and the unmatched ones of Guo et al. 2020.

Traditional RL back-projects with the flipped PSF, whose transfer function is the OTF itself:
high frequencies are attenuated twice per iteration, so RL needs tens to hundreds of
iterations. An unmatched back projector passes more of the band (Guo et al., Nature
Biotechnology 38, 1337-1346, 2020); Wiener-Butterworth converges in 1-3 iterations.

Every back projector is built on the PSF's own array (as in the paper), returned as a
centred spatial kernel of the PSF's shape normalised to sum 1. Keeping it as compact as the
PSF keeps the edge handling of the non-circulant scheme exact, and lets the RL code treat
all back projectors alike.

Frequencies are in index units of the PSF array; the cutoff along axis i is
t_i = S_i / res_i with res_i the PSF's FWHM in voxels (or a given resolution).
Wiener-Butterworth: the Butterworth steepness is eps = beta_W**2 / beta**2 - 1, where beta_W
is |W| at the cutoff. With that choice (the squared one) the product W * B has gain exactly
``beta`` on the cutoff ellipsoid, which is what the parameter is meant to set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from deconv.errors import DeconvError
from deconv.psf import fwhm

BackProjectorKind = Literal[
    "traditional", "gaussian", "butterworth", "wiener", "wiener-butterworth"
]
BACK_PROJECTORS: tuple[str, ...] = BackProjectorKind.__args__


# The parameters' one definition, shared by BackProjectorConfig, RLConfig and the CLI.
Alpha = Annotated[float, Field(gt=0, description="Wiener regularisation (noise level)")]
Beta = Annotated[float, Field(gt=0, lt=1, description="gain at the resolution cutoff")]
Order = Annotated[int, Field(ge=1, le=40, description="Butterworth order")]
Resolution = Annotated[
    tuple[float, ...] | None,
    Field(description="resolution per axis in voxels; default: the PSF's FWHM"),
]
DEFAULT_ALPHA = 0.02
DEFAULT_BETA = 0.01
DEFAULT_ORDER = 10


class BackProjectorConfig(BaseModel):
    """Parameters of the back projector; the defaults suit widefield data at moderate noise."""

    model_config = ConfigDict(extra="forbid")

    kind: BackProjectorKind = "traditional"
    alpha: Alpha = DEFAULT_ALPHA
    beta: Beta = DEFAULT_BETA
    order: Order = DEFAULT_ORDER
    resolution: Resolution = None


def back_projector(psf: np.ndarray, config: BackProjectorConfig | None = None) -> np.ndarray:
    """Centred spatial back projector with the PSF's shape, normalised to sum 1 (float32)."""
    config = config or BackProjectorConfig()
    psf = np.asarray(psf, dtype=np.float64)
    if config.kind == "traditional":
        kernel = np.flip(psf)
        return (kernel / kernel.sum()).astype(np.float32)
    resolution = _resolution(psf, config.resolution)
    if config.kind == "gaussian":
        kernel = _gaussian_kernel(psf.shape, resolution)
    else:
        kernel = np.fft.fftshift(np.real(np.fft.ifftn(_transfer(psf, resolution, config))))
    total = kernel.sum()
    if not total > 0:
        raise DeconvError(f"the {config.kind} back projector has no DC gain; check its parameters")
    return (kernel / total).astype(np.float32)


def _resolution(psf: np.ndarray, resolution: Sequence[float] | None) -> tuple[float, ...]:
    if resolution is None:
        return tuple(max(w, 1.0) for w in fwhm(psf))
    if len(resolution) != psf.ndim or any(r <= 0 for r in resolution):
        raise DeconvError(f"resolution needs {psf.ndim} positive values, got {resolution}")
    return tuple(float(r) for r in resolution)


def _gaussian_kernel(shape: Sequence[int], fwhm_voxels: Sequence[float]) -> np.ndarray:
    sigmas = [w / (2 * np.sqrt(2 * np.log(2))) for w in fwhm_voxels]
    axes = [np.exp(-0.5 * ((np.arange(n) - n // 2) / s) ** 2) for n, s in zip(shape, sigmas)]
    kernel = axes[0]
    for axis in axes[1:]:
        kernel = np.multiply.outer(kernel, axis)
    return kernel


def _transfer(psf: np.ndarray, resolution: Sequence[float], config: BackProjectorConfig):
    """Transfer function (unshifted FFT layout) of the Butterworth-family back projectors."""
    shape = psf.shape
    cutoffs = [n / r for n, r in zip(shape, resolution)]
    freqs = np.meshgrid(*[np.fft.fftfreq(n) * n for n in shape], indexing="ij", sparse=True)
    w = sum((f / t) ** 2 for f, t in zip(freqs, cutoffs))
    otf_flip = np.fft.fftn(np.fft.ifftshift(np.flip(psf)))
    otf_flip = otf_flip / np.abs(otf_flip).max()
    if config.kind == "butterworth":
        eps = 1.0 / config.beta**2 - 1.0
        return 1.0 / np.sqrt(1.0 + eps * w**config.order)
    wiener = otf_flip / (np.abs(otf_flip) ** 2 + config.alpha)
    if config.kind == "wiener":
        return wiener
    beta_w = _gain_at_cutoff(np.abs(wiener), cutoffs)
    eps = max(beta_w**2 / config.beta**2 - 1.0, 0.0)
    return wiener / np.sqrt(1.0 + eps * w**config.order)


def _gain_at_cutoff(magnitude: np.ndarray, cutoffs: Sequence[float]) -> float:
    """Mean |W| where each axis crosses the cutoff (clamped to the last sampled frequency)."""
    values = []
    for axis, (n, t) in enumerate(zip(magnitude.shape, cutoffs)):
        index = [0] * magnitude.ndim
        index[axis] = int(min(round(t), n // 2))
        values.append(magnitude[tuple(index)])
    return float(np.mean(values))
