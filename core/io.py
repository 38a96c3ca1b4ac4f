"""Reading and writing images with their voxel size: TIFF (ImageJ), OME-TIFF and Zarr/OME-Zarr.

Two promises hold for every write: the file appears under its final name only when it is
complete (written to a hidden temporary name in the same folder, then renamed), and an input
is never overwritten. Voxel sizes are micrometres, ordered like the array axes.
Our own metadata (e.g. PSF parameters) travels as JSON: ImageJ "Info", OME "Description",
or Zarr attributes.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deconv.errors import DeconvError

OutputDType = Literal["float32", "uint16"]
INPUT_DTYPES = (np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.float32, np.float64)
_UNIT_TO_UM = {"um": 1.0, "µm": 1.0, "\\u00b5m": 1.0, "micron": 1.0, "microns": 1.0,
               "micrometer": 1.0, "nm": 1e-3, "nanometer": 1e-3, "mm": 1e3}  # fmt: skip


@dataclass
class Image:
    """Pixels plus what we know about them. ``data`` may be a lazy Zarr array."""

    data: Any
    voxel_size: tuple[float, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def image_format(path: Path) -> Literal["tiff", "ome-tiff", "zarr"]:
    name = path.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith(".zarr") or name.endswith(".zarr/"):
        return "zarr"
    raise DeconvError(f"{path}: unknown image format (use .tif, .tiff, .ome.tif or .zarr)")


def read_image(path: str | Path, key: str | None = None, lazy: bool = False) -> Image:
    """Open an image; Zarr arrays stay lazy, TIFFs are read into memory unless ``lazy``
    (then memory-mapped when uncompressed, else read through tifffile's Zarr view)."""
    path = Path(path)
    if not path.exists():
        raise DeconvError(f"{path}: no such file")
    fmt = image_format(path)
    image = _read_zarr(path, key) if fmt == "zarr" else _read_tiff(path, lazy)
    dtype = np.dtype(image.data.dtype)
    if dtype.type not in INPUT_DTYPES:
        raise DeconvError(f"{path}: pixel type {dtype} is not supported (use uint8/16 or float)")
    if image.voxel_size is not None and len(image.voxel_size) != image.data.ndim:
        image.voxel_size = image.voxel_size[-image.data.ndim :] if image.data.ndim <= 3 else None
    return image


def _read_tiff(path: Path, lazy: bool = False) -> Image:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.axes
            voxel_size, extra = _tiff_metadata(tif, axes)
            if lazy:
                try:
                    data = tifffile.memmap(path, series=0, mode="r")
                except ValueError:  # compressed or not contiguous: tiles on demand
                    import zarr

                    data = zarr.open(series.aszarr(), mode="r")
            else:
                data = series.asarray()
    except DeconvError:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise DeconvError(f"{path}: not a readable TIFF ({exc})") from None
    keep = [i for i, n in enumerate(data.shape) if n > 1 or axes[i] in "YX"]
    if len(keep) != data.ndim:
        data = np.asarray(data).reshape([data.shape[i] for i in keep])
    spatial = [a for a in "ZYX" if a in axes and axes.index(a) in keep]
    if voxel_size is not None:
        voxel_size = tuple(voxel_size["ZYX".index(a)] for a in spatial) or None
        if voxel_size is not None and any(v is None for v in voxel_size):
            voxel_size = None
    return Image(data if lazy else np.asarray(data), voxel_size, extra)


def _tiff_metadata(tif, axes: str) -> tuple[list[float | None] | None, dict]:
    extra: dict = {}
    if tif.is_ome and tif.ome_metadata:
        pixels = None
        root = ET.fromstring(tif.ome_metadata)
        for element in root.iter():
            if element.tag.endswith("Pixels") and pixels is None:
                pixels = element
            if element.tag.endswith("Description") and element.text:
                extra = _parse_json(element.text)
        if pixels is None:
            return None, extra
        sizes: list[float | None] = []
        for a in "ZYX":
            value = pixels.get(f"PhysicalSize{a}")
            unit = pixels.get(f"PhysicalSize{a}Unit", "µm")
            sizes.append(None if value is None else float(value) * _unit_factor(unit))
        return sizes, extra
    ij = tif.imagej_metadata
    if ij is not None:
        extra = _parse_json(ij.get("Info", ""))
        unit = ij.get("unit")
        page = tif.pages[0]
        if unit is None or unit in ("pixel", "pixels") or _unit_factor(unit, None) is None:
            return None, extra
        factor = _unit_factor(unit)
        xres = page.tags.get("XResolution")
        yres = page.tags.get("YResolution")
        dx = _resolution_to_size(xres.value) * factor if xres else None
        dy = _resolution_to_size(yres.value) * factor if yres else None
        dz = float(ij["spacing"]) * factor if "spacing" in ij else None
        return [dz, dy, dx], extra
    return None, extra


def _resolution_to_size(value: tuple[int, int]) -> float | None:
    num, den = value
    return den / num if num else None


def _unit_factor(unit: str, default: float | None = 1.0) -> float | None:
    return _UNIT_TO_UM.get(str(unit).strip().lower(), default)


def _parse_json(text: str) -> dict:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _read_zarr(path: Path, key: str | None) -> Image:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as exc:
        raise DeconvError(f"{path}: not a readable Zarr store ({exc})") from None
    if isinstance(node, zarr.Array):
        attrs = dict(node.attrs)
        return Image(node, _tuple_or_none(attrs.get("voxel_size")), attrs.get("deconv", {}))
    attrs = dict(node.attrs)
    ome = attrs.get("ome", attrs)  # OME-Zarr 0.5 nests its metadata under "ome"
    voxel_size = None
    if key is None and "multiscales" in ome:
        level = ome["multiscales"][0]["datasets"][0]
        key = level["path"]
        for transform in level.get("coordinateTransformations", []):
            if transform.get("type") == "scale":
                voxel_size = tuple(float(v) for v in transform["scale"])
    arrays = sorted(name for name, _ in node.arrays())
    if key is None:
        if len(arrays) != 1:
            raise DeconvError(
                f"{path}: a Zarr group with arrays {arrays or 'none'}; name one with --key"
            )
        key = arrays[0]
    if key not in arrays:
        raise DeconvError(f"{path}: no array {key!r} in this Zarr group (it has {arrays})")
    array = node[key]
    if voxel_size is not None:
        voxel_size = voxel_size[-min(3, array.ndim) :]
    voxel_size = voxel_size or _tuple_or_none(attrs.get("voxel_size"))
    return Image(array, voxel_size, attrs.get("deconv", {}))


def _tuple_or_none(value) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


def check_output_path(
    output: str | Path, inputs: Iterable[str | Path] = (), image: bool = True
) -> Path:
    """Fail before any work is done if the output cannot be written or would hit an input.

    ``image=False`` skips the image-format check (packages, ONNX files, engines).
    """
    output = Path(output)
    if image:
        image_format(output)
    resolved = output.resolve()
    for item in inputs:
        if Path(item).resolve() == resolved:
            raise DeconvError(f"output {output} is the input file; choose another output name")
    folder = resolved.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".deconv-write-test-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise DeconvError(f"cannot write to folder {folder}: {exc.strerror or exc}") from None
    return output


def to_output_dtype(
    data: np.ndarray, dtype: OutputDType = "float32", scale: float | None = None
) -> tuple[np.ndarray, float]:
    """Cast for writing; returns the array and the scale applied (stored = value * scale).

    uint16 output is never silently clipped: without an explicit ``scale`` the values are
    kept as they are when they fit in 0..65535, and scaled down so the maximum maps to 65535
    when they do not. Callers report the scale and it is stored in the file's metadata.
    """
    if dtype == "float32":
        return np.asarray(data, dtype=np.float32), 1.0
    if dtype != "uint16":
        raise DeconvError(f"output type must be float32 or uint16, not {dtype}")
    data = np.asarray(data, dtype=np.float32)
    if scale is None:
        peak = float(data.max()) if data.size else 0.0
        scale = 1.0 if peak <= 65535 else 65535.0 / peak
    out = np.clip(np.rint(data * scale), 0, 65535).astype(np.uint16)
    return out, float(scale)


def write_image(
    path: str | Path,
    data: np.ndarray,
    voxel_size: Sequence[float] | None = None,
    extra: dict[str, Any] | None = None,
    chunks: Sequence[int] | None = None,
) -> Path:
    """Write ``data`` (float32 or uint16) atomically, with voxel size and JSON metadata."""
    path = Path(path)
    fmt = image_format(path)
    data = np.asarray(data)
    if data.dtype not in (np.float32, np.uint16, np.uint8):
        data = data.astype(np.float32)
    voxel_size = None if voxel_size is None else tuple(float(v) for v in voxel_size)
    extra = extra or {}

    def write(tmp: Path) -> None:
        if fmt == "zarr":
            _write_zarr(tmp, data, voxel_size, extra, chunks)
        else:
            _write_tiff(tmp, data, voxel_size, extra, ome=fmt == "ome-tiff")

    return write_atomically(path, write)


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp)`` on a hidden name beside ``path``, then rename it into place.

    On any failure (including Ctrl-C) the temporary file or folder is removed and an
    existing ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        write(tmp)
        _replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def _write_tiff(path: Path, data, voxel_size, extra, ome: bool) -> None:
    import tifffile

    axes = {2: "YX", 3: "ZYX", 4: "TZYX"}.get(data.ndim)
    if axes is None:
        raise DeconvError(f"cannot write a {data.ndim}D array as TIFF (2 to 4 axes)")
    spatial = axes.replace("T", "")
    vs = dict(zip(spatial[-len(voxel_size) :], voxel_size)) if voxel_size else {}
    info = json.dumps(extra) if extra else ""
    if ome:
        metadata: dict[str, Any] = {"axes": axes}
        for a, v in vs.items():
            metadata[f"PhysicalSize{a}"] = v
            metadata[f"PhysicalSize{a}Unit"] = "µm"
        if info:
            metadata["Description"] = info
        tifffile.imwrite(path, data, ome=True, metadata=metadata)
        return
    metadata = {"axes": axes}
    if vs:
        metadata["unit"] = "um"
    if "Z" in vs:
        metadata["spacing"] = vs["Z"]
    if info:
        metadata["Info"] = info
    resolution = (1.0 / vs["X"], 1.0 / vs["Y"]) if "X" in vs and "Y" in vs else None
    tifffile.imwrite(path, data, imagej=True, resolution=resolution, metadata=metadata)


