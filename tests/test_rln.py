"""RLN: the published parameter count, the graph's facts, receptive field, odd sizes, loss."""

from __future__ import annotations

import pytest
import torch

from deconv.errors import DeconvError
from deconv.testing import check_model
from deconv.zoo import create_model, get_model_card
from deconv.zoo.rln import RLN, RLNConfig, receptive_halo, rln_loss


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_parameter_count_matches_the_paper_3d():
    # 3x3x3 conv weights, (in x out) per layer:
    #   FP1 1*4 + 4*4 + 8*4 = 52; BP1 1*8 + 8*8 + 16*8 = 200; BP1 after upsampling 4*4 = 16
    #   FP2 1*4 + 4*4 = 20; BP2 1*8 + 8*8 = 72; merge 1*8 + 10*8 + 16*8 = 216
    #   -> (52 + 200 + 16 + 20 + 72 + 216) * 27 = 576 * 27 = 15,552
    # transposed 2x2x2 conv 8 -> 4: 8 * 4 * 8 = 256  => conv weights 15,808
    # BatchNorm channels: 4+4+4 +1 +8+8+8+4+4 +1 +4+4 +1 +8+8 +1 +8 = 80 -> 160 affine
    assert n_params(RLN(ndim=3)) == 15_808 + 160 == 15_968
    assert get_model_card("rln3d").parameters == 15_968


def test_parameter_count_2d():
    # same graph with 3x3 kernels: 576 * 9 + 8 * 4 * 4 (2x2 transposed) + 160 = 5,472
    assert n_params(RLN(ndim=2)) == 576 * 9 + 128 + 160 == 5_472


def test_card_follows_the_config():
    """Cards of overridden configs (runs, shipped weights, packages) count their own
    weights; the base card would say 5,472 for the shipped 317,000-parameter 2D network."""
    config = {"width": 8, "bp_width": 16}
    card = get_model_card("rln2d", config)
    assert card.parameters == n_params(RLN(ndim=2, **config)) == 20_696
    assert card.halo == get_model_card("rln2d").halo  # width does not change the reach
    shipped = get_model_card("rln2d.widefield-synthetic").parameters
    assert shipped == n_params(RLN(ndim=2, width=32, bp_width=64)) == 317_000


def test_graph_facts():
    model = RLN()
    convs = [
        m for m in model.modules() if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d)
    ]
    assert len(convs) == 15 and all(c.bias is None for c in convs)  # 14 convs + 1 transposed
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert all(n.eps == 1e-3 and n.momentum == 0.01 for n in norms)


def test_forward_projector_starts_as_gaussians():
    torch.manual_seed(0)
    weight = RLN().fp1_a1.conv.weight.detach()  # (4 filters, 1 input, 3, 3, 3)
    centre = weight[:, 0, 1, 1, 1]
    assert torch.all((centre >= 0.7) & (centre <= 1.0))  # peak 1 scaled by U(0.7, 1)
    corner = weight[:, 0, 0, 0, 0] / centre
    # sigma 4, 1, 2, 3 voxels: corner/centre = exp(-3 / (2 sigma^2))
    expected = torch.exp(-3 / (2 * torch.tensor([4.0, 1.0, 2.0, 3.0]) ** 2))
    torch.testing.assert_close(corner, expected)


@pytest.mark.parametrize(
    "ndim, pool, undecimated",
    [(2, 2, False), (3, 2, False), (2, 4, False), (3, 4, False), (2, 2, True), (3, 2, True)],
)
def test_receptive_field_matches_autograd(ndim, pool, undecimated):
    torch.manual_seed(0)
    config = {"h1_lateral_pool": pool, "h1_undecimated": undecimated}
    model = RLN(ndim=ndim, **config).eval().double()
    size = 72
    x = (torch.rand((1, 1) + (size,) * ndim, dtype=torch.float64) + 0.5).requires_grad_(True)
    centre = (size // 2,) * ndim
    model(x)[(0, 0, *centre)].backward()
    reached = (x.grad[0, 0] != 0).nonzero()
    halo = receptive_halo(RLNConfig(ndim=ndim, **config))
    for axis in range(ndim):
        lo = centre[axis] - int(reached[:, axis].min())
        hi = int(reached[:, axis].max()) - centre[axis]
        assert max(lo, hi) == halo[axis]  # the card's halo is tight, not just an upper bound
    card = get_model_card(f"rln{ndim}d", config)
    assert card.halo == halo
    lateral = 17 if pool == 2 else 31  # the paper's H1 / a quarter-scale H1
    assert halo == ((17,) if ndim == 3 else ()) + (lateral, lateral)


def test_odd_sizes_equal_the_even_padded_result():
    torch.manual_seed(0)
    model = RLN().eval()
    x = torch.rand(1, 1, 9, 14, 13)
    padded = torch.nn.functional.pad(x, (0, 1, 0, 0, 0, 1), mode="reflect")
    with torch.no_grad():
        out, expected = model(x), model(padded)[..., :9, :14, :13]
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)
    wide = RLN(h1_lateral_pool=4).eval()  # padded to the window (2, 4, 4): 10, 16, 16
    padded = torch.nn.functional.pad(x, (0, 3, 0, 2, 0, 1), mode="reflect")
    with torch.no_grad():
        out, expected = wide(x), wide(padded)[..., :9, :14, :13]
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)
    assert get_model_card("rln3d", {"h1_lateral_pool": 4}).step == (2, 4, 4)


