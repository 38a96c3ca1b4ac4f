"""``deconv train``: run directory, determinism, exact resumption (also after kill -9), errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from deconv.errors import DeconvError
from deconv.io import write_image
from deconv.psf import generate_psf, save_psf
from deconv.reporter import Reporter
from deconv.training import RunDirectory, TrainConfig, train
from deconv.training.loop import COSINE_FLOOR

FAST = {"patch": (16, 32, 32), "volume_shape": (32, 64, 64), "pool_size": 2, "batch_size": 2}


@pytest.fixture(scope="module")
def psf_file(tmp_path_factory) -> Path:
    return save_psf(generate_psf(shape=(9, 17, 17)), tmp_path_factory.mktemp("psf") / "psf.tif")


def config(psf_file: Path, **kw) -> TrainConfig:
    base = {"model": "rln3d_tiny", "psf": str(psf_file), "steps": 6, "val_every": 3,
            "checkpoint_every": 2, "validation_count": 1, **FAST}  # fmt: skip
    return TrainConfig(**{**base, **kw})


def weights(run: Path, name: str = "last") -> dict[str, torch.Tensor]:
    return RunDirectory(run).load_checkpoint(name)["model"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def train_as_recorded_before(psf_file: Path, run: Path, field: str, **kw) -> Path:
    """Half a run with ``kw``, its run.json stripped of ``field`` (as written before the
    option existed), then resumed to the end with the option's new default."""
    train(config(psf_file, steps=3, **kw), run)
    meta = json.loads((run / "run.json").read_text())
    del meta["train"][field]
    (run / "run.json").write_text(json.dumps(meta))
    train(config(psf_file, steps=6), run, resume=True)
    return run


def test_run_directory_holds_everything(tmp_path, psf_file):
    result = train(config(psf_file), tmp_path / "run")
    run = tmp_path / "run"
    expected = ["run.json", "data.json", "normalization.json", "psf.json", "psf.tif"]
    expected += ["metrics.jsonl", "curve.png", "checkpoints/last.pt", "checkpoints/best.pt"]
    for name in expected:
        assert (run / name).exists(), name
    records = RunDirectory(run).metrics()
    assert [r["step"] for r in records] == [3, 6]
    assert all(np.isfinite(r["psnr"]) and 0 < r["ssim"] <= 1 for r in records)
    assert result["best_psnr"] == max(r["psnr"] for r in records)
    meta = json.loads((run / "run.json").read_text())
    assert meta["card"]["parameters"] == 555 and meta["resolved"]["patch"] == [16, 32, 32]
    assert json.loads((run / "data.json").read_text())["kind"] == "synthetic"
    assert json.loads((run / "psf.json").read_text())["shape"] == [9, 17, 17]


def test_same_seed_same_weights(tmp_path, psf_file):
    train(config(psf_file, steps=4), tmp_path / "a")
    train(config(psf_file, steps=4), tmp_path / "b")
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    train(config(psf_file, steps=4, seed=1), tmp_path / "c")
    assert any(
        not torch.equal(v, weights(tmp_path / "c")[k]) for k, v in weights(tmp_path / "a").items()
    )


def test_channels_last_3d_training_matches_the_default_layout(tmp_path, psf_file, monkeypatch):
    import deconv.training.loop as loop

    cpu = torch.device("cpu")
    assert loop.training_memory_format(cpu, 3) == torch.channels_last_3d
    assert loop.training_memory_format(cpu, 2) == torch.contiguous_format
    train(config(psf_file, steps=4, model_overrides={"width": 2, "bp_width": 3}), tmp_path / "cl")
    monkeypatch.setattr(loop, "training_memory_format", lambda *_: torch.contiguous_format)
    train(config(psf_file, steps=4, model_overrides={"width": 2, "bp_width": 3}), tmp_path / "nc")
    fast, plain = weights(tmp_path / "cl"), weights(tmp_path / "nc")
    assert fast["fp1_a2.conv.weight"].is_contiguous(memory_format=torch.channels_last_3d)
    assert not fast["fp1_a2.conv.weight"].is_contiguous()
    for key in plain:
        torch.testing.assert_close(fast[key], plain[key], rtol=1e-3, atol=2e-4, msg=key)


