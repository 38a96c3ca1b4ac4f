"""RLN with ``flip_axes``: exact flip equivariance, its start as the flip average of a plain
network, its parameter count, its ONNX graph, and its config errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deconv.errors import DeconvError
from deconv.runtime.flip_averaging import FlipAveraged
from deconv.zoo import create_model, get_model_card
from deconv.zoo.rln import RLN, RLNConfig
from deconv.zoo.rln_widening import grow_weights, widen_rln_state


def _trained_looking(model: RLN, mixing: bool = True) -> RLN:
    """Random BatchNorm statistics and (optionally) non-zero frame mixing, so that nothing
    is symmetric by accident of initialisation."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
                n = module.num_features
                module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            elif name.startswith("frame_mix") and mixing:
                module.weight.copy_(0.1 * torch.randn(module.weight.shape, generator=generator))
    return model.eval().double()


def _flip(x: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    return torch.flip(x, [2 + a for a in axes])


@pytest.mark.parametrize(
    "ndim, flip_axes, shape, config",
    [
        (2, (0, 1), (40, 56), {}),
        (2, (0, 1), (41, 37), {"h1_undecimated": True}),  # any size: nothing is padded
        (3, (1, 2), (8, 24, 32), {}),
        (3, (0, 1, 2), (8, 16, 24), {"h1_lateral_pool": 4}),
    ],
)
def test_output_commutes_exactly_with_the_declared_flips(ndim, flip_axes, shape, config):
    torch.manual_seed(0)
    x = torch.rand((2, 1, *shape), dtype=torch.float64) + 0.2
    errors = {}
    for axes in ((), flip_axes):
        model = _trained_looking(RLN(ndim=ndim, width=2, bp_width=4, flip_axes=axes, **config))
        with torch.no_grad():
            out = model(x)
            for flip in ((a,) for a in flip_axes):
                moved = _flip(model(_flip(x, flip)), flip)
                errors[axes] = max(errors.get(axes, 0.0), float((moved - out).abs().max()))
        scale = float(out.abs().max())
    assert errors[flip_axes] < 1e-12 * scale  # float64 round-off
    assert errors[()] > 1e-6 * scale  # the plain network is not equivariant


def test_a_plain_network_grown_equivariant_starts_as_its_flip_average():
    """Zero frame mixing: the network is the mean over its frames, which is what ``--tta``
    computes around the plain network (numpy flips, independent of the graph's own)."""
    torch.manual_seed(0)
    plain_config = RLNConfig(ndim=2, width=4, bp_width=8, h1_undecimated=True)
    flipped_config = plain_config.model_copy(update={"flip_axes": (0, 1)})
    plain = _trained_looking(RLN(**plain_config.model_dump()))
    state = widen_rln_state(plain.state_dict(), plain_config, flipped_config)
    equivariant = RLN(**flipped_config.model_dump()).double().eval()
    equivariant.load_state_dict(state)  # strict: the mixing weights were added, at zero
    assert not equivariant.frame_mix_out.weight.any()

    def backend(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return plain(torch.from_numpy(batch)).numpy()

    x = np.random.default_rng(0).random((1, 1, 48, 40)) + 0.2
    expected = FlipAveraged(backend, [(), (0,), (1,), (0, 1)], ndim=2)(x)
    with torch.no_grad():
        out = equivariant(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_parameter_count_adds_one_1x1_mix_per_other_frame():
    # 3D defaults (bp_width 8), lateral flips: 4 frames, 3 others per frame.
    #   before m2: (b + 2) channels read from 3 others -> 3 * 10 * 10 = 300
    #   before out: 2b channels -> 3 * 16 * 16 = 768
    assert get_model_card("rln3d", {"flip_axes": [1, 2]}).parameters == 15_968 + 300 + 768
    # 2D: the same mixing on top of 5,472
    assert get_model_card("rln2d", {"flip_axes": [0, 1]}).parameters == 5_472 + 300 + 768


def test_onnx_graph_agrees_with_pytorch_with_mixing_switched_on(tmp_path):
    pytest.importorskip("onnxruntime")
    from deconv.exporters.onnx import export_onnx, onnx_runner

    model = _trained_looking(RLN(ndim=2, width=2, bp_width=4, flip_axes=(0, 1))).float()
    x = np.random.default_rng(1).random((1, 1, 32, 24), dtype=np.float32) + 0.2
    path = export_onnx(model, x, tmp_path / "model.onnx")
    other = np.random.default_rng(2).random((2, 1, 40, 48), dtype=np.float32) + 0.2
    for batch in (x, other):  # dynamic batch and spatial sizes
        with torch.no_grad():
            expected = model(torch.from_numpy(batch)).numpy()
        np.testing.assert_allclose(onnx_runner(path)(batch), expected, rtol=1e-4, atol=1e-5)


def test_bad_flip_axes_and_ungrowable_weights_are_clear_errors():
    with pytest.raises(ValueError, match=r"must be distinct spatial axes 0..1, got \(0, 0\)"):
        RLNConfig(ndim=2, flip_axes=(0, 0))
    with pytest.raises(DeconvError, match=r"invalid config for rln: flip_axes: .*, got \(3,\)"):
        create_model("rln3d", flip_axes=[3])
    old = RLNConfig(ndim=2, width=4, bp_width=8, flip_axes=(0, 1)).model_dump()
    with pytest.raises(DeconvError, match="only a plain RLN grows"):
        grow_weights({}, old, {**old, "width": 8})


def test_training_refuses_flips_the_psf_does_not_have(tmp_path):
    from deconv.psf import generate_psf, save_psf
    from deconv.training import TrainConfig, train

    psf = save_psf(generate_psf(shape=(9, 17, 17)), tmp_path / "psf.tif")  # not symmetric in z
    config = TrainConfig(model="rln3d_tiny", psf=str(psf), steps=1,
                         model_overrides={"flip_axes": [0, 2]})  # fmt: skip
    with pytest.raises(DeconvError, match=r"flip_axes \[0\]: the PSF .* is not mirror-symmetric "
                       r"along this axis.*symmetric along \[1, 2\]"):  # fmt: skip
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_init_weights_from_a_plain_pretrained_network_add_zero_mixing():
    from deconv.training.loop import _load_initial_weights
    from deconv.zoo.pretrained import load_pretrained
    from deconv.zoo.registry import get_model_spec

    plain, record = load_pretrained("rln3d.widefield-synthetic")
    model = create_model("rln3d", **{**record.config, "flip_axes": [1, 2]})
    _load_initial_weights(model, "rln3d.widefield-synthetic", get_model_spec("rln3d").grow)
    state = model.state_dict()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(state[key], value)
    assert not state["frame_mix_merge.weight"].any() and not state["frame_mix_out.weight"].any()
