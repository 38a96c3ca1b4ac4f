"""Conformance checks a plugin author runs against their model: ``check_model(name)``.

The same checks run in our own suite for every built-in, so "it works in deconv" means one
thing: the model builds from the registry, runs on two input sizes that its card allows,
keeps the input's shape, round-trips its config through JSON into an identical network,
its card states the true parameter count, and (``onnx=True``, needs onnxruntime) it exports
to a single-file opset-17 ONNX graph that ONNX Runtime runs to PyTorch's output on a size
not used when exporting.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from deconv.zoo import create_model, get_model_card
from deconv.zoo.card import count_parameters


def _sizes(card, scale: int) -> tuple[int, ...]:
    """Allowed sizes (min + k * step, at least 8), different per axis and per ``scale``."""
    ndim = card.ndim or 2
    sizes = []
    for axis in range(ndim):
        low = card.min_size[axis % len(card.min_size)]
        step = card.step[axis % len(card.step)]
        base = low + step * math.ceil(max(0, 8 - low) / step)
        sizes.append(base + step * (scale + axis))
    return tuple(sizes)


def check_model(name: str, onnx: bool = True, **overrides: Any) -> dict[str, Any]:
    """Raise AssertionError with a readable message at the first failed check."""
    card = get_model_card(name, overrides)
    assert card.name == name, f"card name {card.name!r} != registered name {name!r}"
    model = create_model(name, **overrides)
    assert isinstance(model, torch.nn.Module), f"{name} built a {type(model).__name__}"
    config = getattr(model, "config", None)
    assert config is not None, f"{name}: the model has no .config"
    dumped = config.model_dump()
    assert dumped.get("architecture") == card.architecture, (
        f"{name}: config architecture {dumped.get('architecture')!r} != card {card.architecture!r}"
    )
    rebuilt = type(model)(**type(config).model_validate_json(config.model_dump_json()).model_dump())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rebuilt_shapes = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    assert shapes == rebuilt_shapes, f"{name}: config round-trip builds a different network"
    n_params = count_parameters(model)
    if card.parameters is not None:
        assert n_params == card.parameters, (
            f"{name}: card says {card.parameters} parameters, the model has {n_params}"
        )
    model.eval()
    ran = []
    for scale in (0, 1):
        size = _sizes(card, scale)
        x = torch.rand((1, 1, *size))
        with torch.no_grad():
            y = model(x)
        assert tuple(y.shape) == tuple(x.shape), f"{name}: input {x.shape} gave output {y.shape}"
        assert torch.isfinite(y).all(), f"{name}: non-finite output for input {tuple(x.shape)}"
        ran.append(size)
    if onnx and card.trainable:
        _check_onnx(name, model, card)
    return {"name": name, "parameters": n_params, "sizes": ran}


def _check_onnx(name: str, model: torch.nn.Module, card) -> None:
    import tempfile
    from pathlib import Path

    from deconv.exporters.onnx import export_onnx, onnx_facts, onnx_runner
    from deconv.exporters.verification import (
        TOLERANCES,
        check_input,
        check_shapes,
        torch_reference,
        verify,
    )

    shapes = check_shapes(card)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, check_input(shapes[0]), Path(tmp) / "model.onnx")
        facts = onnx_facts(path)
        assert facts["opset"] == 17 and not facts["external_data"], f"{name}: ONNX {facts}"
        assert len(facts["inputs"]) == len(facts["outputs"]) == 1, f"{name}: ONNX {facts}"
        rows = verify("onnx", torch_reference(model), onnx_runner(path), shapes,
                      TOLERANCES[("onnx", "fp32")])  # fmt: skip
    bad = [r for r in rows if not r.passed]
    assert not bad, f"{name}: ONNX differs from PyTorch at {bad[0].shape}: {bad[0].max_abs_error}"