def test_bfloat16_steps_follow_the_float32_trajectory(tmp_path, psf_file):
    """--precision bfloat16 really computes in bfloat16, and stays near float32's path."""
    from deconv.training.loop import autocast_dtype
    from deconv.zoo.registry import get_model_spec

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) == torch.float32
    assert autocast_dtype("auto", cuda) == torch.float16
    assert autocast_dtype("bfloat16", cpu) == autocast_dtype("bfloat16", cuda) == torch.bfloat16
    overrides = {"model_overrides": {"width": 2, "bp_width": 3}, "steps": 4}
    train(config(psf_file, **overrides), tmp_path / "f32")
    train(config(psf_file, precision="bfloat16", **overrides), tmp_path / "bf16")
    torch.manual_seed(0)  # the runs' seed: their common starting point
    start = get_model_spec("rln3d_tiny").build(width=2, bp_width=3).state_dict()
    f32, bf16 = weights(tmp_path / "f32"), weights(tmp_path / "bf16")
    convs = [k for k in f32 if k.endswith("conv.weight")]
    moved = sum((f32[k] - start[k]).abs().sum() for k in convs)
    apart = sum((f32[k] - bf16[k]).abs().sum() for k in convs)
    assert moved > 0 and 0 < apart / moved < 0.2  # measured: 0.03
    stored = json.loads((tmp_path / "bf16" / "run.json").read_text())["train"]
    assert stored["precision"] == "bfloat16"  # --resume continues in it


def test_resume_continues_exactly(tmp_path, psf_file):
    train(config(psf_file, steps=6), tmp_path / "straight")
    train(config(psf_file, steps=3), tmp_path / "split")
    train(config(psf_file, steps=6), tmp_path / "split", resume=True)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "split"))
    steps = [r["step"] for r in RunDirectory(tmp_path / "split").metrics()]
    assert steps == [3, 6]


def test_time_limit_stops_resumably_and_resuming_matches_uninterrupted(tmp_path, psf_file, capsys):
    from deconv.cli import main

    train(config(psf_file, ema_decay=0.9), tmp_path / "straight")
    split = tmp_path / "split"
    first = train(config(psf_file, ema_decay=0.9), split, time_limit=0)
    assert (first["stopped"], first["step"], first["steps"]) == (True, 1, 6)
    assert RunDirectory(split).load_checkpoint("last")["step"] == 1  # off the checkpoint grid
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "rln3d_tiny", "--resume", str(split), "--time-limit", "0", "--quiet"])
    assert exit_info.value.code in (0, None)
    out = capsys.readouterr().out
    assert f"stopped at step 2 of 6 (--time-limit); continue with: deconv train rln3d_tiny " \
        f"--resume {split}" in out  # fmt: skip
    assert train(config(psf_file), split, resume=True, time_limit=3600)["step"] == 6
    assert_same_weights(weights(tmp_path / "straight"), weights(split))
    ema = {k: v for k, v in RunDirectory(split).load_checkpoint("last")["ema"].items()}
    assert_same_weights(RunDirectory(tmp_path / "straight").load_checkpoint("last")["ema"], ema)
    assert [r["step"] for r in RunDirectory(split).metrics()] == [3, 6]


def test_a_resumed_run_keeps_counting_its_training_time(tmp_path, psf_file):
    run = RunDirectory(tmp_path / "run")
    train(config(psf_file, steps=3), run.path)
    state = run.load_checkpoint("last")
    assert 0 < state["seconds"] < 600
    state["seconds"] = 1000.0  # as if the first leg had trained for 1000 s
    run.save_checkpoint("last", state)
    train(config(psf_file, steps=6), run.path, resume=True)
    first, second = run.metrics()
    assert first["seconds"] < 600 and 1000 < second["seconds"] < 1600
    # a checkpoint from before "seconds" was stored: the last validation's time goes on
    state = run.load_checkpoint("last")
    del state["seconds"]
    run.save_checkpoint("last", state)
    train(config(psf_file, steps=9), run.path, resume=True)
    assert second["seconds"] < run.metrics()[-1]["seconds"] < second["seconds"] + 600


