"""The model zoo: every deconvolution method behind one name.

Today the zoo holds the classical ``rl`` model (Richardson-Lucy with a PSF and a back
projector, no trainable weights). The networks (RLN, RCAN, m-rBCR), their pydantic configs
and the ``deconv.models`` entry-point group for third-party models extend this registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deconv.errors import DeconvError
from deconv.zoo.rl import RL_CARD, build_rl

_BUILDERS: dict[str, Callable[..., Any]] = {"rl": build_rl}
_CARDS: dict[str, dict[str, Any]] = {"rl": RL_CARD}


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def get_model_card(name: str) -> dict[str, Any]:
    _check_name(name)
    return dict(_CARDS[name])


def create_model(name: str, **kwargs: Any) -> Any:
    """Build the model registered under ``name`` with the builder's keyword arguments."""
    _check_name(name)
    return _BUILDERS[name](**kwargs)


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise DeconvError(f"unknown model {name!r}; available: {', '.join(list_models())}")
