"""The registry and the plugin format, proven with a committed fake distribution."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import torch

from deconv.errors import DeconvError
from deconv.testing import check_model
from deconv.zoo import create_model, get_model_card, get_model_spec, list_models, refresh_plugins
from deconv.zoo.registry import register_model

PLUGINS = Path(__file__).parent / "fixtures" / "plugins"
BUILTIN = ["mrbcr2d", "rcan2d", "rcan3d", "rl", "rln2d", "rln3d"]
# the fake distribution also collides with rln3d on purpose; only one test looks at that
pytestmark = pytest.mark.filterwarnings("ignore:deconv plugin .* built in:UserWarning")


@pytest.fixture
def plugin_path(monkeypatch):
    """Make the fake distribution discoverable, as if it were pip-installed."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    refresh_plugins()
    yield
    for module in ("deconv_fake_plugin", "deconv_fake_broken"):
        sys.modules.pop(module, None)
    monkeypatch.undo()
    refresh_plugins()


def test_builtin_names_and_pattern():
    assert set(BUILTIN) <= set(list_models())
    assert list_models("rln*") == ["rln2d", "rln2d_tiny", "rln3d", "rln3d_tiny"]
    assert list_models("*_tiny") == [
        "mrbcr2d_tiny",
        "rcan2d_tiny",
        "rcan3d_tiny",
        "rln2d_tiny",
        "rln3d_tiny",
    ]


def test_unknown_name_lists_available():
    with pytest.raises(DeconvError, match=r"unknown model 'rln4d'; available: .*rln3d"):
        create_model("rln4d")


def test_unknown_config_key_is_an_error():
    with pytest.raises(DeconvError, match=r"invalid config for rln: depth: Extra inputs"):
        create_model("rln3d", depth=4)


def test_overrides_are_validated_and_applied():
    assert create_model("rln3d", width=2).config.width == 2
    with pytest.raises(DeconvError, match="ndim"):
        create_model("rln3d", ndim=4)


def test_duplicate_builtin_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_model("rln3d", None)


def test_plugin_discovered_lazily(plugin_path):
    assert "fakenet2d" in list_models()
    assert "deconv_fake_plugin" not in sys.modules  # listed without importing
    model = create_model("fakenet2d", channels=3)
    assert "deconv_fake_plugin" in sys.modules
    assert model.config.channels == 3
    # the card describes the registered defaults (2 channels): conv 1->2, conv 2->1 with biases
    assert get_model_card("fakenet2d").parameters == (1 * 2 * 9 + 2) + (2 * 1 * 9 + 1)
    # ... and the card of an overridden config counts that network (architecture_spec)
    assert get_model_card("fakenet2d", {"channels": 3}).parameters == (9 * 3 + 3) + (3 * 9 + 1)


def test_card_of_a_hand_made_spec_counts_the_overridden_network(plugin_path):
    """Specs built without architecture_spec have no configured card: the registered card
    with the parameters of the network the overrides build."""
    import dataclasses

    from deconv.zoo import registry

    spec = dataclasses.replace(get_model_spec("fakenet2d"), configured_card=None)
    registry._BUILTIN["handmade2d"] = spec
    try:
        card = get_model_card("handmade2d", {"channels": 4})
    finally:
        del registry._BUILTIN["handmade2d"]
    assert card.parameters == (9 * 4 + 4) + (4 * 9 + 1) and card.halo == (2, 2)


def test_plugin_collision_keeps_builtin_and_warns(plugin_path):
    with pytest.warns(UserWarning, match="'rln3d', which is built in; keeping the built-in"):
        names = list_models()
    assert names.count("rln3d") == 1
    assert type(create_model("rln3d")).__name__ == "RLN"


def test_broken_plugin_is_a_warning_not_a_crash(plugin_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert "brokennet" in list_models()
    failed = "from plugin 'deconv-fake-plugin' failed to load"
    with (
        pytest.warns(UserWarning, match="failed to load 'brokennet'"),
        pytest.raises(DeconvError, match=failed),
    ):
        create_model("brokennet")
    # the rest of the zoo still works, and the failure is remembered without re-importing
    assert type(create_model("fakenet2d")).__name__ == "FakeNet"
    with pytest.raises(DeconvError, match="ImportError"):
        create_model("brokennet")


def test_conformance_helper_accepts_the_plugin(plugin_path):
    report = check_model("fakenet2d")
    assert report["parameters"] == get_model_card("fakenet2d").parameters


@pytest.mark.parametrize("name", [n for n in list_models() if n != "rl"])
def test_conformance_of_builtins(name):
    report = check_model(name)
    assert report["parameters"] == get_model_card(name).parameters


def test_conformance_helper_catches_a_lying_card(monkeypatch):
    from deconv.zoo import registry

    spec = registry._BUILTIN["rln2d_tiny"]
    lying = registry.ModelSpec(
        card=lambda name: spec.card(name).model_copy(update={"parameters": 1}), build=spec.build
    )
    monkeypatch.setitem(registry._BUILTIN, "rln2d_tiny", lying)
    with pytest.raises(AssertionError, match="card says 1 parameters"):
        check_model("rln2d_tiny")


def test_rl_card_and_model():
    card = get_model_card("rl")
    assert card.trainable is False and card.parameters == 0
    psf = torch.ones(3, 3) / 9
    model = create_model("rl", psf=psf.numpy())
    assert model(torch.ones(8, 8), iterations=2).shape == (8, 8)