@pytest.mark.slow
def test_kill_9_then_resume_matches_uninterrupted(tmp_path, psf_file):
    args = ["train", "rln3d_tiny", "--psf", str(psf_file), "--steps", "200", "--patch", "16,32,32",
            "--volume-shape", "32,64,64", "--batch-size", "2", "--val-every", "100",
            "--checkpoint-every", "2", "--quiet"]  # fmt: skip
    cli = [sys.executable, "-c", "from deconv.cli import main; main()"]
    subprocess.run([*cli, *args, "-o", str(tmp_path / "straight")], check=True, timeout=300)
    victim = subprocess.Popen([*cli, *args, "-o", str(tmp_path / "killed")])
    last = tmp_path / "killed" / "checkpoints" / "last.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not (
        last.exists() and RunDirectory(tmp_path / "killed").load_checkpoint()["step"] >= 6
    ):
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    stopped_at = RunDirectory(tmp_path / "killed").load_checkpoint()["step"]
    assert 6 <= stopped_at < 200
    subprocess.run([*cli, *args[:2], "--resume", str(tmp_path / "killed"), "--steps", "200",
                    "--quiet"], check=True, timeout=300)  # fmt: skip
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "killed"))
    assert not list((tmp_path / "killed").rglob(".*partial*"))  # nothing half-written left


def test_resume_with_another_model_is_refused(tmp_path, psf_file):
    train(config(psf_file, steps=2), tmp_path / "run")
    with pytest.raises(DeconvError, match="trained 'rln3d_tiny'; it cannot be resumed as 'rcan3d'"):
        train(config(psf_file, model="rcan3d"), tmp_path / "run", resume=True)


def test_corrupt_checkpoint(tmp_path, psf_file):
    train(config(psf_file, steps=2), tmp_path / "run")
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DeconvError, match=r"last\.pt is corrupt"):
        train(config(psf_file), tmp_path / "run", resume=True)


def test_existing_run_is_not_overwritten(tmp_path, psf_file):
    train(config(psf_file, steps=2), tmp_path / "run")
    with pytest.raises(DeconvError, match="already holds a run; continue it with --resume"):
        train(config(psf_file, steps=2), tmp_path / "run")


def test_psf_dimensionality_must_match_the_model(tmp_path):
    psf2d = save_psf(generate_psf(shape=(17, 17)), tmp_path / "psf2d.tif")
    with pytest.raises(DeconvError, match=r"'rln3d_tiny' is 3D but the PSF .* is 2D"):
        train(TrainConfig(model="rln3d_tiny", psf=str(psf2d), steps=1), tmp_path / "run")


def test_untrainable_and_unknown_models(tmp_path, psf_file):
    with pytest.raises(DeconvError, match="no trainable weights"):
        train(TrainConfig(model="rl", psf=str(psf_file)), tmp_path / "a")
    with pytest.raises(DeconvError, match="unknown model 'rln5d'"):
        train(TrainConfig(model="rln5d", psf=str(psf_file)), tmp_path / "b")


