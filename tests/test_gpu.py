"""CUDA agrees with the CPU reference. Skipped cleanly where there is no NVIDIA GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconv.psf import generate_psf
from deconv.richardson_lucy import RichardsonLucy, RLConfig
from deconv.synth import simulate_pair

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]


@pytest.mark.parametrize(
    "config",
    [
        RLConfig(background=30),
        RLConfig(background=30, boundary="reflect"),
        RLConfig(background=30, back_projector="wiener-butterworth"),
        RLConfig(background=30, acceleration=True),
    ],
    ids=["noncirculant", "reflect", "wiener-butterworth", "accelerated"],
)
def test_cuda_matches_cpu(config):
    psf = generate_psf(shape=(17, 33, 33)).data
    raw, _ = simulate_pair((24, 80, 72), psf, seed=2)
    cpu = RichardsonLucy(psf, config, "cpu")(raw, iterations=10).numpy()
    gpu = RichardsonLucy(psf, config, "cuda")(raw, iterations=10).cpu().numpy()
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-4 * float(np.abs(cpu).max()))
