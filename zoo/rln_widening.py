"""Grow trained RLN weights into a wider RLN that computes the same function.

Why: the 16k-parameter RLN is capacity-limited on our synthetic benchmarks (a 2D RLN with
twice the channels scores ~0.65 dB higher on unseen rings), but training a wide 3D RLN from
scratch takes far longer than a CPU session. Starting the wide network *as* the trained
narrow one (Chen et al.'s Net2WiderNet, ICLR 2016) keeps what was learned and lets a short
fine-tune use the extra channels. The shipped 3D network was made this way (the paper's
width grown to ``width=8, bp_width=16``, see its record); growing it once more reads
``deconv train rln3d --init-weights rln3d.widefield-synthetic --set width=16 --set
bp_width=32``.

How: every new channel copies an old one (channel ``j`` copies ``j mod old``); a layer that
reads copied channels divides each copy's input weights by how many copies its source
has, so sums are unchanged; BatchNorm statistics and affine terms are copied with their
channel. RLN averages channels (``f1.mean(1)`` etc.); the average is unchanged only if every
channel has as many copies, so each new width must be a multiple of the old one. Copies would
receive identical gradients forever, so a small relative noise (``noise`` times each
tensor's standard deviation) is added to widened convolution weights to let them diverge.
"""

from __future__ import annotations

import torch

from deconv.errors import DeconvError
from deconv.zoo.rln import RLNConfig

# module -> (role of its output channels, roles of its concatenated input channels);
# roles: "w" = width (forward projectors), "b" = bp_width (back projectors, merge), "1" = one.
_CONV_ROLES: dict[str, tuple[str, tuple[str, ...]]] = {
    "fp1_a1": ("w", ("1",)),
    "fp1_a2": ("w", ("w",)),
    "fp1_f": ("w", ("w", "w")),
    "bp1_b1": ("b", ("1",)),
    "bp1_b2": ("b", ("b",)),
    "bp1_b3": ("b", ("b", "b")),
    "bp1_b4": ("w", ("w",)),
    "fp2_a1": ("w", ("1",)),
    "fp2_a2": ("w", ("w",)),
    "bp2_b1": ("b", ("1",)),
    "bp2_b2": ("b", ("b",)),
    "m1": ("b", ("1",)),
    "m2": ("b", ("b", "1", "1")),
    "out": ("b", ("b", "b")),
}
# the transposed convolution (weight: in, out, *k) and its BatchNorm
_UP, _UP_BN = "bp1_up", "bp1_up_bn"


def _copy_channels(t: torch.Tensor, dim: int, old: int, new: int) -> torch.Tensor:
    return t.index_select(dim, torch.arange(new) % old)


def _read_copies(t: torch.Tensor, dim: int, old: int, new: int) -> torch.Tensor:
    """Input weights for copied channels: each copy of channel c gets 1/copies(c) of it."""
    copies = torch.bincount(torch.arange(new) % old, minlength=old).to(t.dtype)
    shape = [1] * t.ndim
    shape[dim] = new
    source = torch.arange(new) % old
    return t.index_select(dim, source) / copies[source].reshape(shape)


def widen_rln_state(
    state: dict[str, torch.Tensor],
    old: RLNConfig,
    new: RLNConfig,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Weights of ``old`` (a state dict) as weights of the wider ``new`` configuration.

    Growing a plain network into a flip-equivariant one (``flip_axes``) adds the frame-mixing
    weights at zero, which makes the new network the flip average of the old one.
    """
    if old.flip_axes and (old.flip_axes, old.width, old.bp_width) != (
        new.flip_axes,
        new.width,
        new.bp_width,
    ):
        raise DeconvError(
            f"cannot carry RLN weights equivariant to flips of axes {list(old.flip_axes)} into "
            f"flip_axes {list(new.flip_axes)}, width {new.width}, bp_width {new.bp_width}: only "
            "a plain RLN grows (widen it first, then make it equivariant)"
        )
    if old.h1_lateral_pool != new.h1_lateral_pool:
        raise DeconvError(
            f"cannot grow RLN weights with H1's lateral pooling window {old.h1_lateral_pool} "
            f"into one with {new.h1_lateral_pool}: no function-preserving map exists; train "
            "that network from scratch"
        )
    if old.h1_undecimated != new.h1_undecimated:
        raise DeconvError(
            f"cannot grow RLN weights with h1_undecimated={old.h1_undecimated} into one with "
            f"h1_undecimated={new.h1_undecimated} while widening: grow first, then fine-tune "
            "the same width in the other mode (--init-weights loads it as it is)"
        )
    if old.ndim != new.ndim or new.width % old.width or new.bp_width % old.bp_width:
        raise DeconvError(
            f"cannot grow RLN weights ({old.ndim}D, width {old.width}, bp_width "
            f"{old.bp_width}) into {new.ndim}D, width {new.width}, bp_width {new.bp_width}: "
            "the dimensionality must match and each width must be a multiple of the old one"
        )
    sizes = {
        "w": (old.width, new.width),
        "b": (old.bp_width, new.bp_width),
        "1": (1, 1),
    }
    grown: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        module, _, leaf = key.partition(".")
        v = value
        if module == _UP:  # (in: b, out: w, *k)
            v = _read_copies(v, 0, *sizes["b"])
            v = _copy_channels(v, 1, *sizes["w"])
        elif module == _UP_BN and v.ndim:
            v = _copy_channels(v, 0, *sizes["w"])
        elif module in _CONV_ROLES:
            role, inputs = _CONV_ROLES[module]
            if leaf == "conv.weight":
                v = _copy_channels(v, 0, *sizes[role])
                parts, start = [], 0
                for r in inputs:
                    o, n = sizes[r]
                    parts.append(_read_copies(v[:, start : start + o], 1, o, n))
                    start += o
                v = torch.cat(parts, 1)
            elif v.ndim:  # BatchNorm weight, bias, running mean and variance
                v = _copy_channels(v, 0, *sizes[role])
        if noise and v.ndim > 1 and v.shape != value.shape:
            scale = noise * float(value.std())
            v = v + scale * torch.randn(v.shape, generator=generator, dtype=v.dtype)
        grown[key] = v.clone()
    if new.flip_axes and not old.flip_axes:
        from deconv.zoo.networks.rln import RLN

        mixing = RLN(**new.model_dump()).state_dict()
        grown.update({k: torch.zeros_like(v) for k, v in mixing.items() if "frame_mix" in k})
    return grown


def grow_weights(state: dict[str, torch.Tensor], old: dict, new: dict) -> dict[str, torch.Tensor]:
    """The registry's ``grow`` hook for RLN: configs arrive as plain dicts (run.json,
    pretrained records); noise comes from torch's global generator, which training seeds."""
    return widen_rln_state(state, RLNConfig(**old), RLNConfig(**new))
