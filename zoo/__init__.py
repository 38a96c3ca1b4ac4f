"""The model zoo: every deconvolution method behind one name.

``create_model(name, **overrides)``, ``list_models(pattern)`` and ``get_model_card(name)``
cover the built-in networks (RLN, RCAN, m-rBCR, in 2D and 3D, with tiny test variants), the
classical ``rl`` model, and models other packages contribute through the ``deconv.models``
entry-point group (see :mod:`deconv.zoo.registry` and ``specs/model-zoo-plugins.md``).
"""

from __future__ import annotations

from deconv.zoo import mrbcr, rcan, rln
from deconv.zoo.card import Citation, ModelCard, ModelConfig, Normalization, TrainingDefaults
from deconv.zoo.registry import (
    ENTRY_POINT_GROUP,
    ModelSpec,
    architecture_spec,
    create_model,
    get_model_card,
    get_model_spec,
    list_models,
    refresh_plugins,
    register_model,
)
from deconv.zoo.rl import RL_SPEC
from deconv.zoo.rln_widening import grow_weights as _grow_rln

register_model("rl", RL_SPEC)
for _module, _class in ((rln, rln.RLN), (rcan, rcan.RCAN), (mrbcr, mrbcr.MRBCR)):
    for _name, _config in _module.VARIANTS.items():
        register_model(
            _name,
            architecture_spec(
                _config,
                _class,
                _module.card,
                objective=_module.objective,
                training=_module.training_defaults(_config),
                grow=_grow_rln if _module is rln else None,
            ),
        )

__all__ = [
    "ENTRY_POINT_GROUP",
    "Citation",
    "ModelCard",
    "ModelConfig",
    "ModelSpec",
    "Normalization",
    "TrainingDefaults",
    "architecture_spec",
    "create_model",
    "get_model_card",
    "get_model_spec",
    "list_models",
    "refresh_plugins",
    "register_model",
]