def _trained_looking(model: RLN) -> RLN:
    """Random BatchNorm statistics, so no layer is close to the identity by accident."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.BatchNorm3d):
            n = module.num_features
            module.running_mean.copy_(0.2 * torch.randn(n, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
    return model.eval().double()


def test_undecimated_h1_is_the_mean_of_the_papers_h1_over_all_phases():
    """The claim that lets weights move between the two graphs: before its BatchNorm, the
    undecimated H1 update is exactly the paper's H1 run on each one-pixel shift of the input,
    averaged over the shifts (checked away from the borders, where padding differs)."""
    torch.manual_seed(0)
    paper = _trained_looking(RLN(ndim=2, width=4, bp_width=8))
    undecimated = _trained_looking(RLN(ndim=2, width=4, bp_width=8, h1_undecimated=True))
    undecimated.load_state_dict(paper.state_dict())
    captured = []
    for model in (paper, undecimated):
        model.bp1_up_bn.register_forward_hook(lambda m, args, out: captured.append(args[0]))
    x = torch.rand(1, 1, 64, 64, dtype=torch.float64) + 0.2
    with torch.no_grad():
        undecimated(x)
        expected, total = captured.pop(), torch.zeros_like(x[0, :1].expand(4, -1, -1))
        for sy in (0, 1):
            for sx in (0, 1):
                paper(x[..., sy : sy + 62, sx : sx + 62])
                total[:, sy : sy + 62, sx : sx + 62] += captured.pop()[0]
    inner = (slice(None), slice(20, 44), slice(20, 44))
    torch.testing.assert_close(expected[0][inner], total[inner] / 4)


def test_undecimated_h1_is_shift_equivariant_where_the_papers_is_not():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 80, 80, dtype=torch.float64) + 0.2
    shifted = torch.roll(x, (1, 1), dims=(2, 3))
    inner = (..., slice(24, 56), slice(24, 56))
    errors = {}
    for undecimated in (False, True):
        model = _trained_looking(RLN(ndim=2, width=4, bp_width=8, h1_undecimated=undecimated))
        with torch.no_grad():
            out, out_shifted = model(x), model(shifted)
        moved = torch.roll(out, (1, 1), dims=(2, 3))
        errors[undecimated] = float((moved[inner] - out_shifted[inner]).abs().max())
        scale = float(out[inner].abs().max())
    # float64 round-off against a difference random weights keep small (H1 starts weak)
    assert errors[True] < 1e-12 * scale
    assert errors[False] > 1e-6 * scale


def test_undecimated_rln_takes_any_size_and_passes_the_plugin_checks():
    assert get_model_card("rln2d", {"h1_undecimated": True}).step == (1, 1)
    report = check_model("rln2d", h1_undecimated=True)  # odd sizes, config, ONNX Runtime
    assert any(size % 2 for size in report["sizes"][0] + report["sizes"][1])


def test_loss_is_zero_only_for_a_perfect_prediction():
    torch.manual_seed(0)
    gt, raw = torch.rand(2, 1, 16, 16, 16), torch.rand(2, 1, 16, 16, 16)
    aux = 0.8 * gt + 0.2 * raw
    assert rln_loss(gt, aux, gt, raw).item() == pytest.approx(0.0, abs=1e-6)
    assert rln_loss(gt + 0.1, aux, gt, raw).item() > 0.005
    assert rln_loss(gt, aux + 0.1, gt, raw).item() == pytest.approx(0.1 * 0.01, rel=1e-4)


def test_divisions_stay_float32_under_autocast():
    model = RLN(ndim=2).eval()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, aux = model.forward_with_aux(x)
    assert aux.dtype == torch.float32  # the product y * BP(ratio) kept in float32
    with torch.no_grad():
        reference = model(x)
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_bad_config():
    with pytest.raises(DeconvError, match="ndim"):
        create_model("rln3d", ndim=1)