def _pairs(folder: Path, names: list[str], gt_names: list[str] | None = None) -> Path:
    rng = np.random.default_rng(0)
    for sub, items in (("raw", names), ("gt", gt_names if gt_names is not None else names)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        for name in items:
            write_image(folder / sub / name, rng.random((24, 40, 40)).astype(np.float32))
    return folder


def test_paired_data_trains_and_is_described(tmp_path):
    data = _pairs(tmp_path / "pairs", [f"cell_{i}.tif" for i in range(3)])
    train(TrainConfig(model="rcan3d_tiny", data=str(data), steps=2, val_every=2,
                      patch=(8, 16, 16), batch_size=2), tmp_path / "run")  # fmt: skip
    described = json.loads((tmp_path / "run" / "data.json").read_text())
    assert described["train_files"] == ["cell_0.tif", "cell_1.tif"]
    assert described["validation_files"] == ["cell_2.tif"]


def test_unpaired_and_empty_data_folders(tmp_path):
    data = _pairs(tmp_path / "pairs", ["a.tif", "b.tif"], ["a.tif", "c.tif"])
    with pytest.raises(DeconvError, match=r"2 files without a partner: b.tif, c.tif"):
        train(TrainConfig(model="rcan3d_tiny", data=str(data)), tmp_path / "run")
    (tmp_path / "empty" / "raw").mkdir(parents=True)
    (tmp_path / "empty" / "gt").mkdir()
    with pytest.raises(DeconvError, match="hold no TIFF files"):
        train(TrainConfig(model="rcan3d_tiny", data=str(tmp_path / "empty")), tmp_path / "r2")
    with pytest.raises(DeconvError, match="expected sub-folders raw/ and gt/"):
        train(TrainConfig(model="rcan3d_tiny", data=str(tmp_path)), tmp_path / "r3")


def test_data_dimensionality_must_match_the_model(tmp_path):
    (tmp_path / "p" / "raw").mkdir(parents=True)
    (tmp_path / "p" / "gt").mkdir()
    for sub in ("raw", "gt"):
        tifffile.imwrite(tmp_path / "p" / sub / "x.tif", np.ones((32, 32), np.float32))
    with pytest.raises(DeconvError, match="is 3D but the data are 2D"):
        train(TrainConfig(model="rcan3d_tiny", data=str(tmp_path / "p")), tmp_path / "run")


def test_a_moved_run_resumes_with_its_own_psf_copy(tmp_path, psf_file):
    local_psf = tmp_path / "psf.tif"
    local_psf.write_bytes(psf_file.read_bytes())
    train(config(local_psf, steps=2), tmp_path / "run")
    local_psf.unlink()  # the original PSF is gone, as on another machine
    (tmp_path / "run").rename(tmp_path / "moved")
    result = train(config(local_psf, steps=4), tmp_path / "moved", resume=True)
    assert result["step"] == 4


def test_init_weights_fine_tunes_from_a_run(tmp_path, psf_file):
    train(config(psf_file, steps=4), tmp_path / "base")
    base = weights(tmp_path / "base", "best")
    # one step at a tiny learning rate: the start was the base run's weights, not random ones
    train(config(psf_file, steps=1, val_every=1, learning_rate=1e-9,
                 init_weights=str(tmp_path / "base")), tmp_path / "tuned")  # fmt: skip
    tuned = weights(tmp_path / "tuned")
    for key, value in base.items():
        if value.is_floating_point() and "running" not in key:
            torch.testing.assert_close(tuned[key], value, rtol=1e-5, atol=1e-6, msg=key)
    fresh = weights(tmp_path / "base", "last")
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["train"]["init_weights"]
    assert fresh.keys() == tuned.keys()


@pytest.mark.parametrize(
    ("source", "message"),
    [("nowhere", "neither a pretrained name"), ("rln2d.widefield-synthetic", "does not fit")],
)
def test_init_weights_errors(tmp_path, psf_file, source, message):
    with pytest.raises(DeconvError, match=message):
        train(config(psf_file, init_weights=source), tmp_path / "run")


def test_intensity_scale_scales_raw_and_truth_alike_and_keeps_the_crops():
    from deconv.training.data import PatchSource

    rng = np.random.default_rng(3)
    pairs = [(rng.random((20, 24, 24), np.float32) + 0.1,
              rng.random((20, 24, 24), np.float32) + 0.1) for _ in range(3)]  # fmt: skip
    plain = PatchSource(pairs, (8, 8, 8)).batch(step=5, size=6, seed=1)
    scaled = PatchSource(pairs, (8, 8, 8), intensity_scale=(0.25, 4.0)).batch(5, 6, 1)
    raw_factor = (scaled[0] / plain[0]).flatten(1)
    gt_factor = (scaled[1] / plain[1]).flatten(1)
    # one factor per sample (same crop, same flips), shared by raw and truth, inside the range
    torch.testing.assert_close(raw_factor, raw_factor[:, :1].expand_as(raw_factor))
    torch.testing.assert_close(gt_factor, raw_factor)
    factors = raw_factor[:, 0]
    assert factors.min() >= 0.25 and factors.max() <= 4.0
    assert factors.max() / factors.min() > 1.5  # it varies between samples


def test_intensity_scale_range_is_checked(tmp_path, psf_file, capsys):
    from deconv.cli import main

    with pytest.raises(ValueError, match="0 < LO <= HI"):
        config(psf_file, intensity_scale=(2.0, 1.0))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "rln3d_tiny", "-o", str(tmp_path / "r"), "--psf", str(psf_file),
              "--intensity-scale", "0.5"])  # fmt: skip
    assert exit_info.value.code != 0
    assert "--intensity-scale: expected 2 values" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_ema_weights_are_validated_shipped_and_resumed_exactly(tmp_path, psf_file):
    from deconv.exporters.sources import resolve_source

    train(config(psf_file, ema_decay=0.9), tmp_path / "full")
    state = RunDirectory(tmp_path / "full").load_checkpoint("last")
    assert state["ema_averaged"] == 6
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    # what a run directory ships is the average, not the last raw weights
    source = resolve_source(str(tmp_path / "full"))
    best = RunDirectory(tmp_path / "full").load_checkpoint("best")
    assert_same_weights(source.model.state_dict(), best["ema"])
    # an interrupted EMA run resumes to the same average
    train(config(psf_file, ema_decay=0.9, steps=4), tmp_path / "half")
    train(config(psf_file, ema_decay=0.9, steps=6), tmp_path / "half", resume=True)
    resumed = RunDirectory(tmp_path / "half").load_checkpoint("last")
    assert_same_weights(resumed["ema"], state["ema"])


