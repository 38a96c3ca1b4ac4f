"""Out-of-core runs: Zarr in, OME-Zarr out tile by tile, identical results, kill -9 resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from deconv.io import create_ome_zarr, read_image
from deconv.psf import generate_psf, save_psf
from deconv.synth import simulate_pair
from deconv.training import TrainConfig, train
from tests.test_cli import call

CLI = [sys.executable, "-c", "from deconv.cli import main; main()"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """A briefly trained tiny RLN (run directory) and a 3D sample as Zarr and TIFF."""
    folder = tmp_path_factory.mktemp("stream")
    psf = generate_psf(shape=(9, 17, 17))
    save_psf(psf, folder / "psf.tif")
    train(TrainConfig(model="rln3d_tiny", psf=str(folder / "psf.tif"), steps=2, val_every=2,
                      patch=(16, 32, 32), volume_shape=(32, 64, 64), pool_size=1, batch_size=1,
                      validation_count=1), folder / "run")  # fmt: skip
    raw = simulate_pair((30, 90, 84), psf.data, seed=5)[0].astype(np.uint16)
    array = create_ome_zarr(folder / "in.zarr", raw.shape, np.uint16, (0.2, 0.065, 0.065),
                            None, (16, 32, 32))  # fmt: skip
    array[...] = raw
    tifffile.imwrite(folder / "in.tif", raw, imagej=True, resolution=(1 / 0.065, 1 / 0.065),
                     metadata={"spacing": 0.2, "unit": "um"})  # fmt: skip
    return {"folder": folder, "run": folder / "run", "zarr": folder / "in.zarr",
            "tif": folder / "in.tif"}  # fmt: skip


def _zarr(path: Path) -> np.ndarray:
    return zarr.open_group(str(path), mode="r")["0"][...]


def test_streamed_zarr_equals_the_in_memory_run(setup, tmp_path, capsys):
    run = str(setup["run"])
    code, _, err = call(capsys, "run", str(setup["zarr"]), "-o", str(tmp_path / "s.zarr"),
                        "--model", run, "--tile", "8,32,32", "-q")  # fmt: skip
    assert code == 0, err
    code, _, err = call(capsys, "run", str(setup["tif"]), "-o", str(tmp_path / "m.tif"),
                        "--model", run, "-q")  # fmt: skip
    assert code == 0, err
    streamed, memory = _zarr(tmp_path / "s.zarr"), tifffile.imread(tmp_path / "m.tif")
    np.testing.assert_allclose(streamed, memory, rtol=0, atol=1e-5 * np.abs(memory).max())
    image = read_image(tmp_path / "s.zarr")
    assert image.voxel_size == pytest.approx((0.2, 0.065, 0.065))
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert group["0"].chunks == (8, 32, 32)  # one chunk per tile core
    assert not list(tmp_path.glob(".*partial*"))


def test_memory_mapped_tiff_streams_too(setup, tmp_path, capsys):
    code, _, err = call(capsys, "run", str(setup["tif"]), "-o", str(tmp_path / "t.zarr"),
                        "--model", str(setup["run"]), "--tile", "16,64,64", "-q")  # fmt: skip
    assert code == 0, err
    image = read_image(setup["tif"], lazy=True)
    assert isinstance(image.data, np.memmap)


def test_kill_9_then_rerun_matches_an_uninterrupted_run(setup, tmp_path):
    args = ["run", str(setup["zarr"]), "--model", str(setup["run"]), "--tile", "4,16,16",
            "--quiet"]  # fmt: skip
    subprocess.run([*CLI, *args, "-o", str(tmp_path / "straight.zarr")], check=True, timeout=600)
    out = tmp_path / "killed.zarr"
    journal = tmp_path / ".killed.zarr.partial" / "deconv-progress.txt"
    victim = subprocess.Popen([*CLI, *args, "-o", str(out)])
    deadline = time.time() + 300
    while time.time() < deadline and not (
        journal.exists() and len(journal.read_text().splitlines()) >= 20
    ):
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    done = len(journal.read_text().splitlines())
    assert 20 <= done < 8 * 6 * 6 and not out.exists()  # killed midway, nothing final
    proc = subprocess.run([*CLI, *args[:-1], "-o", str(out)], capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "resuming:" in proc.stderr
    np.testing.assert_array_equal(_zarr(out), _zarr(tmp_path / "straight.zarr"))
    assert not journal.parent.exists()


def test_a_changed_command_does_not_reuse_tiles(setup, tmp_path, capsys):
    out = tmp_path / "o.zarr"
    partial = tmp_path / ".o.zarr.partial"
    partial.mkdir()
    (partial / "deconv-progress.txt").write_text("[0, 0, 0]\n")  # leftovers of another run
    code, _, err = call(capsys, "run", str(setup["zarr"]), "-o", str(out), "--model",
                        str(setup["run"]), "--tile", "16,64,64")  # fmt: skip
    assert code == 0 and "resuming" not in err
    assert not partial.exists()


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda f: zarr.open_group(str(f / "empty.zarr"), mode="w"), [], "arrays none"),
        (None, ["--key", "nope"], "no array 'nope'"),
        (None, ["--tile", "8,32"], "--tile needs 3 sizes"),
    ],
)
def test_bad_zarr_input_is_one_line_and_leaves_nothing(setup, tmp_path, capsys, make, extra,
                                                       message):  # fmt: skip
    source = setup["zarr"]
    if make is not None:
        make(tmp_path)
        source = tmp_path / "empty.zarr"
    out = tmp_path / "o.zarr"
    code, _, err = call(capsys, "run", str(source), "-o", str(out), "--model",
                        str(setup["run"]), *extra)  # fmt: skip
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".o.zarr*"))


def test_dask_local_cluster_gives_the_single_process_result(setup, tmp_path, capsys):
    pytest.importorskip("distributed")
    common = ["--model", str(setup["run"]), "--tile", "8,32,32", "--backend", "torch", "-q"]
    code, _, err = call(capsys, "run", str(setup["zarr"]), "-o", str(tmp_path / "one.zarr"),
                        *common)  # fmt: skip
    assert code == 0, err
    code, _, err = call(capsys, "run", str(setup["zarr"]), "-o", str(tmp_path / "dask.zarr"),
                        *common, "--dask", "local:2")  # fmt: skip
    assert code == 0, err
    single, spread = _zarr(tmp_path / "one.zarr"), _zarr(tmp_path / "dask.zarr")
    # workers run one torch thread each: convolutions may sum in another order (~1e-7)
    np.testing.assert_allclose(spread, single, rtol=0, atol=1e-6 * np.abs(single).max())
    assert read_image(tmp_path / "dask.zarr").voxel_size == pytest.approx((0.2, 0.065, 0.065))


def test_unreachable_dask_scheduler_fails_in_bounded_time(setup, tmp_path, capsys):
    pytest.importorskip("distributed")
    start = time.time()
    code, _, err = call(capsys, "run", str(setup["zarr"]), "-o", str(tmp_path / "o.zarr"),
                        "--model", str(setup["run"]), "--dask", "tcp://127.0.0.1:9")  # fmt: skip
    assert code == 2 and "cannot reach the Dask scheduler" in err
    assert time.time() - start < 60
    assert not list(tmp_path.iterdir())


def test_dask_needs_a_zarr_output(setup, tmp_path, capsys):
    code, _, err = call(capsys, "run", str(setup["zarr"]), "-o", str(tmp_path / "o.tif"),
                        "--model", str(setup["run"]), "--dask", "local:1")  # fmt: skip
    assert code == 2 and "--dask runs trained networks into a .zarr output" in err


def test_a_folder_is_a_batch_and_finished_outputs_are_skipped(setup, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    raw = tifffile.imread(setup["tif"])[:16, :48, :48]
    for name in ("a.tif", "b.tif"):
        tifffile.imwrite(folder / name, raw)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    args = ["run", str(folder), "-o", str(out), "--model", str(setup["run"]), "-q"]
    code, text, err = call(capsys, *args)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["a.tif", "b.tif"] and "2 written" in text
    stamp = (out / "a.tif").stat().st_mtime_ns
    (out / "b.tif").unlink()  # as if the first run had been interrupted before b
    code, text, _ = call(capsys, *args)
    assert "1 written, 1 already done" in text and (out / "a.tif").stat().st_mtime_ns == stamp
    code, text, _ = call(capsys, *args, "--overwrite", "--output-format", "zarr")
    assert "2 written" in text and (out / "a.zarr").is_dir()
    code, _, err = call(capsys, "run", str(tmp_path / "nothing*.tif"), "-o", str(out),
                        "--model", str(setup["run"]))  # fmt: skip
    assert code == 2 and "no images" in err


def test_rl_streams_to_zarr_close_to_the_whole_volume_run(setup, tmp_path, capsys):
    psf = str(setup["folder"] / "psf.tif")
    common = ["--psf", psf, "--iterations", "10", "--background", "30", "-q"]
    code, _, err = call(capsys, "run", str(setup["zarr"]), "-o", str(tmp_path / "t.zarr"),
                        "--tile", "16,48,48", *common)  # fmt: skip
    assert code == 0, err
    code, _, err = call(capsys, "run", str(setup["tif"]), "-o", str(tmp_path / "w.tif"), *common)
    assert code == 0, err
    tiled, whole = _zarr(tmp_path / "t.zarr"), tifffile.imread(tmp_path / "w.tif")
    # RL is not local: with a one-PSF halo the cores differ from the whole run by < 1% of
    # the peak (measured ~0.5%), ~0.2% on average
    assert np.abs(tiled - whole).max() < 0.01 * whole.max()
    assert np.abs(tiled - whole).mean() < 5e-3 * whole.mean()


def test_input_smaller_than_the_model_minimum_is_padded_with_a_message(setup, tmp_path, capsys):
    """mrbcr-like minimums are large; RLN's minimum is 4: a 3-plane stack is padded."""
    tiny = tmp_path / "tiny.tif"
    tifffile.imwrite(tiny, tifffile.imread(setup["tif"])[:3, :40, :40], photometric="minisblack")
    code, _, err = call(capsys, "run", str(tiny), "-o", str(tmp_path / "o.tif"), "--model",
                          str(setup["run"]), "--backend", "torch")  # fmt: skip
    assert code == 0, err
    assert "smaller than" in err and "mirror-padded" in err
    assert tifffile.imread(tmp_path / "o.tif").shape == (3, 40, 40)


