"""Classical Richardson-Lucy as a zoo model: no trainable weights, the PSF is its parameter."""

from __future__ import annotations

import numpy as np
import torch

from deconv.richardson_lucy import RichardsonLucy, RLConfig
from deconv.rl_transforms import Engine
from deconv.zoo.card import Citation, ModelCard, Normalization
from deconv.zoo.registry import ModelSpec


def build_rl(
    psf: np.ndarray,
    config: RLConfig | None = None,
    device: str | torch.device = "cpu",
    fft: Engine = "auto",
) -> RichardsonLucy:
    return RichardsonLucy(psf, config or RLConfig(), device, fft=fft)


def rl_card(name: str) -> ModelCard:
    return ModelCard(
        name=name,
        architecture="rl",
        description="Richardson-Lucy deconvolution with traditional or unmatched "
        "(Wiener-Butterworth) back projectors; the PSF is its only parameter",
        ndim=None,
        trainable=False,
        min_size=(1,),
        step=(1,),
        halo=(0,),
        normalization=Normalization(kind="none"),
        loss="Poisson likelihood (no training)",
        citation=[
            Citation(
                text="Richardson, J. Opt. Soc. Am. 62, 55-59 (1972)", doi="10.1364/JOSA.62.000055"
            ),
            Citation(text="Lucy, Astron. J. 79, 745 (1974)", doi="10.1086/111605"),
            Citation(
                text="Guo et al., Nat. Biotechnol. 38, 1337-1346 (2020)",
                doi="10.1038/s41587-020-0560-x",
            ),
        ],
        parameters=0,
    )


RL_SPEC = ModelSpec(card=rl_card, build=build_rl)