def test_cosine_schedule_decays_to_its_floor_and_resumes_exactly(tmp_path, psf_file):
    train(config(psf_file, lr_schedule="cosine", learning_rate=0.01, steps=6), tmp_path / "full")
    rates = [r["learning_rate"] for r in RunDirectory(tmp_path / "full").metrics()]
    # half a cosine: at step 3 of 6 the rate is halfway to the floor, at step 6 on it
    assert rates[0] == pytest.approx(0.01 * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5))
    assert rates[1] == pytest.approx(0.01 * COSINE_FLOOR)

    # a run stopped after step 4 (here: by its progress bar) resumes onto the same curve
    class Stop(Exception):
        pass

    class StoppingBar:
        done = 0

        def __call__(self, n: int = 1) -> None:
            self.done += n
            if self.done == 4:
                raise Stop

        def status(self, text: str) -> None:
            pass

    class StopAfter4(Reporter):
        @contextmanager
        def progress(self, total, description):
            yield StoppingBar()

    cosine = config(psf_file, lr_schedule="cosine", learning_rate=0.01, steps=6)
    with pytest.raises(Stop):
        train(cosine, tmp_path / "half", reporter=StopAfter4(quiet=True))
    assert RunDirectory(tmp_path / "half").load_checkpoint()["step"] == 2  # checkpoint_every=2
    train(cosine, tmp_path / "half", resume=True)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "half"))


def test_resuming_a_cosine_run_with_more_steps_stretches_the_cosine(tmp_path, psf_file):
    """What `deconv train --resume RUN --steps N` documents: the rate climbs back up."""
    cosine = config(psf_file, lr_schedule="cosine", learning_rate=0.01, steps=6)
    train(cosine, tmp_path / "run")
    train(cosine.model_copy(update={"steps": 12}), tmp_path / "run", resume=True)
    records = RunDirectory(tmp_path / "run").metrics()
    assert [r["step"] for r in records] == [3, 6, 9, 12]
    # steps 9 and 12 of 12 follow the cosine over the new total; step 6 was at the floor
    expected = 0.01 * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * 9 / 12)))
    assert records[1]["learning_rate"] == pytest.approx(0.01 * COSINE_FLOOR)
    assert records[2]["learning_rate"] == pytest.approx(expected)
    assert records[3]["learning_rate"] == pytest.approx(0.01 * COSINE_FLOOR)


@pytest.mark.parametrize(
    ("option", "value", "field", "choice"),
    [("--lr-schedule", "linear", "lr_schedule", "cosine"),
     ("--precision", "float16", "precision", "bfloat16")],
)  # fmt: skip
def test_unknown_choice_is_one_clear_error(
    tmp_path, psf_file, capsys, option, value, field, choice
):
    from deconv.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "rln3d_tiny", "-o", str(tmp_path / "r"), "--psf", str(psf_file),
              option, value])  # fmt: skip
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert field in err and choice in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_set_overrides_the_model_config_and_is_resumed(tmp_path, psf_file, capsys):
    from deconv.cli import main

    run = tmp_path / "wide"
    args = ["train", "rln3d_tiny", "-o", str(run), "--psf", str(psf_file), "--steps", "2",
            "--patch", "16,32,32", "--volume-shape", "32,64,64", "--batch-size", "2",
            "--val-every", "2", "--set", "bp_width=3", "--quiet"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    stored = json.loads((run / "run.json").read_text())
    assert stored["model_config"]["bp_width"] == 3
    assert weights(run)["bp1_b2.conv.weight"].shape[:2] == (3, 3)
    # resuming rebuilds the same wider network from run.json (no --set needed)
    train(TrainConfig(model="rln3d_tiny", steps=3), run, resume=True)
    assert weights(run)["bp1_b2.conv.weight"].shape[:2] == (3, 3)


@pytest.mark.parametrize(
    ("item", "message"),
    [("depth=3", "invalid config for rln: depth"), ("width", "--set: expected KEY=VALUE"),
     ("width=wide", "invalid config for rln: width")],
)  # fmt: skip
def test_bad_set_is_one_clear_error(tmp_path, psf_file, capsys, item, message):
    from deconv.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "rln3d_tiny", "-o", str(tmp_path / "r"), "--psf", str(psf_file),
              "--set", item])  # fmt: skip
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_refresh_every_replaces_pool_volumes_on_schedule():
    from deconv.normalization import normalize
    from deconv.synth import pair_seed, simulate_pair
    from deconv.training.data import SyntheticPool
    from deconv.zoo.card import Normalization

    psf = generate_psf(shape=(9, 17, 17)).data[4]
    norm = Normalization(kind="percentile", low=0.01, high=99.8)
    pool = SyntheticPool(psf, (48, 48), (16, 16), norm, seed=4, pool_size=3, refresh_every=2)
    first = [raw.copy() for raw, _ in pool.pairs]
    pool.at_step(5)  # two refreshes (steps 2 and 4): generations 1 and 2 land in slots 1 and 2
    assert np.array_equal(pool.pairs[0][0], first[0])
    for slot, generation in ((1, 1), (2, 2)):
        raw, _ = simulate_pair((48, 48), psf, pair_seed(4, 3 + generation), pool.synth)
        assert not np.array_equal(pool.pairs[slot][0], first[slot])
        np.testing.assert_array_equal(pool.pairs[slot][0], normalize(raw, norm))


