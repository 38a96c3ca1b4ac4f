"""The classical ``rl`` model as a packageable source: PSF and back projector baked into a
fixed-tile FFT graph (:mod:`deconv.zoo.networks.rl_fft`).

Defaults: Wiener-Butterworth back projector with 3 iterations (it reaches the quality of
~100 traditional iterations, BENCHMARKS.md), or 30 iterations for the traditional one.
Tiles are 40x128x128 (3D) or 256x256 (2D), never smaller than the PSF; the FFT grid is
RichardsonLucy's own (7-smooth sizes >= tile + PSF - 1), so the graph reproduces
``RichardsonLucy(boundary="reflect")`` to float32 rounding. ONNX Runtime's CPU ``DFT`` is
~25x slower than torch's FFT (9 s vs 0.35 s for Wiener-Butterworth, 3 iterations, on a
48x128x128 tile; powers of two only help 1.5x), so TorchScript is the weights format to pick
in deepImageJ for RL packages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from deconv.errors import DeconvError
from deconv.exporters.sources import ModelSource
from deconv.psf import PSF
from deconv.zoo.card import ModelCard, Normalization

DEFAULT_TILES = {3: (40, 128, 128), 2: (256, 256)}


def rl_source(
    psf: PSF,
    back_projector: str = "wiener-butterworth",
    iterations: int | None = None,
    tile: Sequence[int] | None = None,
    background: float = 0.0,
) -> ModelSource:
    from deconv.fft import transfer_function
    from deconv.richardson_lucy import RichardsonLucy, RLConfig
    from deconv.zoo.networks.rl_fft import RichardsonLucyFFT
    from deconv.zoo.rl import rl_card

    ndim = psf.ndim
    tile = tuple(int(t) for t in (tile or DEFAULT_TILES[ndim]))
    if len(tile) != ndim:
        raise DeconvError(f"--tile needs {ndim} sizes for a {ndim}D PSF, got {tile}")
    if any(t < p for t, p in zip(tile, psf.data.shape)):
        raise DeconvError(f"--tile {tile} must be at least the PSF's shape {psf.data.shape}")
    if iterations is None:
        iterations = 30 if back_projector == "traditional" else 3
    config = RLConfig(
        back_projector=back_projector, iterations=iterations, background=background,
        boundary="reflect", acceleration=False,
    )  # fmt: skip
    classical = RichardsonLucy(psf.data, config)
    padded = classical.plan(tile).padded
    kwargs = {
        "architecture": "rl_fft", "tile": list(tile), "padded": list(padded),
        "iterations": iterations, "background": float(background), "floor": config.floor,
        "clamp": bool((classical.back_projector < 0).any()),
    }  # fmt: skip
    graph = RichardsonLucyFFT(**kwargs)
    for prefix, kernel in (("psf", classical.psf), ("bp", classical.back_projector)):
        spectrum = transfer_function(np.asarray(kernel, dtype=np.float64), padded)
        getattr(graph, f"{prefix}_re").copy_(torch.from_numpy(spectrum.real.astype(np.float32)))
        getattr(graph, f"{prefix}_im").copy_(torch.from_numpy(spectrum.imag.astype(np.float32)))
    base = rl_card("rl")
    label = "Richardson-Lucy" if back_projector == "traditional" else (
        f"Richardson-Lucy with a {back_projector} back projector")  # fmt: skip
    card = ModelCard(
        name="rl", architecture="rl_fft",
        description=f"{label}, {iterations} iterations, PSF baked in; fixed "
        f"{'x'.join(map(str, tile))} tiles (tile larger images with the halo)",
        ndim=ndim, trainable=False, min_size=tile, step=(0,) * ndim,
        halo=tuple(p // 2 for p in psf.data.shape), normalization=Normalization(kind="none"),
        loss="Poisson likelihood (no training)", citation=base.citation, parameters=0,
    )  # fmt: skip
    return ModelSource(
        name=f"rl {back_projector} {iterations} it", registry_name="rl", config=kwargs,
        model=graph.eval(), card=card, normalization=card.normalization, psf=psf,
        training={"back_projector": back_projector, "iterations": iterations,
                  "boundary": "reflect", "background": background},
        origin="classical Richardson-Lucy",
    )  # fmt: skip


def classical_reference(source: ModelSource) -> RichardsonLucy:  # noqa: F821
    """The eager RichardsonLucy the graph reproduces (for tests and validation)."""
    from deconv.richardson_lucy import RichardsonLucy, RLConfig

    t = source.training
    return RichardsonLucy(source.psf.data, RLConfig(
        back_projector=t["back_projector"], iterations=t["iterations"],
        background=t["background"], boundary="reflect", acceleration=False,
    ))  # fmt: skip
