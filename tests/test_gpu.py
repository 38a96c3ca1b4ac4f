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


def test_rln_half_precision_matches_float32_on_cuda():
    from deconv.zoo import create_model

    torch.manual_seed(0)
    model = create_model("rln3d").cuda().eval()
    x = torch.rand(1, 1, 32, 64, 64, device="cuda")
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cuda", dtype=torch.float16):
            half = model(x).float()
    assert (half - reference).abs().max() < 0.02 * reference.abs().max()


def test_training_with_mixed_precision_on_cuda(tmp_path):
    from deconv.psf import save_psf
    from deconv.training import RunDirectory, TrainConfig, train

    psf = save_psf(generate_psf(shape=(9, 17, 17)), tmp_path / "psf.tif")
    config = TrainConfig(model="rln3d_tiny", psf=str(psf), steps=4, val_every=4, device="cuda",
                         patch=(16, 32, 32), volume_shape=(32, 64, 64), pool_size=2)  # fmt: skip
    result = train(config, tmp_path / "run")
    assert np.isfinite(result["psnr"])
    state = RunDirectory(tmp_path / "run").load_checkpoint()
    assert state["step"] == 4 and state["scaler"]  # the gradient scaler was used and saved


def test_torch_cuda_backend_through_tiles_matches_cpu():
    from deconv.exporters.sources import resolve_source
    from deconv.runtime.backends import make_backend
    from deconv.runtime.tiling import predict_tiled

    source = resolve_source("rln3d.widefield-synthetic")
    image = np.random.default_rng(0).random((40, 96, 80), dtype=np.float32)
    core = (16, 32, 32)
    cpu = predict_tiled(make_backend(source, "torch", "cpu", "fp32"), image, source.card,
                        core=core)  # fmt: skip
    gpu32 = predict_tiled(make_backend(source, "torch", "cuda", "fp32"), image, source.card,
                          core=core, batch_size=4)  # fmt: skip
    np.testing.assert_allclose(gpu32, cpu, rtol=1e-3, atol=1e-4)
    gpu16 = predict_tiled(make_backend(source, "torch", "cuda", "fp16"), image, source.card,
                          core=core, batch_size=4)  # fmt: skip
    assert np.abs(gpu16 - cpu).max() < 3e-2 * np.abs(cpu).max()
    assert next(source.model.parameters()).device.type == "cpu"  # the source was not moved
