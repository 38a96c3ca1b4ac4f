"""Tiling users cannot see: exact tiles equal a whole-volume pass; blending has no seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deconv.errors import DeconvError
from deconv.exporters.sources import from_registry
from deconv.runtime.backends import make_backend
from deconv.runtime.tiling import (
    TileGrid,
    mirror_index,
    predict_blended,
    predict_tiled,
    read_window,
)

MODELS = {name: from_registry(name) for name in ("rln3d_tiny", "rln2d_tiny", "mrbcr2d_tiny")}


def whole_volume(source, image):
    """Reference: the model on the whole image extended to an allowed size, cropped back."""
    grid = TileGrid(image.shape, source.card)
    index = [mirror_index(np.arange(e), n) for e, n in zip(grid.extended, image.shape)]
    x = torch.from_numpy(image[np.ix_(*index)].astype(np.float32))[None, None]
    with torch.no_grad():
        y = source.model(x)[0, 0].numpy()
    return y[tuple(slice(0, n) for n in image.shape)]


def torch_fn(source):
    def run(batch):
        with torch.no_grad():
            return source.model(torch.from_numpy(batch)).numpy()

    return run


@settings(max_examples=25, deadline=None)
@given(
    data=st.data(),
    name=st.sampled_from(sorted(MODELS)),
    batch=st.integers(1, 3),
)
def test_exact_tiles_equal_the_whole_volume(data, name, batch):
    source = MODELS[name]
    ndim = source.card.ndim
    step = source.card.step[0]
    hi = 40 if ndim == 3 else 140
    shape = tuple(data.draw(st.integers(5, hi), label=f"size{i}") for i in range(ndim))
    core = tuple(data.draw(st.integers(1, 6), label=f"core{i}") * step for i in range(ndim))
    image = np.random.default_rng(sum(shape)).random(shape, dtype=np.float32)
    tiled = predict_tiled(torch_fn(source), image, source.card, core=core, batch_size=batch)
    np.testing.assert_allclose(tiled, whole_volume(source, image), rtol=0, atol=2e-6)


def test_grid_cores_are_step_multiples_and_halo_covers_the_receptive_field():
    card = MODELS["mrbcr2d_tiny"].card  # step 8, halo (48, 56)
    grid = TileGrid((100, 130), card, core=(20, 30))
    assert grid.core == (24, 32) and grid.halo == (48, 56)
    assert grid.extended == (104, 136)
    tiles = list(grid.tiles())
    assert len(tiles) == len(grid) == 5 * 5
    covered = np.zeros(grid.shape, dtype=int)
    for tile in tiles:
        covered[
            tile.core_slices()[0].start : tile.core_hi[0], tile.core_lo[1] : tile.core_hi[1]
        ] += 1
        assert all(a % 8 == 0 for a in tile.window_lo)  # the pooling grid never shifts
    assert covered.min() == 1 and covered.max() == 1  # cores partition the image


def test_read_window_mirrors_past_the_far_end_and_reads_only_what_it_needs():
    image = np.arange(10, dtype=np.float32)
    window = read_window(image, (6,), (13,))
    np.testing.assert_array_equal(window, [6, 7, 8, 9, 8, 7, 6])
    np.testing.assert_array_equal(read_window(image, (2,), (5,)), [2, 3, 4])


def test_blending_is_seamless_for_a_model_with_global_pooling():
    """A stand-in for channel attention: the output depends on the whole tile's mean."""
    card = from_registry("rcan2d_tiny").card

    def global_model(batch):
        return batch - batch.mean(axis=(2, 3), keepdims=True)

    image = np.random.default_rng(1).random((96, 150), dtype=np.float32)
    image += np.linspace(0, 3, 150, dtype=np.float32)  # a gradient: tile means differ
    cropped = predict_tiled(global_model, image, card, core=(32, 32)) - image
    blended = predict_blended(global_model, image, card, (64, 64), (16, 16)) - image
    # a whole-volume pass gives a constant offset; tiles give offsets that vary by tile
    steps_cropped = np.abs(np.diff(cropped, axis=1)).max()
    steps_blended = np.abs(np.diff(blended, axis=1)).max()
    assert steps_blended < 0.25 * steps_cropped