def test_refresh_every_is_recorded_and_resumed_exactly(tmp_path, psf_file):
    train(config(psf_file, steps=6, refresh_every=1), tmp_path / "straight")
    train(config(psf_file, steps=3, refresh_every=1), tmp_path / "split")
    train(config(psf_file, steps=6), tmp_path / "split", resume=True)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "split"))
    other = tmp_path / "default"
    train(config(psf_file, steps=6), other)  # refresh every 50: another data stream
    assert any(not torch.equal(a, b) for a, b in zip(
        weights(tmp_path / "straight").values(), weights(other).values()))  # fmt: skip
    data = json.loads((tmp_path / "split" / "data.json").read_text())
    assert data["refresh_every"] == 1


def test_photon_scale_range_varies_the_noise_not_the_phantom():
    from deconv.normalization import normalize
    from deconv.synth import SynthConfig, pair_seed, simulate_pair
    from deconv.training.data import SyntheticPool
    from deconv.zoo.card import Normalization

    psf = generate_psf(shape=(9, 17, 17)).data[4]
    norm = Normalization(kind="percentile", low=0.01, high=99.8)
    pool = SyntheticPool(psf, (64, 64), (16, 16), norm, seed=2, pool_size=6,
                         photon_scale=(1.0, 40.0))  # fmt: skip
    levels = [pool.photon_level(i) for i in range(6)]
    assert min(levels) >= 1.0 and max(levels) <= 40.0 and max(levels) / min(levels) > 3
    for index, (raw, gt) in enumerate(pool.pairs):
        noisy, _ = simulate_pair((64, 64), psf, pair_seed(2, index),
                                     SynthConfig(photon_scale=levels[index]))  # fmt: skip
        np.testing.assert_array_equal(raw, normalize(noisy, norm))
        _, plain_truth = simulate_pair((64, 64), psf, pair_seed(2, index))
        np.testing.assert_array_equal(gt, normalize(plain_truth, norm))  # same phantom
    fixed = SyntheticPool(psf, (64, 64), (16, 16), norm, seed=2, pool_size=2)
    assert [fixed.photon_level(i) for i in range(2)] == [SynthConfig().photon_scale] * 2


def test_photon_scale_range_is_checked(tmp_path, psf_file, capsys):
    from deconv.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["train", "rln3d_tiny", "--psf", str(psf_file), "-o", str(tmp_path / "r"),
              "--photon-scale", "10,2"])  # fmt: skip
    assert stop.value.code != 0
    err = capsys.readouterr().err
    assert "photon_scale needs 0 < LO <= HI" in err and "Traceback" not in err


