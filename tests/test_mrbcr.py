"""m-rBCR: parameter counts, shapes, size checks, config round-trip and loss.

The golden output of the tiny variant lives in tests/test_zoo_golden.py.
"""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from deconv.errors import DeconvError
from deconv.zoo.mrbcr import MRBCR, VARIANTS, MRBCRConfig, card, halo, multiscale_loss


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_released_parameter_count_matches_checkpoint() -> None:
    n = n_params(MRBCR(**VARIANTS["mrbcr2d_released"].model_dump()))
    assert abs(n - 236_630) / 236_630 < 0.02
    # Exact: forward dense 3 x (64 + 11*1056) = 35,040; shared AFF 64->32 = 11,328;
    # heads 33 + 65 + 65 = 163; shared inverse AFF 49->48 = 23,184;
    # P row convs (1,5): 25,952 (1 ch in) + 2 x 33,472 (48 ch in); dense blocks 3 x 20,784;
    # output convs 9x9 3 x 3,889 = 11,667.  Sum = 236,630 (the authors' checkpoint).
    assert n == 35_040 + 11_328 + 163 + 23_184 + 25_952 + 2 * 33_472 + 3 * 20_784 + 11_667
    assert n == 236_630


def test_wavelet_levels_add_parameters() -> None:
    assert n_params(MRBCR(levels=1)) == 457_238
    assert n_params(MRBCR(levels=2)) == 722_486
    tiny = n_params(MRBCR(**VARIANTS["mrbcr2d_tiny"].model_dump()))
    assert tiny == 418
    assert card("mrbcr2d_tiny", VARIANTS["mrbcr2d_tiny"]).parameters == tiny


@pytest.mark.parametrize("shape", [(16, 16), (24, 40)])
def test_forward_shape(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = MRBCR()
    x = torch.rand(2, 1, *shape)
    out = model(x)
    assert out.shape == (2, 1, *shape)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, model.forward_multiscale(x)[0])


@pytest.mark.parametrize("variant", ["mrbcr2d", "mrbcr2d_released"])
def test_forward_multiscale_shapes(variant: str) -> None:
    model = MRBCR(**VARIANTS[variant].model_dump())
    outs = model.forward_multiscale(torch.rand(1, 1, 32, 48))
    assert [tuple(o.shape[-2:]) for o in outs] == [(32, 48), (16, 24), (8, 12)]


@pytest.mark.parametrize(
    ("variant", "shape", "multiple"),
    [("mrbcr2d", (20, 24), 8), ("mrbcr2d_released", (16, 18), 4), ("mrbcr2d", (4, 8), 8)],
)
def test_invalid_sizes_name_the_multiple(
    variant: str, shape: tuple[int, int], multiple: int
) -> None:
    model = MRBCR(**VARIANTS[variant].model_dump())
    with pytest.raises(DeconvError, match=f"multiples of {multiple}"):
        model(torch.rand(1, 1, *shape))


def test_wrong_channel_count_rejected() -> None:
    with pytest.raises(DeconvError, match=r"\(N, 1, H, W\)"):
        MRBCR(**VARIANTS["mrbcr2d_tiny"].model_dump())(torch.rand(1, 2, 16, 16))


def test_config_round_trip() -> None:
    cfg = MRBCRConfig(levels=2, width=8, dense_blocks=2)
    a = MRBCR(**cfg.model_dump())
    b = MRBCR(**MRBCRConfig.model_validate_json(cfg.model_dump_json()).model_dump())
    assert a.config == cfg == b.config
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }
    with pytest.raises(ValidationError, match="extra"):
        MRBCRConfig(levels=1, dropout=0.1)
    with pytest.raises(ValidationError):
        MRBCR(**cfg.model_dump(), unknown=1)
    with pytest.raises(ValidationError, match="odd"):
        MRBCRConfig(output_kernel=8)
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        MRBCRConfig(width=0)


def test_init_is_deterministic_under_seed() -> None:
    def build(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return MRBCR(**VARIANTS["mrbcr2d_tiny"].model_dump()).state_dict()

    a, b, c = build(3), build(3), build(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_multiscale_loss() -> None:
    torch.manual_seed(0)
    target = torch.rand(2, 1, 16, 16)
    perfect = [target[..., :: 2**s, :: 2**s].clone() for s in range(3)]
    assert multiscale_loss(perfect, target).item() == pytest.approx(0.0, abs=1e-7)
    noisy = [p + 0.01 * torch.randn_like(p) for p in perfect]
    assert multiscale_loss(noisy, target).item() > 0
    # A pure Nyquist checkerboard error eps*(-1)^(i+j) on the finest scale: its MSE is eps^2,
    # its unnormalised FFT is one bin of size eps*H*W, so mean |dFFT| = eps.
    eps = 0.01
    i, j = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    checker = eps * (-1.0) ** (i + j)
    outs = [perfect[0] + checker, *perfect[1:]]
    assert multiscale_loss(outs, target).item() == pytest.approx(eps**2 + 0.5 * eps, rel=1e-4)


def test_card() -> None:
    c = card("mrbcr2d", VARIANTS["mrbcr2d"])
    assert (c.ndim, c.min_size, c.step) == (2, (8, 8), (8, 8))
    assert c.halo == (208, 296)
    assert c.normalization.kind == "min_max"
    assert c.loss == "multiscale_mse_fft"
    assert c.citation[0].doi == "10.48550/arXiv.2407.03239"
    assert card("r", VARIANTS["mrbcr2d_released"]).min_size == (4, 4)


def test_halo_bounds_receptive_field() -> None:
    """With all weights positive every ReLU is active, so the gradient support of one output
    pixel is the full receptive field; the card's halo must cover it."""
    cfg = VARIANTS["mrbcr2d_tiny"]
    model = MRBCR(**cfg.model_dump()).double()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(0.01, 0.06)
    x = torch.rand(1, 1, 128, 128, dtype=torch.float64, requires_grad=True)
    model(x)[0, 0, 64, 64].backward()
    ys, xs = torch.nonzero(x.grad[0, 0], as_tuple=True)
    reach = (int((ys - 64).abs().max()), int((xs - 64).abs().max()))
    hy, hx = halo(cfg)
    assert reach[0] <= hy and reach[1] <= hx
    assert reach[1] > reach[0]  # the (1, k) row convs widen the field along x only
