"""One registry for every model, built in or contributed by other packages.

Built-in models register a :class:`ModelSpec` under a name (``rln3d``, ``rcan2d``, ``rl``).
Other packages contribute models through the entry-point group ``deconv.models``::

    [project.entry-points."deconv.models"]
    mynet3d = "mypkg.models:mynet3d"     # a zero-argument callable returning a ModelSpec

Entry points are read once (cached) and their targets stay "module:attr" strings until a
model is first used, so installing a plugin costs nothing at import. A plugin that fails to
load becomes a warning and an error for that name only; a plugin name that collides with a
built-in keeps the built-in (with a warning). The format is specified in
``specs/model-zoo-plugins.md``.
"""

from __future__ import annotations

import fnmatch
import importlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from deconv.errors import DeconvError
from deconv.zoo.card import ModelCard, TrainingDefaults, count_parameters

ENTRY_POINT_GROUP = "deconv.models"


@dataclass(frozen=True)
class ModelSpec:
    """How to describe and build one registered model."""

    card: Callable[[str], ModelCard]
    build: Callable[..., Any]
    # loss(model, raw, target) -> scalar tensor; None: mean squared error of model(raw)
    objective: Callable[..., Any] | None = None
    training: TrainingDefaults | None = None
    # grow(state, old_config, new_config) -> state for a larger config computing the same
    # function (fine-tuning a wider network from narrower weights); None: shapes must match
    grow: Callable[[dict, dict, dict], dict] | None = None
    # configured_card(name, overrides) -> the card of the network built with those config
    # overrides (its halo and parameters can change: a wider RLN, m-rBCR's levels); None: the
    # registered card with the parameters counted from the built network
    configured_card: Callable[[str, dict], ModelCard] | None = None


def architecture_spec(
    config: BaseModel,
    model_class: type,
    card: Callable[[str, Any], ModelCard],
    objective: Callable[..., Any] | None = None,
    training: TrainingDefaults | None = None,
    grow: Callable[[dict, dict, dict], dict] | None = None,
) -> ModelSpec:
    """The spec of a network variant: ``model_class(**config.model_dump())`` with overrides.

    Overrides are validated by the config class, so an unknown key or a bad value fails
    with pydantic's message instead of being ignored.
    """
    config_class = type(config)

    def merged(overrides: dict[str, Any]) -> BaseModel:
        try:
            return config_class.model_validate({**config.model_dump(), **overrides})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            fields = ", ".join(config_class.model_fields)
            raise DeconvError(
                f"invalid config for {config.architecture}: {where}: {first['msg']} "
                f"(fields: {fields})"
            ) from None

    def build(**overrides: Any):
        return model_class(**merged(overrides).model_dump())

    return ModelSpec(
        card=lambda name: card(name, config),
        build=build,
        objective=objective,
        training=training,
        grow=grow,
        configured_card=lambda name, overrides: card(name, merged(overrides)),
    )


@dataclass
class _Plugin:
    name: str
    target: str
    distribution: str
    spec: ModelSpec | None = None
    error: str | None = None


_BUILTIN: dict[str, ModelSpec] = {}


def register_model(name: str, spec: ModelSpec) -> None:
    """Register a built-in model; a duplicate name is a programming error, not an overwrite."""
    if name in _BUILTIN:
        raise ValueError(f"model {name!r} is already registered")
    if "." in name:
        raise ValueError(f"model names cannot contain '.' (reserved for pretrained tags): {name}")
    _BUILTIN[name] = spec


@cache
def _plugins() -> dict[str, _Plugin]:
    found: dict[str, _Plugin] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "unknown distribution"
        if ep.name in _BUILTIN:
            warnings.warn(
                f"deconv plugin {dist!r} registers {ep.name!r}, which is built in; "
                "keeping the built-in",
                stacklevel=2,
            )
            continue
        if ep.name in found:
            warnings.warn(
                f"deconv plugins {found[ep.name].distribution!r} and {dist!r} both register "
                f"{ep.name!r}; keeping the first",
                stacklevel=2,
            )
            continue
        found[ep.name] = _Plugin(ep.name, ep.value, dist)
    return found


def refresh_plugins() -> None:
    """Forget cached entry points (after installing a plugin, or in tests)."""
    _plugins.cache_clear()


def _resolve(plugin: _Plugin) -> ModelSpec:
    if plugin.spec is not None:
        return plugin.spec
    if plugin.error is None:
        try:
            module_name, _, attr = plugin.target.partition(":")
            target = getattr(importlib.import_module(module_name), attr)
            spec = target() if not isinstance(target, ModelSpec) else target
            if not isinstance(spec, ModelSpec):
                raise TypeError(f"{plugin.target} returned {type(spec).__name__}, not ModelSpec")
            plugin.spec = spec
            return spec
        except Exception as exc:  # a broken plugin must not break the zoo
            plugin.error = f"{type(exc).__name__}: {exc}"
            warnings.warn(
                f"deconv plugin {plugin.distribution!r} failed to load {plugin.name!r} "
                f"({plugin.target}): {plugin.error}",
                stacklevel=3,
            )
    raise DeconvError(
        f"model {plugin.name!r} from plugin {plugin.distribution!r} failed to load: {plugin.error}"
    )


def _spec(name: str) -> ModelSpec:
    if name in _BUILTIN:
        return _BUILTIN[name]
    plugin = _plugins().get(name)
    if plugin is None:
        raise DeconvError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _resolve(plugin)


def list_models(pattern: str = "*", pretrained: bool = False) -> list[str]:
    """Models matching a shell-style ``pattern``; with ``pretrained``, the shipped weights."""
    if pretrained:
        from deconv.zoo.pretrained import list_pretrained

        names = set(list_pretrained())
    else:
        names = set(_BUILTIN) | set(_plugins())
    return sorted(n for n in names if fnmatch.fnmatchcase(n, pattern))


def get_model_card(name: str, config: dict[str, Any] | None = None) -> ModelCard:
    """The card of ``name``, or of the network built with ``config`` (overrides or a whole
    config, e.g. a run's): a wider RLN has other parameters, m-rBCR's levels another halo."""
    if "." in name:
        from deconv.zoo.pretrained import pretrained_record

        record = pretrained_record(name)
        card = get_model_card(record.base_model, record.config)
        # shipped weights may be trained under other percentiles than the architecture's
        return card.model_copy(update={"name": name, "normalization": record.normalization})
    spec = _spec(name)
    if not config:
        return spec.card(name)
    if spec.configured_card is not None:
        return spec.configured_card(name, config)
    params = count_parameters(spec.build(**config))
    return spec.card(name).model_copy(update={"parameters": params})


def create_model(name: str, **overrides: Any) -> Any:
    """Build the model registered as ``name``; ``overrides`` change its config.

    ``architecture.tag`` names load shipped weights (in eval mode); they take no overrides.
    """
    if "." in name:
        from deconv.zoo.pretrained import load_pretrained

        if overrides:
            raise DeconvError(f"{name} is a trained model; its config cannot be overridden")
        return load_pretrained(name)[0]
    return _spec(name).build(**overrides)


def get_model_spec(name: str) -> ModelSpec:
    """The registered spec (card, builder, objective, training defaults) of ``name``."""
    return _spec(name)