def test_validation_draws_the_training_classes_unless_told(psf_file):
    """A benchmark's held-out class (shells) must not choose the best checkpoint."""
    from deconv.synth import SynthConfig, pair_seed, simulate_pair
    from deconv.training.data import VALIDATION_SEED_OFFSET
    from deconv.training.loop import _data, _resolved
    from deconv.zoo import get_model_card, get_model_spec

    card = get_model_card("rln3d_tiny")
    settings = _resolved(config(psf_file), get_model_spec("rln3d_tiny").training, 3)
    psf = np.asarray(tifffile.imread(psf_file), np.float32)
    for asked, drawn in [(None, ("dots", "lines")), (("boxes",), ("boxes",))]:
        cfg = config(psf_file, train_structures=("dots", "lines"), validation_structures=asked)
        _, validation, description, _ = _data(cfg, card, settings, 3)
        seed = pair_seed(cfg.seed + VALIDATION_SEED_OFFSET, 0)
        _, gt = simulate_pair(settings["volume_shape"], psf, seed, SynthConfig(structures=drawn))
        np.testing.assert_array_equal(validation[0][1], gt)
        assert description.validation_structures == drawn


def test_patches_flip_only_along_the_allowed_axes_and_keep_their_crops():
    from deconv.training.data import PatchSource

    z, y, x = np.meshgrid(np.arange(20), np.arange(24), np.arange(24), indexing="ij")
    ramp = (1 + z + 100 * y + 10_000 * x).astype(np.float32)  # every flip is visible
    source_all = PatchSource([(ramp, ramp)], (8, 8, 8))
    source_lateral = PatchSource([(ramp, ramp)], (8, 8, 8), flip_axes=(1, 2))
    flipped_all, flipped_lateral = set(), set()
    for step in range(20):
        a = source_all.batch(step, 4, seed=0)[0][:, 0].numpy()
        b = source_lateral.batch(step, 4, seed=0)[0][:, 0].numpy()
        for pa, pb in zip(a, b):
            for axis, name in enumerate("zyx"):
                slope_a = np.diff(pa, axis=axis).mean()
                slope_b = np.diff(pb, axis=axis).mean()
                flipped_all |= {name} if slope_a < 0 else set()
                flipped_lateral |= {name} if slope_b < 0 else set()
                if axis:  # the same crop and lateral flips either way: the coins are shared
                    assert np.sign(slope_a) == np.sign(slope_b)
            np.testing.assert_array_equal(np.sort(pa, None), np.sort(pb, None))
    assert flipped_all == {"z", "y", "x"}
    assert flipped_lateral == {"y", "x"}


def test_flips_follow_the_psf_symmetry_and_old_runs_resume_with_all_flips(tmp_path, psf_file):
    from deconv.training.loop import _flip_axes

    psf = tifffile.imread(psf_file)
    assert _flip_axes("symmetric", 3, psf) == (1, 2)  # widefield: not symmetric along z
    assert _flip_axes("symmetric", 3, None) == (1, 2)  # paired data: lateral axes
    assert _flip_axes("symmetric", 2, None) == (0, 1)
    assert _flip_axes("all", 3, psf) == (0, 1, 2)
    train(config(psf_file), tmp_path / "symmetric")
    assert json.loads((tmp_path / "symmetric" / "data.json").read_text())["flip_axes"] == [1, 2]
    train(config(psf_file, flips="all"), tmp_path / "all")
    assert json.loads((tmp_path / "all" / "data.json").read_text())["flip_axes"] == [0, 1, 2]
    # the flips change what is learned
    assert any(not torch.equal(v, weights(tmp_path / "all")[k])
               for k, v in weights(tmp_path / "symmetric").items())  # fmt: skip
    # a run recorded before the option existed flipped every axis, and resumes doing so
    old = train_as_recorded_before(psf_file, tmp_path / "old", "flips", flips="all")
    assert_same_weights(weights(tmp_path / "all"), weights(old))


