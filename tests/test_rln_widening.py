"""Growing trained RLN weights into a wider RLN (Net2WiderNet) for fine-tuning."""

from __future__ import annotations

import pytest
import torch

from deconv.errors import DeconvError
from deconv.training import RunDirectory, TrainConfig, train
from deconv.training.loop import _load_initial_weights
from deconv.zoo import create_model, get_model_spec
from deconv.zoo.pretrained import load_pretrained
from deconv.zoo.rln import RLNConfig
from deconv.zoo.rln_widening import widen_rln_state


def _trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """Random BatchNorm statistics and affine terms, so copying them is really tested."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=gen))
                module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                module.weight.copy_(0.5 + torch.rand(n, generator=gen))
                module.bias.copy_(torch.rand(n, generator=gen) - 0.5)
    return model.eval()


@pytest.mark.parametrize(("ndim", "width", "bp_width"), [(2, 8, 16), (2, 12, 8), (3, 8, 24)])
def test_widened_network_computes_the_same_function(ndim, width, bp_width):
    small = _trained_like(create_model(f"rln{ndim}d"))
    big = create_model(f"rln{ndim}d", width=width, bp_width=bp_width).eval()
    state = widen_rln_state(small.state_dict(), small.config, big.config, noise=0.0)
    big.load_state_dict(state)
    x = 2 * torch.rand(2, 1, *(12,) * ndim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(big(x), small(x), rtol=1e-4, atol=1e-5)
    assert sum(p.numel() for p in big.parameters()) > sum(p.numel() for p in small.parameters())


def test_noise_lets_copies_differ_but_keeps_the_function_close():
    small = load_pretrained("rln2d.widefield-synthetic")[0].eval()
    old = small.config
    wider = {"width": 2 * old.width, "bp_width": 2 * old.bp_width}
    big = create_model("rln2d", **{**old.model_dump(exclude={"architecture"}), **wider}).eval()
    gen = torch.Generator().manual_seed(1)
    big.load_state_dict(widen_rln_state(small.state_dict(), small.config, big.config, 0.01, gen))
    w = big.state_dict()["bp1_b2.conv.weight"]
    n = w.shape[0] // 2
    assert not torch.equal(w[:n], w[n:])  # the two copies of each channel can diverge
    x = 2 * torch.rand(1, 1, 64, 64, generator=gen)

    def change(noise: float) -> float:
        grown = widen_rln_state(small.state_dict(), small.config, big.config, noise, gen)
        big.load_state_dict(grown)
        with torch.no_grad():
            a, b = small(x), big(x)
        return float((a - b).norm() / a.norm())

    # 1% weight noise moves the output by a few percent (a restart, not a new network);
    # ten times the noise moves it several times as much
    small_change, large_change = change(0.01), change(0.1)
    assert small_change < 0.1 and large_change > 4 * small_change


def test_weights_grow_only_by_whole_multiples():
    for width in (2, 6):  # shrinking, or channels copied unequally often (changes the means)
        with pytest.raises(DeconvError, match="multiple of the old one"):
            widen_rln_state({}, RLNConfig(width=4), RLNConfig(width=width))
    with pytest.raises(DeconvError, match="dimensionality must match"):
        widen_rln_state({}, RLNConfig(ndim=2), RLNConfig(ndim=3))
    with pytest.raises(DeconvError, match="lateral pooling window 2 into one with 4"):
        widen_rln_state({}, RLNConfig(), RLNConfig(h1_lateral_pool=4))
    with pytest.raises(DeconvError, match="h1_undecimated=False into one with h1_undecimated=True"):
        widen_rln_state({}, RLNConfig(), RLNConfig(width=8, h1_undecimated=True))


def test_init_weights_grows_a_run_into_a_wider_model(tmp_path):
    from deconv.psf import generate_psf, save_psf

    psf = save_psf(generate_psf(shape=(9, 17, 17)), tmp_path / "psf.tif")
    fast = {"patch": (16, 32, 32), "volume_shape": (32, 64, 64), "pool_size": 2,
            "batch_size": 2, "steps": 2, "val_every": 2, "validation_count": 1}  # fmt: skip
    train(TrainConfig(model="rln3d_tiny", psf=str(psf), **fast), tmp_path / "narrow")
    source = create_model("rln3d_tiny").eval()
    source.load_state_dict(RunDirectory(tmp_path / "narrow").inference_weights("best"))
    wide = create_model("rln3d_tiny", width=2, bp_width=3)
    _load_initial_weights(wide, str(tmp_path / "narrow"), get_model_spec("rln3d_tiny").grow)
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = source(x), wide.eval()(x)
    assert float((a - b).norm() / a.norm()) < 0.05
    # the whole CLI path: a fine-tune of a wider model starts from the narrow run
    train(
        TrainConfig(model="rln3d_tiny", psf=str(psf), init_weights=str(tmp_path / "narrow"),
                    model_overrides={"width": 2, "bp_width": 3}, **fast),
        tmp_path / "wide",
    )  # fmt: skip
    card = RunDirectory(tmp_path / "wide").read_json("run.json")["card"]
    assert card["parameters"] == sum(p.numel() for p in wide.parameters())
    with pytest.raises(DeconvError, match="multiple of the old one"):
        train(
            TrainConfig(model="rln3d_tiny", psf=str(psf), init_weights=str(tmp_path / "wide"),
                        **fast),
            tmp_path / "narrower",
        )  # fmt: skip
