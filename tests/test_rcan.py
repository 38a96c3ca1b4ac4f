"""RCAN: exact parameter counts, config round-trips, shapes and receptive field.

Golden outputs of the tiny variants live in tests/test_zoo_golden.py with the other models'.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from deconv.zoo.rcan import RCAN, VARIANTS, RCANConfig, card, receptive_radius


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Hand counts. conv(cin, cout, taps) = cin*cout*taps + cout (bias); taps 27 in 3D, 9 in 2D.
# 3D, C=32, C/r=4: head 1*32*27+32 = 896; conv3 C->C 32*32*27+32 = 27,680;
#   channel attention 32*4+4 + 4*32+32 = 132+160 = 292; RCAB 2*27,680+292 = 55,652;
#   group (B=3) 3*55,652+27,680 = 194,636; tail 27,680; out 32*27+1 = 865.
#   G=5: 896 + 5*194,636 + 27,680 + 865 = 896+973,180+28,545 = 1,002,621
#   G=3: 896 + 3*194,636 + 28,545 = 896+583,908+28,545 = 613,349
#   G=5, B=5: group 5*55,652+27,680 = 305,940; 896 + 5*305,940 + 28,545 = 1,559,141
# 2D, C=32: head 1*32*9+32 = 320; conv3 C->C 32*32*9+32 = 9,248; RCAB 2*9,248+292 = 18,788;
#   group 3*18,788+9,248 = 65,612; 320 + 5*65,612 + 9,248 + (32*9+1) = 320+328,060+9,537
#   = 337,917
# Tiny (C=2, B=1, G=2, C/r=1): attention 2*1+1 + 1*2+2 = 7.
#   3D: head 2*27+2 = 56; conv3 C->C 2*2*27+2 = 110; RCAB 220+7 = 227; group 227+110 = 337;
#       56 + 2*337 + 110 + (2*27+1) = 56+674+110+55 = 895
#   2D: head 2*9+2 = 20; conv3 C->C 2*2*9+2 = 38; RCAB 76+7 = 83; group 83+38 = 121;
#       20 + 2*121 + 38 + (2*9+1) = 20+242+38+19 = 319
@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (RCANConfig(), 1_002_621),
        (RCANConfig(groups=3), 613_349),
        (RCANConfig(groups=5, blocks=5), 1_559_141),
        (RCANConfig(ndim=2), 337_917),
        (VARIANTS["rcan3d_tiny"], 895),
        (VARIANTS["rcan2d_tiny"], 319),
    ],
)
def test_parameter_count(config: RCANConfig, expected: int) -> None:
    assert _n_params(RCAN(**config.model_dump())) == expected
    assert card("x", config).parameters == expected


def test_single_group_has_no_group_conv() -> None:
    """With G == 1 the body is B bare RCABs: 3D C=2,B=1 -> 56 + 227 + 110 + 55 = 448."""
    config = RCANConfig(channels=2, blocks=1, groups=1, reduction=2)
    assert _n_params(RCAN(**config.model_dump())) == 448
    assert card("x", config).parameters == 448


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_config_round_trip(name: str) -> None:
    config = VARIANTS[name]
    assert RCANConfig.model_validate_json(config.model_dump_json()) == config
    torch.manual_seed(0)
    model = RCAN(**config.model_dump())
    rebuilt = RCAN(**RCANConfig.model_validate_json(config.model_dump_json()).model_dump())
    assert rebuilt.config == config
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    assert shapes == {k: v.shape for k, v in rebuilt.state_dict().items()}
    assert _n_params(model) < 1000 if name.endswith("_tiny") else _n_params(model) > 300_000


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValidationError, match="extra"):
        RCANConfig.model_validate({"channels": 8, "kernel": 5})
    with pytest.raises(ValidationError):
        RCAN(channels=8, reduction=2, dropout=0.1)
    with pytest.raises(ValidationError, match=r"channels \(30\) must be divisible by reduction"):
        RCANConfig(channels=30, reduction=8)
    with pytest.raises(ValidationError, match="architecture"):
        RCANConfig(architecture="rln")
    for field in ("channels", "blocks", "groups", "reduction"):
        with pytest.raises(ValidationError, match=field):
            RCANConfig(**{field: 0})


def test_initialisation_is_deterministic() -> None:
    config = VARIANTS["rcan3d_tiny"]
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        states.append(RCAN(**config.model_dump()).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.parametrize(
    ("name", "spatial"),
    [
        ("rcan3d_tiny", (7, 10, 9)),
        ("rcan3d_tiny", (8, 16, 12)),
        ("rcan2d_tiny", (15, 21)),
        ("rcan2d_tiny", (16, 24)),
        ("rcan3d", (3, 6, 5)),
        ("rcan2d", (12, 9)),
    ],
)
def test_output_shape_equals_input_shape(name: str, spatial: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = RCAN(**VARIANTS[name].model_dump()).eval()
    x = torch.rand(2, 1, *spatial)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


def test_wrong_input_rank_is_a_clear_error() -> None:
    model = RCAN(**VARIANTS["rcan3d_tiny"].model_dump())
    with pytest.raises(ValueError, match=r"expects \(N, 1, Z, Y, X\)"):
        model(torch.rand(1, 1, 8, 8))


def _gradient_support(model: RCAN, size: int) -> tuple[np.ndarray, np.ndarray]:
    """|d out[centre] / d in| over the input, and the centre index."""
    ndim = model.config.ndim
    x = torch.rand((1, 1) + (size,) * ndim, dtype=torch.float64, requires_grad=True)
    centre = (size // 2,) * ndim
    model(x)[(0, 0, *centre)].backward()
    return x.grad[0, 0].abs().numpy(), np.array(centre)


@pytest.mark.parametrize(
    "config",
    [
        VARIANTS["rcan3d_tiny"],
        VARIANTS["rcan2d_tiny"],
        RCANConfig(ndim=3, channels=2, blocks=2, groups=1, reduction=1),
        RCANConfig(ndim=2, channels=4, blocks=2, groups=3, reduction=2),
    ],
)
def test_card_halo_is_the_empirical_receptive_field(config: RCANConfig) -> None:
    """The halo on the card is exactly how far one output voxel sees through the convs.

    Channel attention pools globally, so with it every output depends on every input. Zeroing
    the weights of each attention's excitation 1x1 conv makes its gate sigmoid(bias), a
    constant, which leaves the network purely local while keeping the rest of the graph. The
    gradient of the centre output voxel then must be non-zero out to exactly ``halo`` voxels
    along every axis in both directions and exactly zero beyond: a miscounted conv (e.g. the
    group conv that exists only when G > 1) moves that edge. Finally, with attention restored
    (and its bottleneck ReLU held open by a large squeeze bias, since with C/r = 1 a random
    init can leave it dead), some input beyond the halo must matter: that is why tiling RCAN
    is only approximate.
    """
    halo = card("x", config).halo
    radius = receptive_radius(config)
    assert halo == (radius,) * config.ndim
    size = 2 * radius + 5
    torch.manual_seed(0)
    model = RCAN(**config.model_dump()).double()

    with torch.no_grad():
        saved = {}
        for name, module in model.named_modules():
            if name.endswith("attention.excite"):
                saved[name] = module.weight.clone()
                module.weight.zero_()
    torch.manual_seed(1)
    grad, centre = _gradient_support(model, size)
    nonzero = np.argwhere(grad > 0)
    np.testing.assert_array_equal(nonzero.min(axis=0), centre - radius)
    np.testing.assert_array_equal(nonzero.max(axis=0), centre + radius)

    with torch.no_grad():
        for name, module in model.named_modules():
            if name in saved:
                module.weight.copy_(saved[name])
            if name.endswith("attention.squeeze"):
                module.bias.fill_(10.0)
    torch.manual_seed(1)
    grad, centre = _gradient_support(model, size)
    beyond = np.ones(grad.shape, dtype=bool)
    beyond[tuple(slice(c - radius, c + radius + 1) for c in centre)] = False
    assert grad[beyond].max() > 0