def _write_zarr(path: Path, data, voxel_size, extra, chunks) -> None:
    """An OME-Zarr 0.4 image (one resolution level "0"), readable by napari and Fiji."""
    array = create_ome_zarr(path, data.shape, data.dtype, voxel_size, extra, chunks)
    array[...] = data


def create_ome_zarr(path: Path, shape, dtype, voxel_size=None, extra=None, chunks=None):
    """An empty OME-Zarr 0.4 image (level "0") to fill chunk by chunk; returns the array.

    Streamed outputs (tiles written as they finish) and whole-array writes share this, so
    both read back the same way (voxel size in the multiscales scale and in attrs).
    """
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    ndim = len(shape)
    chunks = tuple(chunks) if chunks else tuple(min(s, c) for s, c in zip(shape, (64,) * 4))
    array = group.create_array("0", shape=tuple(shape), dtype=dtype, chunks=chunks)
    names = ["t", "z", "y", "x"][-ndim:]
    axes = [
        {"name": n, "type": "time" if n == "t" else "space"}
        | ({"unit": "micrometer"} if n != "t" else {})
        for n in names
    ]
    scale = [1.0] * ndim
    if voxel_size:
        scale[-len(voxel_size) :] = list(voxel_size)
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}
            ],
        }
    ]
    if voxel_size:
        group.attrs["voxel_size"] = list(voxel_size)
    if extra:
        group.attrs["deconv"] = extra
    return array


def _replace(tmp: Path, final: Path) -> None:
    if tmp.is_dir() and final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