def test_tta_is_the_same_in_memory_streamed_and_on_dask(setup, tmp_path, capsys):
    pytest.importorskip("distributed")
    # the tiny RLN's run directory carries its (laterally symmetric) widefield PSF
    common = ["--model", str(setup["run"]), "--backend", "torch", "--tta", "-q"]
    outputs = {"memory": tmp_path / "m.tif", "streamed": tmp_path / "s.zarr",
               "dask": tmp_path / "d.zarr"}  # fmt: skip
    extra = {"memory": [], "streamed": ["--tile", "8,32,32"],
             "dask": ["--tile", "8,32,32", "--dask", "local:2"]}  # fmt: skip
    results = {}
    for name, out in outputs.items():
        source = setup["tif"] if name == "memory" else setup["zarr"]
        code, _, err = call(capsys, "run", str(source), "-o", str(out), *common, *extra[name])
        assert code == 0, err
        results[name] = tifffile.imread(out) if name == "memory" else _zarr(out)
    code, _, err = call(capsys, "run", str(setup["tif"]), "-o", str(tmp_path / "plain.tif"),
                        "--model", str(setup["run"]), "--backend", "torch", "-q")  # fmt: skip
    plain = tifffile.imread(tmp_path / "plain.tif")
    scale = np.abs(results["memory"]).max()
    for name in ("streamed", "dask"):
        np.testing.assert_allclose(results[name], results["memory"], rtol=0, atol=1e-5 * scale)
    assert np.abs(results["memory"] - plain).max() > 1e-4 * scale  # averaging did something
