"""Tiled inference that users cannot see in the result.

Two ways to join tiles, chosen per model:

``crop`` (exact; networks with a bounded receptive field: RLN, m-rBCR). The volume is
first extended at its far end to the next size the model accepts (mirror padding, exactly
what whole-volume :func:`predict` does), then cut into *cores* on a grid of multiples of
the model's step. Each core is computed from a *window* that adds the halo (the receptive
field, rounded up to the step) on every side, clipped at the volume's ends, and only the
core of the output is kept. Every output voxel then sees exactly the inputs, zero padding
and pooling grid it sees in a whole-volume pass, so tiled equals untiled to float rounding
(property-tested). Cores never overlap, so each output region is written once: this is what
lets tiles stream to Zarr chunk by chunk, resume after a crash and run on Dask workers.

``blend`` (models whose output depends on the whole tile, e.g. RCAN's channel attention,
and RL whose influence decays but never ends). Windows overlap by ``overlap`` voxels and
are averaged with weights that ramp (linearly or as a raised cosine) across the overlap, so
no seam is a step. This needs an accumulator the size of the output, i.e. a volume that
fits in memory.

Normalisation is never per tile (that makes seams): callers normalise the whole input with
one set of percentiles before tiling (:func:`global_range` for volumes that do not fit).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from deconv.errors import DeconvError
from deconv.zoo.card import ModelCard

Predict = Callable[[np.ndarray], np.ndarray]  # (B, 1, *window) -> (B, 1, *window), float32


def _round_up(value: int, step: int) -> int:
    return step * math.ceil(value / step) if step > 1 else value


def allowed_size(size: int, minimum: int, step: int) -> int:
    """Smallest size >= ``size`` of the form minimum + k * step."""
    if size <= minimum:
        return minimum
    return minimum + step * math.ceil((size - minimum) / step)


def mirror_index(index: np.ndarray, size: int) -> np.ndarray:
    """Indices beyond ``size`` mirrored without repeating the edge (torch's "reflect"),
    clipped where the mirror would leave the array (tiny volumes: "replicate")."""
    index = np.where(index >= size, 2 * (size - 1) - index, index)
    return np.clip(index, 0, size - 1)


def read_window(source, lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    """``source[lo:hi]`` as float32, mirrored past the far end of ``source``.

    ``source`` is anything sliceable (numpy, memory-mapped TIFF, Zarr); only the region the
    window needs is read.
    """
    shape = source.shape[-len(lo) :]
    indices = [mirror_index(np.arange(a, b), n) for a, b, n in zip(lo, hi, shape)]
    first = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    block = np.asarray(source[(..., *first)], dtype=np.float32)
    if all(b <= n for b, n in zip(hi, shape)):
        return block
    local = tuple(i - s.start for i, s in zip(indices, first))
    return block[(..., *np.ix_(*local))]


@dataclass(frozen=True)
class Tile:
    """One unit of work: read ``window``, keep ``core`` (both in volume coordinates)."""

    index: tuple[int, ...]
    window_lo: tuple[int, ...]
    window_hi: tuple[int, ...]
    core_lo: tuple[int, ...]
    core_hi: tuple[int, ...]

    @property
    def window_shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.window_lo, self.window_hi))

    def core_in_window(self) -> tuple[slice, ...]:
        return tuple(
            slice(c - w, d - w) for c, d, w in zip(self.core_lo, self.core_hi, self.window_lo)
        )

    def core_slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.core_lo, self.core_hi))


class TileGrid:
    """The exact (``crop``) tiling of a volume for a model card; see the module docstring."""

    def __init__(self, shape: Sequence[int], card: ModelCard, core: Sequence[int] | None = None):
        self.shape = tuple(int(s) for s in shape)
        n = len(self.shape)
        mins = _per_axis(card.min_size, n)
        steps = [max(1, s) for s in _per_axis(card.step, n)]
        self.halo = tuple(_round_up(h, s) for h, s in zip(_per_axis(card.halo, n), steps))
        self.minimum = tuple(mins)
        self.extended = tuple(allowed_size(s, m, t) for s, m, t in zip(self.shape, mins, steps))
        wanted = core or default_core(n)
        self.core = tuple(
            max(_round_up(min(int(c), e), t), m, t)
            for c, e, t, m in zip(wanted, self.extended, steps, mins)
        )
        if any(m % t for m, t in zip(mins, steps)):
            raise DeconvError(
                f"exact tiling needs the minimum size {tuple(mins)} to be a multiple of the "
                f"step {tuple(steps)}; use blended tiles for this model"
            )

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.core))

    def __len__(self) -> int:
        return math.prod(self.counts)

    def tiles(self) -> Iterator[Tile]:
        for index in itertools.product(*(range(c) for c in self.counts)):
            core_lo = tuple(i * c for i, c in zip(index, self.core))
            core_hi = tuple(min(a + c, e) for a, c, e in zip(core_lo, self.core, self.extended))
            lo = tuple(max(0, a - h) for a, h in zip(core_lo, self.halo))
            hi = tuple(min(e, b + h) for b, h, e in zip(core_hi, self.halo, self.extended))
            # a short last core still gets a window of at least the minimum size (more
            # context, same alignment since min is a multiple of the step)
            lo = tuple(min(a, max(0, b - m)) for a, b, m in zip(lo, hi, self.minimum))
            yield Tile(index, lo, hi, core_lo, core_hi)


def _per_axis(values: Sequence[int], n: int) -> list[int]:
    values = list(values)
    return values if len(values) == n else values[:1] * n


def default_core(ndim: int) -> tuple[int, ...]:
    """3D: 96x256x256 (most stacks are not split in z, where a halo costs most; RLN needs
    ~1.5 GB for such a window on CPUs), 2D: 2048x2048. ``--tile`` trades speed for memory."""
    return (96, 256, 256) if ndim == 3 else (2048, 2048)


def predict_tiled(
    predict: Predict,
    source,
    card: ModelCard,
    core: Sequence[int] | None = None,
    out: np.ndarray | None = None,
    batch_size: int = 1,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    skip: Callable[[Tile], bool] | None = None,
    on_tile: Callable[[Tile], None] | None = None,
) -> np.ndarray:
    """Exact tiled inference of ``source`` (N-D, spatial only) into ``out`` (or a new array).

    ``transform`` maps each window before prediction (global normalisation); tiles for which
    ``skip`` is true are not computed (resumed runs); ``on_tile`` runs after each tile's core
    is written (journal, progress). Same-shaped windows are batched ``batch_size`` at a time.
    """
    grid = TileGrid(source.shape, card, core)
    if out is None:
        out = np.zeros(grid.shape, dtype=np.float32)

    def load(tiles: list[Tile]) -> np.ndarray:
        windows = []
        for tile in tiles:
            w = read_window(source, tile.window_lo, tile.window_hi)
            windows.append(transform(w) if transform else w)
        return np.stack(windows)[:, None]

    def store(tiles: list[Tile], result: np.ndarray) -> None:
        for tile, y in zip(tiles, result[:, 0]):
            core = y[tile.core_in_window()]
            keep = tuple(slice(0, min(b, n) - a) for a, b, n in zip(tile.core_lo, tile.core_hi,
                                                                     grid.shape))  # fmt: skip
            target = tuple(slice(a, a + k.stop) for a, k in zip(tile.core_lo, keep))
            if all(k.stop > 0 for k in keep):
                out[target] = core[keep]
            if on_tile:
                on_tile(tile)

    # The next batch is read (and decompressed, and normalised) on a helper thread while the
    # current one runs, so a GPU or the CPU's compute threads do not wait for storage.
    from concurrent.futures import ThreadPoolExecutor

    groups = list(_batches(grid, batch_size, skip))
    with ThreadPoolExecutor(max_workers=1) as reader:
        upcoming = reader.submit(load, groups[0]) if groups else None
        for i, tiles in enumerate(groups):
            batch = upcoming.result()
            upcoming = reader.submit(load, groups[i + 1]) if i + 1 < len(groups) else None
            store(tiles, predict(batch))
    return out


def _batches(grid: TileGrid, batch_size: int, skip) -> Iterator[list[Tile]]:
    """Tiles in grid order, grouped by window shape into batches of ``batch_size``."""
    pending: dict[tuple[int, ...], list[Tile]] = {}
    for tile in grid.tiles():
        if skip and skip(tile):
            continue
        group = pending.setdefault(tile.window_shape, [])
        group.append(tile)
        if len(group) >= batch_size:
            yield group
            pending[tile.window_shape] = []
    for group in pending.values():
        if group:
            yield group


def predict_blended(
    predict: Predict,
    image: np.ndarray,
    card: ModelCard,
    tile: Sequence[int],
    overlap: Sequence[int],
    kind: str = "cosine",
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Overlapping windows of size ``tile`` averaged with ramps (in-memory volumes).

    On each side shared with a neighbour a window first drops its halo (outputs there saw
    the window's zero padding), then ramps up over ``overlap`` voxels; neighbours ramp down
    over the same voxels, and the two ramps sum to one (sin^2 + cos^2, or t + (1 - t)).
    """
    if kind not in ("linear", "cosine"):
        raise DeconvError(f"blending must be linear or cosine, got {kind!r}")
    n = image.ndim
    steps = [max(1, s) for s in _per_axis(card.step, n)]
    mins = _per_axis(card.min_size, n)
    halo = _per_axis(card.halo, n)
    extended = tuple(allowed_size(s, m, t) for s, m, t in zip(image.shape, mins, steps))
    tile = tuple(min(allowed_size(t, m, s), e) for t, m, s, e in zip(tile, mins, steps, extended))
    strides = []
    for t, h, o, e in zip(tile, halo, overlap, extended):
        stride = t - 2 * h - int(o)
        if stride < 1 and t < e:
            raise DeconvError(
                f"tile {tuple(tile)} is too small for halo {tuple(halo)} plus overlap "
                f"{tuple(overlap)}: each window would keep nothing"
            )
        strides.append(max(stride, 1))
    acc = np.zeros(extended, dtype=np.float64)
    norm = np.zeros(extended, dtype=np.float64)
    starts = []
    for e, t, stride in zip(extended, tile, strides):
        axis = list(range(0, max(e - t, 0) + 1, stride))
        if axis[-1] + t < e:
            axis.append(e - t)
        starts.append(axis)
    for lo in itertools.product(*starts):
        hi = tuple(a + t for a, t in zip(lo, tile))
        window = read_window(image, lo, hi)
        y = predict((transform(window) if transform else window)[None, None])[0, 0]
        sides = [(a > 0, b < e) for a, b, e in zip(lo, hi, extended)]
        w = _edge_weights(tile, sides, halo, overlap, kind)
        region = tuple(slice(a, b) for a, b in zip(lo, hi))
        acc[region] += w * y
        norm[region] += w
    out = acc / np.maximum(norm, 1e-12)
    return out[tuple(slice(0, s) for s in image.shape)].astype(np.float32)


def _edge_weights(shape, sides, halo, overlap, kind: str) -> np.ndarray:
    """Separable weights: 0 over the halo, a ramp over ``overlap``, 1 inside; volume borders
    (sides without a neighbour) stay at 1."""
    weights = np.ones(tuple(shape), dtype=np.float64)
    for axis, (n, (before, after), h, o) in enumerate(zip(shape, sides, halo, overlap)):
        o = int(o)
        t = (np.arange(o) + 0.5) / max(o, 1)
        ramp = np.sin(0.5 * np.pi * t) ** 2 if kind == "cosine" else t
        rise = np.concatenate([np.zeros(h), ramp])[:n]
        profile = np.ones(n)
        if before:
            profile[: len(rise)] = np.minimum(profile[: len(rise)], rise)
        if after:
            profile[n - len(rise) :] = np.minimum(profile[n - len(rise) :], rise[::-1])
        view = [1] * len(shape)
        view[axis] = n
        weights *= profile.reshape(view)
    return weights