@pytest.mark.parametrize(
    "option, value, choice", [("--flips", "sideways", "symmetric"), ("--noise", "loud", "fresh")]
)
def test_unknown_augmentation_choice_is_one_clear_error(tmp_path, psf_file, capsys, option,
                                                         value, choice):  # fmt: skip
    from deconv.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "rln3d_tiny", "-o", str(tmp_path / "r"), "--psf", str(psf_file),
              option, value])  # fmt: skip
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert option[2:] in err and choice in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_fresh_noise_redraws_every_patch_from_the_same_phantom(psf_file):
    from deconv.normalization import percentile_range
    from deconv.synth import add_noise, expected_counts, make_ground_truth, pair_seed
    from deconv.training.data import SyntheticPool
    from deconv.zoo import get_model_card

    psf = tifffile.imread(psf_file)
    norm = get_model_card("rln3d_tiny").normalization
    shape = (16, 32, 32)  # patch = volume: every patch is the whole volume, unflipped
    kw = dict(psf=psf, volume_shape=shape, patch=shape, normalization=norm, seed=3,
              pool_size=1, flip_axes=())  # fmt: skip
    fixed, fresh = SyntheticPool(**kw), SyntheticPool(**kw, fresh_noise=True)
    np.testing.assert_array_equal(fixed.pairs[0][0], fresh.pairs[0][0])  # same first draw
    # the noise-free image, computed independently of the pool
    rng = np.random.default_rng(pair_seed(3, 0))
    expected = expected_counts(make_ground_truth(shape, rng), psf)
    lo, hi = percentile_range(add_noise(expected, rng), norm)
    steps = range(40)  # within the first volume's life
    a = np.stack([fixed.batch(s, 1, seed=0)[0][0, 0].numpy() for s in steps])
    b = np.stack([fresh.batch(s, 1, seed=0)[0][0, 0].numpy() for s in steps])
    assert all(np.array_equal(a[0], p) for p in a)  # one realization, again and again
    counts = b.astype(np.float64) * (hi - lo) + lo
    assert np.abs(counts.mean(0) - expected).mean() < 0.3 * np.sqrt(expected).mean()
    assert counts.var(0).mean() == pytest.approx(expected.mean() + 0.5**2, rel=0.1)
    for s in (0, 7):  # truths are untouched
        np.testing.assert_array_equal(fixed.batch(s, 1, 0)[1], fresh.batch(s, 1, 0)[1])


def test_noise_choice_is_recorded_and_old_runs_resume_with_fixed_noise(tmp_path, psf_file):
    train(config(psf_file, noise="fresh"), tmp_path / "fresh")
    assert json.loads((tmp_path / "fresh" / "data.json").read_text())["noise"] == "fresh"
    train(config(psf_file, noise="fixed"), tmp_path / "fixed")
    assert any(not torch.equal(v, weights(tmp_path / "fixed")[k])
               for k, v in weights(tmp_path / "fresh").items())  # fmt: skip
    old = train_as_recorded_before(psf_file, tmp_path / "old", "noise", noise="fixed")
    assert_same_weights(weights(tmp_path / "fixed"), weights(old))


def test_percentiles_normalise_training_and_are_recorded_for_inference(tmp_path, psf_file):
    from deconv.exporters.sources import resolve_source
    from deconv.normalization import normalize
    from deconv.synth import SynthConfig, pair_seed, simulate_pair
    from deconv.training.data import SyntheticPool
    from deconv.zoo import get_model_card

    run = tmp_path / "p"
    train(config(psf_file, percentiles=(0.5, 99.99), steps=2, noise="fixed"), run)
    recorded = json.loads((run / "normalization.json").read_text())
    assert (recorded["low"], recorded["high"]) == (0.5, 99.99)
    assert json.loads((run / "run.json").read_text())["card"]["normalization"] == recorded
    source = resolve_source(str(run))
    assert (source.normalization.low, source.normalization.high) == (0.5, 99.99)
    # the pool's first volume is the generator's sample under those percentiles, not 99.8
    psf = tifffile.imread(psf_file)
    pool = SyntheticPool(psf, FAST["volume_shape"], FAST["patch"], source.normalization,
                         seed=0, pool_size=1)  # fmt: skip
    raw, _ = simulate_pair(FAST["volume_shape"], psf, pair_seed(0, 0), SynthConfig())
    np.testing.assert_array_equal(pool.pairs[0][0], normalize(raw, source.normalization))
    default = get_model_card("rln3d_tiny").normalization
    assert not np.array_equal(pool.pairs[0][0], normalize(raw, default))


@pytest.mark.parametrize(
    "model, value, message",
    [
        ("rln3d_tiny", "99.99,50", "percentiles needs 0 <= LOW < HIGH <= 100"),
        ("rln3d_tiny", "1,101", "percentiles needs 0 <= LOW < HIGH <= 100"),
        ("mrbcr2d_tiny", "1,99", "normalises by min_max, not by percentiles"),
    ],
)
def test_bad_percentiles_are_one_clear_error(tmp_path, psf_file, capsys, model, value, message):
    from deconv.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["train", model, "--psf", str(psf_file), "-o", str(tmp_path / "r"),
              "--percentiles", value])  # fmt: skip
    assert stop.value.code != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
