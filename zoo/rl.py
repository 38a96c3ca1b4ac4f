"""Classical Richardson-Lucy as a zoo model: no trainable weights, the PSF is its parameter."""

from __future__ import annotations

import numpy as np
import torch

from deconv.richardson_lucy import RichardsonLucy, RLConfig

RL_CARD = {
    "name": "rl",
    "description": "Richardson-Lucy deconvolution with traditional or unmatched back projectors",
    "dimensions": (2, 3),
    "trainable": False,
    "halo": "half the PSF size per axis",
    "citation": [
        "Richardson, J. Opt. Soc. Am. 62, 55-59 (1972), doi:10.1364/JOSA.62.000055",
        "Lucy, Astron. J. 79, 745 (1974), doi:10.1086/111605",
        "Guo et al., Nat. Biotechnol. 38, 1337-1346 (2020), doi:10.1038/s41587-020-0560-x",
    ],
}


def build_rl(
    psf: np.ndarray, config: RLConfig | None = None, device: str | torch.device = "cpu"
) -> RichardsonLucy:
    return RichardsonLucy(psf, config or RLConfig(), device)
