"""Pictures people look at instead of reading numbers: orthogonal slices of volumes.

Each column is one volume (raw, results, ground truth), the rows are its central XY plane
and an XZ plane stretched to the true axial/lateral aspect ratio, all with the same
percentile contrast per column so that a sharper result is visibly sharper.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` as a PNG atomically (never a half-written picture) and close it."""
    from deconv.io import write_atomically

    try:
        return write_atomically(Path(path), lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
        pyplot().close(fig)


def orthogonal_slices_figure(
    volumes: Sequence[tuple[str, np.ndarray]],
    path: str | Path,
    voxel_size: Sequence[float] | None = None,
    title: str | None = None,
) -> Path:
    """Write a PNG with one column per (title, volume); 2D images get a single row."""
    plt = pyplot()

    is3d = volumes[0][1].ndim == 3
    aspect = 1.0
    if is3d and voxel_size is not None and len(voxel_size) == 3:
        aspect = voxel_size[0] / voxel_size[2]
    rows = 2 if is3d else 1
    ncols = len(volumes)
    shape = volumes[0][1].shape
    heights = [1.0, min(1.5, shape[0] * aspect / shape[1])] if is3d else [1.0]
    fig, axes = plt.subplots(
        rows, ncols, figsize=(3.2 * ncols, 3.4 * sum(heights)), squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )  # fmt: skip
    for col, (name, volume) in enumerate(volumes):
        volume = np.asarray(volume, dtype=np.float32)
        lo, hi = np.percentile(volume, [0.1, 99.9])
        planes = [volume[volume.shape[0] // 2]] if is3d else [volume]
        if is3d:
            planes.append(volume[:, volume.shape[1] // 2, :])
        for row, plane in enumerate(planes):
            ax = axes[row][col]
            ax.imshow(plane, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest",
                      aspect=aspect if row == 1 else 1.0)  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
        if is3d:
            axes[0][0].set_ylabel("XY (central plane)", fontsize=8)
            axes[1][0].set_ylabel("XZ", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


def training_curve(records: Sequence[dict], path: str | Path) -> Path:
    """Loss (log scale) and validation PSNR/SSIM against training steps."""
    plt = pyplot()

    steps = [r["step"] for r in records]
    fig, (ax_loss, ax_psnr) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax_loss.plot(steps, [r["loss"] for r in records], "o-", ms=3)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training loss", fontsize=9)
    ax_psnr.plot(steps, [r["psnr"] for r in records], "o-", ms=3, color="tab:green")
    ax_psnr.set_xlabel("step")
    ax_psnr.set_ylabel("validation PSNR (dB)")
    ax_ssim = ax_psnr.twinx()
    ax_ssim.plot(steps, [r["ssim"] for r in records], "s--", ms=3, color="tab:purple")
    ax_ssim.set_ylabel("validation SSIM")
    ax_psnr.set_title("held-out validation", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path, dpi=100)


def cover_image(raw: np.ndarray, result: np.ndarray, path: str | Path, label: str) -> Path:
    """A 2:1 bioimage.io cover: central plane of the raw input beside the model's output.

    Each half is scaled to its own 0.1-99.9 percentiles, so the cover shows structure, not
    the (arbitrary) intensity units of input and output.
    """
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    for ax, (name, image) in zip(axes, (("raw", raw), (label, result))):
        image = np.asarray(image, dtype=np.float32)
        plane = image[image.shape[0] // 2] if image.ndim == 3 else image
        lo, hi = np.percentile(plane, [0.1, 99.9])
        ax.imshow(plane, cmap="magma", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(name, fontsize=11)
        ax.axis("off")
    fig.tight_layout()
    return save_png(fig, path, dpi=100)
