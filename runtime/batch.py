"""A folder or glob of inputs processed as one batch; finished outputs are skipped.

``deconv run 'data/*.tif' -o results/ ...`` writes ``results/<name>`` for every match (a
folder means every image in it). An output that already exists under its final name is
complete (outputs appear under their final name only when finished), so re-running the same
command after an interruption skips the finished files and redoes the rest; ``--overwrite``
recomputes everything.
"""

from __future__ import annotations

import glob
from pathlib import Path

from deconv.errors import DeconvError

IMAGE_SUFFIXES = (".tif", ".tiff", ".zarr")


def is_batch(text: str) -> bool:
    return any(c in text for c in "*?[") or (
        Path(text).is_dir() and not text.rstrip("/").endswith(".zarr")
    )


def batch_inputs(text: str) -> list[Path]:
    """Images named by a glob or contained in a folder, sorted; an empty match is an error."""
    if Path(text).is_dir():
        paths = [p for p in sorted(Path(text).iterdir()) if _is_image(p)]
    else:
        paths = [Path(p) for p in sorted(glob.glob(text)) if _is_image(Path(p))]
    if not paths:
        raise DeconvError(f"no images (.tif, .tiff, .ome.tif, .zarr) match {text!r}")
    return paths


def _is_image(path: Path) -> bool:
    return not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def batch_output(source: Path, folder: Path, suffix: str | None = None) -> Path:
    """``folder/<source name>``, with ``suffix`` (``.zarr`` or ``.tif``) replacing the
    extension when given."""
    name = source.name
    if suffix:
        stem = name[: -len(".ome.tif")] if name.lower().endswith(".ome.tif") else Path(name).stem
        name = stem + suffix
    return folder / name
