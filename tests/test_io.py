"""Tests for deconv.io: round trips with voxel size and metadata, errors, atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

import deconv.io as dio
from deconv.errors import DeconvError
from deconv.io import check_output_path, read_image, to_output_dtype, write_image

SUFFIXES = (".tif", ".ome.tif", ".zarr")
EXTRA = {"deconv.psf": {"na": 1.4, "shape": [9, 17, 17]}, "note": "µm ok", "flag": None}


def _sample(rng, shape, dtype):
    if np.dtype(dtype) == np.uint16:
        return rng.integers(0, 65536, size=shape, dtype=np.uint16)
    return rng.normal(100.0, 30.0, size=shape).astype(dtype)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


# ---- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [np.float32, np.uint16])
@pytest.mark.parametrize(
    ("shape", "voxel_size"),
    [((23, 31), (0.0651, 0.0653)), ((5, 23, 31), (0.2017, 0.0651, 0.0653))],
)
def test_write_read_round_trip(tmp_path, rng, suffix, dtype, shape, voxel_size):
    data = _sample(rng, shape, dtype)
    path = tmp_path / f"image{suffix}"
    assert write_image(path, data, voxel_size=voxel_size, extra=EXTRA) == path
    image = read_image(path)
    out = np.asarray(image.data[...])
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, data)
    assert image.voxel_size is not None
    np.testing.assert_allclose(image.voxel_size, voxel_size, rtol=1e-6)
    assert image.extra == EXTRA
    assert _listing(tmp_path) == [path.name]  # no temporary left behind


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_round_trip_without_voxel_size_or_extra(tmp_path, rng, suffix):
    data = _sample(rng, (4, 8, 9), np.float32)
    path = write_image(tmp_path / f"plain{suffix}", data)
    image = read_image(path)
    np.testing.assert_array_equal(np.asarray(image.data[...]), data)
    assert image.extra == {}
    if suffix != ".zarr":  # OME-Zarr always carries a scale (1.0 when unknown)
        assert image.voxel_size is None


def test_write_converts_float64_to_float32(tmp_path):
    data = np.linspace(0, 1, 60).reshape(6, 10)
    image = read_image(write_image(tmp_path / "f64.tif", data))
    assert image.data.dtype == np.float32
    np.testing.assert_allclose(image.data, data, rtol=1e-7)


def test_plain_tifffile_has_no_voxel_size(tmp_path, rng):
    data = _sample(rng, (3, 10, 12), np.float32)
    tifffile.imwrite(tmp_path / "plain.tif", data, photometric="minisblack")
    image = read_image(tmp_path / "plain.tif")
    assert image.voxel_size is None
    assert image.extra == {}
    np.testing.assert_array_equal(image.data, data)


def test_uint8_reads_as_uint8(tmp_path):
    data = np.arange(60, dtype=np.uint8).reshape(6, 10)
    tifffile.imwrite(tmp_path / "u8.tif", data)
    image = read_image(tmp_path / "u8.tif")
    assert image.data.dtype == np.uint8
    np.testing.assert_array_equal(image.data, data)


def test_imagej_tiff_in_nanometres_is_converted(tmp_path):
    data = np.zeros((3, 8, 8), np.float32)
    tifffile.imwrite(
        tmp_path / "nm.tif",
        data,
        imagej=True,
        resolution=(1 / 65.0, 1 / 70.0),
        metadata={"axes": "ZYX", "unit": "nm", "spacing": 200.0},
    )
    np.testing.assert_allclose(read_image(tmp_path / "nm.tif").voxel_size, (0.2, 0.07, 0.065))


def test_unsupported_pixel_type_is_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", np.zeros((4, 4), np.complex64))
    with pytest.raises(DeconvError, match="complex64"):
        read_image(tmp_path / "c.tif")


# ---- bad input -------------------------------------------------------------------------------


def test_corrupt_tiff_raises_with_path(tmp_path, rng):
    path = tmp_path / "corrupt.tif"
    path.write_bytes(rng.bytes(2048))
    with pytest.raises(DeconvError, match="not a readable TIFF") as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["missing.tif", "missing.zarr"])
def test_missing_file_raises_with_path(tmp_path, name):
    with pytest.raises(DeconvError, match="no such file") as info:
        read_image(tmp_path / name)
    assert str(tmp_path / name) in str(info.value)


def test_unknown_format_is_rejected(tmp_path):
    (tmp_path / "image.png").write_bytes(b"x")
    with pytest.raises(DeconvError, match="unknown image format"):
        read_image(tmp_path / "image.png")
    with pytest.raises(DeconvError, match="unknown image format"):
        write_image(tmp_path / "out.jpg", np.zeros((4, 4), np.float32))


# ---- Zarr ------------------------------------------------------------------------------------


def test_zarr_group_with_two_arrays_needs_key(tmp_path):
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    group.create_array("raw", shape=(4, 5), dtype="f4")[...] = 1.5
    group.create_array("gt", shape=(4, 5), dtype="u2")[...] = 7
    with pytest.raises(DeconvError, match="name one with --key") as info:
        read_image(tmp_path / "two.zarr")
    assert "'gt'" in str(info.value) and "'raw'" in str(info.value)
    image = read_image(tmp_path / "two.zarr", key="gt")
    np.testing.assert_array_equal(image.data[...], np.full((4, 5), 7, np.uint16))
    with pytest.raises(DeconvError, match="no array 'nope'"):
        read_image(tmp_path / "two.zarr", key="nope")


def test_ome_zarr_voxel_size_comes_from_multiscales(tmp_path, rng):
    data = _sample(rng, (3, 16, 20), np.float32)
    path = write_image(tmp_path / "ome.zarr", data, voxel_size=(0.3, 0.11, 0.12))
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    (level,) = attrs["multiscales"][0]["datasets"]
    assert level["coordinateTransformations"] == [{"type": "scale", "scale": [0.3, 0.11, 0.12]}]
    # Remove our own copy so only the OME metadata can supply the voxel size.
    group = zarr.open_group(str(path), mode="r+")
    del group.attrs["voxel_size"]
    image = read_image(path)
    assert image.voxel_size == (0.3, 0.11, 0.12)
    np.testing.assert_array_equal(image.data[...], data)


def test_ome_zarr_05_nested_metadata(tmp_path):
    group = zarr.open_group(str(tmp_path / "v05.zarr"), mode="w", zarr_format=3)
    group.create_array("s0", shape=(2, 6, 7), dtype="u2")[...] = 5
    group.attrs["ome"] = {
        "version": "0.5",
        "multiscales": [
            {
                "axes": [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
                "datasets": [
                    {
                        "path": "s0",
                        "coordinateTransformations": [{"type": "scale", "scale": [0.5, 0.1, 0.1]}],
                    }
                ],
            }
        ],
    }
    image = read_image(tmp_path / "v05.zarr")
    assert image.voxel_size == (0.5, 0.1, 0.1)
    assert image.data.shape == (2, 6, 7)


def test_lone_zarr_array_reads_voxel_size_attribute(tmp_path):
    array = zarr.create_array(str(tmp_path / "a.zarr"), shape=(3, 4, 5), dtype="f4")
    array[...] = 2.0
    array.attrs["voxel_size"] = [0.3, 0.1, 0.1]
    image = read_image(tmp_path / "a.zarr")
    assert image.voxel_size == (0.3, 0.1, 0.1)
    np.testing.assert_array_equal(image.data[...], np.full((3, 4, 5), 2.0, np.float32))


def test_zarr_overwrite_replaces_old_store(tmp_path):
    path = tmp_path / "out.zarr"
    write_image(path, np.zeros((4, 6), np.float32))
    write_image(path, np.ones((5, 7), np.uint16))
    image = read_image(path)
    assert image.data.shape == (5, 7) and image.data.dtype == np.uint16
    assert _listing(tmp_path) == ["out.zarr"]


# ---- atomic writes ---------------------------------------------------------------------------


class _WriterCrash(RuntimeError):
    pass


def _crashing_tiff_writer(path, data, voxel_size, extra, ome):
    path.write_bytes(b"II*\x00 half a tiff")  # something was written before the failure
    raise _WriterCrash("disk full")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(dio, "_write_tiff", _crashing_tiff_writer)
    with pytest.raises(_WriterCrash):
        write_image(tmp_path / "out.tif", np.zeros((4, 4), np.float32))
    assert _listing(tmp_path) == []


def test_failed_write_keeps_existing_file(tmp_path, monkeypatch):
    path = tmp_path / "out.tif"
    original = np.arange(16, dtype=np.float32).reshape(4, 4)
    write_image(path, original, voxel_size=(0.1, 0.1))
    before = path.read_bytes()
    monkeypatch.setattr(dio, "_write_tiff", _crashing_tiff_writer)
    with pytest.raises(_WriterCrash):
        write_image(path, np.zeros((4, 4), np.float32))
    assert _listing(tmp_path) == ["out.tif"]
    assert path.read_bytes() == before


def test_failed_zarr_write_leaves_no_folder(tmp_path, monkeypatch):
    def crash(path, data, voxel_size, extra, chunks):
        zarr.open_group(str(path), mode="w").create_array("0", shape=(2, 2), dtype="f4")
        raise _WriterCrash("interrupted")

    monkeypatch.setattr(dio, "_write_zarr", crash)
    with pytest.raises(_WriterCrash):
        write_image(tmp_path / "out.zarr", np.zeros((4, 4), np.float32))
    assert _listing(tmp_path) == []


def test_write_rejects_five_dimensions(tmp_path):
    with pytest.raises(DeconvError, match="5D"):
        write_image(tmp_path / "x.tif", np.zeros((1, 1, 2, 3, 4), np.float32))
    assert _listing(tmp_path) == []


# ---- check_output_path -----------------------------------------------------------------------


def test_check_output_path_rejects_input(tmp_path, monkeypatch):
    source = tmp_path / "in.tif"
    write_image(source, np.zeros((4, 4), np.float32))
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for output in (source, "in.tif", "sub/../in.tif", "./sub/../in.tif"):
        with pytest.raises(DeconvError, match="is the input file"):
            check_output_path(output, [source])
    os.symlink(source, tmp_path / "link.tif")
    with pytest.raises(DeconvError, match="is the input file"):
        check_output_path("link.tif", ["in.tif"])
    assert check_output_path("out.tif", [source]) == Path("out.tif")
    assert check_output_path(tmp_path / "out.tif", [source]) == tmp_path / "out.tif"


@pytest.mark.parametrize("kind", ["proc", "file-parent"])
def test_check_output_path_rejects_unwritable_folder(tmp_path, kind):
    if kind == "proc":
        output = "/proc/deconv-test/out.tif"
        folder = "/proc/deconv-test"
    else:
        (tmp_path / "a-file").write_text("not a folder")
        output = tmp_path / "a-file" / "out.tif"
        folder = str(tmp_path / "a-file")
    with pytest.raises(DeconvError, match="cannot write to folder") as info:
        check_output_path(output)
    assert folder in str(info.value)


def test_check_output_path_creates_missing_folder_and_leaves_no_probe(tmp_path):
    output = tmp_path / "new" / "deeper" / "out.ome.tif"
    assert check_output_path(output) == output
    assert (tmp_path / "new" / "deeper").is_dir()
    assert _listing(tmp_path / "new" / "deeper") == []


def test_check_output_path_rejects_unknown_suffix(tmp_path):
    with pytest.raises(DeconvError, match="unknown image format"):
        check_output_path(tmp_path / "out.png")


# ---- to_output_dtype -------------------------------------------------------------------------


def test_to_output_dtype_float32_unchanged(rng):
    data = rng.normal(0, 1e6, size=(5, 7)).astype(np.float32)
    out, scale = to_output_dtype(data, "float32")
    assert out.dtype == np.float32 and scale == 1.0
    np.testing.assert_array_equal(out, data)


def test_to_output_dtype_uint16_in_range_keeps_values():
    data = np.array([[0.0, 0.4, 0.6, 1.5], [2.49, 1000.2, 65534.6, 65535.0]], np.float32)
    out, scale = to_output_dtype(data, "uint16")
    assert out.dtype == np.uint16 and scale == 1.0
    np.testing.assert_array_equal(out, [[0, 0, 1, 2], [2, 1000, 65535, 65535]])


def test_to_output_dtype_uint16_scales_down_large_values():
    data = np.array([0.0, 1000.0, 65535.0, 131070.0, 262140.0], np.float32)
    out, scale = to_output_dtype(data, "uint16")
    assert scale == pytest.approx(65535.0 / 262140.0, rel=1e-7)
    np.testing.assert_array_equal(out, [0, 250, 16384, 32768, 65535])  # rint(x / 4)
    assert out.max() == 65535


def test_to_output_dtype_explicit_scale():
    data = np.array([0.0, 1.2, 10.0, 300.0], np.float32)
    out, scale = to_output_dtype(data, "uint16", scale=100.0)
    assert scale == 100.0
    np.testing.assert_array_equal(out, [0, 120, 1000, 30000])


def test_to_output_dtype_rejects_other_types():
    with pytest.raises(DeconvError, match="float32 or uint16"):
        to_output_dtype(np.zeros(3), "int8")  # type: ignore[arg-type]


def test_to_output_dtype_scale_is_stored_and_recoverable(tmp_path):
    values = np.array([[0.0, 5e4], [1e5, 2e5]], np.float32)
    out, scale = to_output_dtype(values, "uint16")
    path = write_image(tmp_path / "scaled.tif", out, extra={"scale": scale})
    image = read_image(path)
    recovered = image.data / image.extra["scale"]
    np.testing.assert_allclose(recovered, values, atol=0.5 / scale)
    assert image.extra == {"scale": scale}