def test_blending_reproduces_a_pointwise_model_exactly():
    card = from_registry("rcan2d_tiny").card
    image = np.random.default_rng(2).random((70, 90), dtype=np.float32)
    for kind in ("cosine", "linear"):
        out = predict_blended(lambda b: 2 * b + 1, image, card, (40, 48), (8, 12), kind)
        np.testing.assert_allclose(out, 2 * image + 1, rtol=1e-6)


def test_onnx_backend_matches_torch_backend_through_tiles(tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("DECONV_CACHE", str(tmp_path))
    source = MODELS["rln3d_tiny"]
    image = np.random.default_rng(3).random((20, 40, 36), dtype=np.float32)
    torch_out = predict_tiled(make_backend(source, "torch"), image, source.card, core=(8, 16, 16))
    onnx_backend = make_backend(source, "onnx")
    onnx_out = predict_tiled(onnx_backend, image, source.card, core=(8, 16, 16), batch_size=2)
    np.testing.assert_allclose(onnx_out, torch_out, rtol=1e-4, atol=1e-5)
    assert onnx_backend.describe() == "onnxruntime CPU fp32"
    assert len(list(tmp_path.glob("onnx/*.onnx"))) == 1  # exported once, cached
    # Streamed runs' low-memory session (no pre-planned activation block) computes the same.
    lean = make_backend(source, "onnx", low_memory=True)
    assert not lean.session.get_session_options().enable_mem_pattern
    assert onnx_backend.session.get_session_options().enable_mem_pattern
    lean_out = predict_tiled(lean, image, source.card, core=(8, 16, 16))
    np.testing.assert_allclose(lean_out, onnx_out, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "tflite"}, "--backend must be one of"),
        ({"backend": "tensorrt"}, "needs --device cuda"),
        ({"backend": "torch", "precision": "fp16"}, "fp16 needs a CUDA GPU"),
        ({"backend": "torch", "precision": "fp8"}, "fp32, fp16 or bf16"),
    ],
)
def test_backend_errors(kwargs, message):
    with pytest.raises(DeconvError, match=message):
        make_backend(MODELS["rln2d_tiny"], device="cpu", **kwargs)


def test_bf16_cpu_backend_is_close_to_fp32():
    source = MODELS["rln2d_tiny"]
    x = np.random.default_rng(4).random((1, 1, 64, 64), dtype=np.float32)
    fp32 = make_backend(source, "torch", precision="fp32")(x)
    bf16 = make_backend(source, "torch", precision="bf16")(x)
    assert np.abs(bf16 - fp32).max() < 0.05 * np.abs(fp32).max()


def test_bench_reports_every_backend_and_the_rl_floor(tmp_path, capsys, psf3d):
    import json

    from deconv.psf import save_psf
    from tests.test_cli import call

    save_psf(psf3d, tmp_path / "psf.tif")
    code, out, err = call(capsys, "bench", "--model", "rl", "--psf", str(tmp_path / "psf.tif"),
                          "--shape", "16,48,48", "--iterations", "3", "--repeats", "1",
                          "--json", str(tmp_path / "rl.json"))  # fmt: skip
    assert code == 0, err
    (row,) = json.loads((tmp_path / "rl.json").read_text())
    # the report's arithmetic, not its timings (one repeat on a shared 2-core machine is noisy:
    # the ratio itself belongs in benchmarks/, session 18 saw 0.78 here)
    assert row["ratio_to_floor"] == pytest.approx(
        row["ms_per_iteration"] / row["four_fft_floor_ms"]
    )
    assert row["ms_per_iteration"] > 0 and row["four_fft_floor_ms"] > 0
    assert f"{row['ratio_to_floor']:.2f}x the four-FFT floor" in out
    assert row["fft_engine"] in ("scipy", "fftw") and f"{row['fft_engine']} FFTs" in out
    args = ["--shape", "8,32,32", "--repeats", "1", "--json", str(tmp_path / "n.json")]
    code, out, err = call(capsys, "bench", "--model", "rln3d.widefield-synthetic", *args)
    assert code == 0, err
    rows = json.loads((tmp_path / "n.json").read_text())
    assert [r["precision"] for r in rows] == ["fp32", "fp32"]
    assert rows[0]["backend"].startswith("torch") and rows[1]["backend"].startswith("onnxruntime")
    assert all(r["mvoxel_per_s"] > 0 for r in rows)
    code, out, err = call(capsys, "bench", "--model", "rl", "--shape", "8,8,8")
    assert code == 2 and "needs --psf" in err
