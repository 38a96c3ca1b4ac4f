"""The CLI contract: end to end through the installed ``deconv`` command, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

import deconv
from deconv.cli import main
from deconv.cli.app import WORKFLOW_ORDER, app
from deconv.io import read_image, write_image
from deconv.metrics import evaluate
from deconv.psf import generate_psf, save_psf
from deconv.synth import simulate_pair

DECONV = shutil.which("deconv", path=str(Path(sys.executable).parent)) or "deconv"


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([DECONV, *args], capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"deconv {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def call(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> dict[str, Path]:
    """A small PSF and a blurred sample written to TIFFs, plus the ground truth."""
    folder = tmp_path_factory.mktemp("sample")
    psf = generate_psf(shape=(17, 33, 33))
    raw, gt = simulate_pair((24, 64, 64), psf.data, seed=1)
    files = {
        "psf": save_psf(psf, folder / "psf.tif"),
        "raw": write_image(folder / "raw.tif", raw, voxel_size=psf.voxel_size),
        "gt": write_image(folder / "gt.tif", gt, voxel_size=psf.voxel_size),
    }
    return files


def test_version_through_installed_command():
    proc = run_cli("--version")
    assert proc.stdout.strip() == f"deconv {deconv.__version__}"


def test_help_lists_every_command_in_workflow_order(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("Commands:")[1].splitlines() if line.strip()]
    assert listed[:5] == ["demo", "run", "psf", "synth", "train"]
    assert listed == [name for name in WORKFLOW_ORDER if name in listed]
    assert sorted(listed) == sorted(command.name for command in app.registered_commands)


@pytest.mark.slow
def test_contract_commands_end_to_end(tmp_path):
    """The exact commands of the CLI contract, through the console script."""
    psf = tmp_path / "psf.tif"
    options = "--model vectorial --na 1.4 --wavelength 0.52 --ni 1.515 --ns 1.33 --dxy 0.065"
    run_cli("psf", "-o", str(psf), *options.split(), "--dz", "0.2", "--shape", "33,65,65")
    loaded = read_image(psf)
    assert loaded.data.shape == (33, 65, 65)
    assert loaded.voxel_size == pytest.approx((0.2, 0.065, 0.065))
    assert loaded.extra["deconv.psf"]["na"] == 1.4

    data = tmp_path / "data"
    run_cli("synth", "-o", str(data), "--psf", str(psf), "--n", "2", "--shape", "40,96,96",
            "--seed", "0", "--quiet")  # fmt: skip
    raw_path = data / "raw" / "sample_0000.tif"
    gt = read_image(data / "gt" / "sample_0000.tif").data
    raw = read_image(raw_path)
    assert raw.data.shape == (40, 96, 96)
    assert raw.voxel_size == pytest.approx((0.2, 0.065, 0.065))

    out = tmp_path / "rl.tif"
    run_cli("run", str(raw_path), "-o", str(out), "--model", "rl", "--psf", str(psf),
            "--iterations", "30", "--background", "10")  # fmt: skip
    out_wb = tmp_path / "wb.tif"
    run_cli("run", str(raw_path), "-o", str(out_wb), "--model", "rl", "--psf", str(psf),
            "--back-projector", "wiener-butterworth", "--iterations", "2",
            "--background", "10")  # fmt: skip
    before = evaluate(raw.data, gt)["psnr"]
    for path in (out, out_wb):
        result = read_image(path)
        assert result.data.dtype == np.float32
        assert result.voxel_size == pytest.approx((0.2, 0.065, 0.065))
        assert evaluate(result.data, gt)["psnr"] > before + 1.0
    assert read_image(out_wb).extra["deconv.run"]["rl"]["back_projector"] == "wiener-butterworth"


def test_run_uint16_output_states_scale(tmp_path, sample, capsys):
    out = tmp_path / "out.tif"
    code, _, err = call(capsys, "run", str(sample["raw"]), "-o", str(out), "--psf",
                        str(sample["psf"]), "--iterations", "3", "--output-dtype", "uint16",
                        "--uint16-scale", "2")  # fmt: skip
    assert code == 0
    assert "stored value = intensity x 2" in err
    stored = read_image(out)
    assert stored.data.dtype == np.uint16
    assert stored.extra["deconv.uint16_scale"] == 2.0
    reference = tmp_path / "ref.tif"
    call(capsys, "run", str(sample["raw"]), "-o", str(reference), "--psf", str(sample["psf"]),
         "--iterations", "3")  # fmt: skip
    expected = np.clip(np.rint(read_image(reference).data * 2), 0, 65535)
    np.testing.assert_allclose(stored.data, expected, atol=1)


def test_run_resamples_psf_with_message(tmp_path, sample, capsys):
    raw = read_image(sample["raw"]).data
    coarse = write_image(tmp_path / "coarse.tif", raw[:, ::2, ::2], voxel_size=(0.2, 0.13, 0.13))
    code, _, err = call(capsys, "run", str(coarse), "-o", str(tmp_path / "o.tif"), "--psf",
                        str(sample["psf"]), "--iterations", "2")  # fmt: skip
    assert code == 0
    assert "resampled the PSF from 17x33x33" in err


def test_demo_writes_files_and_improves_quality(tmp_path, capsys):
    code, out, _ = call(capsys, "demo", "-o", str(tmp_path / "demo"), "--quiet")
    assert code == 0
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())["metrics"]
    assert metrics["rl"]["psnr"] > metrics["raw"]["psnr"] + 1.0
    assert metrics["rl_wiener_butterworth"]["psnr"] >= metrics["rl"]["psnr"]
    # the shipped network far ahead of 30 RL iterations, and RL from its output further still
    assert metrics["rln"]["psnr"] > metrics["rl"]["psnr"] + 5.0
    assert metrics["rln_rl_refine"]["psnr"] > metrics["rln"]["psnr"] + 0.5
    png = (tmp_path / "demo" / "demo.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "figure:" in out


# --- bad input: one line on stderr, exit code 2, nothing written -------------------------


def assert_clean_failure(code: int, err: str, needle: str, output: Path | None = None) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    if output is not None:
        assert not output.exists()
        assert not any(p.name.startswith(f".{output.name}") for p in output.parent.iterdir())


def run_args(inp, out, psf, *extra) -> list[str]:
    return ["run", str(inp), "-o", str(out), "--psf", str(psf), "--iterations", "2", *extra]


def test_missing_input(tmp_path, sample, capsys):
    out = tmp_path / "o.tif"
    code, _, err = call(capsys, *run_args(tmp_path / "nope.tif", out, sample["psf"]))
    assert_clean_failure(code, err, "no such file", out)


def test_corrupt_tiff(tmp_path, sample, capsys):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 4)
    out = tmp_path / "o.tif"
    code, _, err = call(capsys, *run_args(bad, out, sample["psf"]))
    assert_clean_failure(code, err, "not a readable TIFF", out)


def test_psf_larger_than_image(tmp_path, sample, capsys):
    small = write_image(tmp_path / "small.tif", np.ones((8, 64, 64), np.float32),
                        voxel_size=(0.2, 0.065, 0.065))  # fmt: skip
    out = tmp_path / "o.tif"
    code, _, err = call(capsys, *run_args(small, out, sample["psf"]))
    assert_clean_failure(code, err, "larger than the image", out)


@pytest.mark.parametrize(
    ("values", "needle"), [(0.0, "all zero"), (-1.0, "negative values")], ids=["zero", "negative"]
)
def test_unusable_psf(tmp_path, sample, capsys, values, needle):
    kernel = np.full((5, 9, 9), values, np.float32)
    kernel[2, 4, 4] = 1.0 if values < 0 else 0.0
    bad = tmp_path / "bad_psf.tif"
    tifffile.imwrite(bad, kernel)
    out = tmp_path / "o.tif"
    code, _, err = call(capsys, *run_args(sample["raw"], out, bad))
    assert_clean_failure(code, err, needle, out)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_image(tmp_path, sample, capsys, value):
    data = read_image(sample["raw"]).data.copy()
    data[3, 10, 10] = value
    bad = write_image(tmp_path / "nan.tif", data, voxel_size=(0.2, 0.065, 0.065))
    out = tmp_path / "o.tif"
    code, _, err = call(capsys, *run_args(bad, out, sample["psf"]))
    assert_clean_failure(code, err, "NaN or Inf", out)


def test_2d_psf_on_3d_image(tmp_path, sample, capsys):
    psf2d = save_psf(generate_psf(shape=(17, 17)), tmp_path / "psf2d.tif")
    out = tmp_path / "o.tif"
    code, _, err = call(capsys, *run_args(sample["raw"], out, psf2d))
    assert_clean_failure(code, err, "PSF is 2D", out)


def test_output_equals_input(tmp_path, sample, capsys):
    copy = tmp_path / "in.tif"
    shutil.copy(sample["raw"], copy)
    before = copy.read_bytes()
    code, _, err = call(capsys, *run_args(copy, tmp_path / "." / "in.tif", sample["psf"]))
    assert_clean_failure(code, err, "is the input file")
    assert copy.read_bytes() == before


def test_output_folder_not_writable(tmp_path, sample, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, err = call(capsys, *run_args(sample["raw"], blocker / "o.tif", sample["psf"]))
    assert_clean_failure(code, err, "cannot write to folder")


def test_bad_option_values(tmp_path, sample, capsys):
    out = tmp_path / "o.tif"
    code, _, err = call(capsys, *run_args(sample["raw"], out, sample["psf"], "--background", "x"))
    assert_clean_failure(code, err, "--background", out)
    code, _, err = call(capsys, "psf", "-o", str(out), "--shape", "32,64,64")
    assert_clean_failure(code, err, "odd", out)
    code, _, err = call(capsys, *run_args(sample["raw"], out, sample["psf"], "--model", "nope"))
    assert_clean_failure(code, err, "unknown model 'nope'; available:", out)


def test_run_zarr_in_and_out(tmp_path, sample, capsys):
    raw = read_image(sample["raw"])
    source = write_image(tmp_path / "in.zarr", raw.data, voxel_size=raw.voxel_size)
    out = tmp_path / "out.zarr"
    code, _, _ = call(capsys, *run_args(source, out, sample["psf"]))
    assert code == 0
    tiff_out = tmp_path / "out.tif"
    call(capsys, *run_args(sample["raw"], tiff_out, sample["psf"]))
    result = read_image(out)
    assert result.voxel_size == pytest.approx(raw.voxel_size)
    # a .zarr output streams tiles (here one tile) whose start level is computed in float64
    np.testing.assert_allclose(np.asarray(result.data[...]), read_image(tiff_out).data, rtol=1e-5)


def test_measured_psf_needs_and_takes_a_voxel_size(tmp_path, sample, capsys):
    measured = tmp_path / "measured.tif"
    tifffile.imwrite(measured, read_image(sample["psf"]).data)  # no metadata at all
    out = tmp_path / "o.tif"
    code, _, err = call(capsys, *run_args(sample["raw"], out, measured))
    assert_clean_failure(code, err, "no voxel size", out)
    code, _, _ = call(capsys, *run_args(sample["raw"], out, measured, "--psf-voxel-size",
                                        "0.2,0.065,0.065"))  # fmt: skip
    assert code == 0
    assert read_image(out).extra["deconv.psf"]["generator"] == "measured"


def test_info_prints_the_published_parameter_count(capsys):
    code, out, _ = call(capsys, "info", "rln3d")
    assert code == 0
    assert "15,968 trainable" in out and "halo (tiling)     (17, 17, 17)" in out
    assert "config            ndim=3, width=4, bp_width=8" in out  # what --set can change
    code, out, _ = call(capsys, "models", "rcan3d*")
    assert code == 0
    assert out.splitlines()[0].split()[:3] == ["rcan3d", "3D", "1,002,621"]
