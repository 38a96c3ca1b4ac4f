"""Shipped weights: integrity, provenance, and restoring held-out data through `deconv run`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from deconv.cli import main
from deconv.errors import DeconvError
from deconv.io import read_image, write_image
from deconv.metrics import evaluate
from deconv.psf import generate_psf
from deconv.synth import SynthConfig, simulate_pair
from deconv.zoo import create_model, get_model_card, list_models
from deconv.zoo import pretrained as pretrained_module
from deconv.zoo.pretrained import load_pretrained, pretrained_record

SHIPPED = ["rln2d.widefield-synthetic", "rln3d.widefield-synthetic"]
EQUIVARIANT = ["rln2d.widefield-synthetic-equivariant", "rln3d.widefield-synthetic-equivariant"]
WIDEFIELD = {"na": 1.4, "wavelength_emission": 0.52, "ni": 1.515, "ns": 1.33}


def call(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return int(exit_info.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize("name", SHIPPED + EQUIVARIANT)
def test_shipped_weights_load_with_their_provenance(name):
    assert name in list_models(pretrained=True)
    model, record = load_pretrained(name)
    assert not model.training
    assert record.base_model == name.split(".")[0]
    for key, value in WIDEFIELD.items():
        assert getattr(record.psf, key) == pytest.approx(value)
    assert record.psf.voxel_size[-1] == pytest.approx(0.065)
    assert record.command.startswith("deconv psf") and "deconv train" in record.command
    # the card counts the shipped network's own weights (its config may widen the base's)
    assert get_model_card(name).parameters == sum(p.numel() for p in model.parameters())
    assert get_model_card("rln2d.widefield-synthetic").parameters == 317_000  # width 32, bp 64


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    for path in pretrained_module.WEIGHTS_DIR.glob("*.*"):
        shutil.copy(path, tmp_path / path.name)
    weights = tmp_path / f"{SHIPPED[0]}.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(pretrained_module, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(DeconvError, match="does not match its recorded sha256"):
        load_pretrained(SHIPPED[0])


def test_unknown_tag_lists_what_exists():
    with pytest.raises(DeconvError, match=r"no pretrained weights 'rln2d.confocal'; available: "):
        pretrained_record("rln2d.confocal")
    with pytest.raises(DeconvError, match="cannot be overridden"):
        create_model(SHIPPED[0], width=2)


def test_rln2d_restores_an_unseen_structure_class(tmp_path, capsys):
    """Rings were never in training; the network must still sharpen them substantially."""
    psf = generate_psf(shape=(65, 65)).data
    raw, gt = simulate_pair(
        (256, 256), psf, seed=424_242, config=SynthConfig(structures=("shells",))
    )
    source = write_image(tmp_path / "rings.tif", raw, voxel_size=(0.065, 0.065))
    out = tmp_path / "restored.tif"
    code, err = call(capsys, "run", str(source), "-o", str(out), "--model", SHIPPED[0])
    assert code == 0, err
    restored = read_image(out)
    assert restored.voxel_size == pytest.approx((0.065, 0.065))
    assert restored.extra["deconv.model"]["name"] == SHIPPED[0]
    before, after = evaluate(raw, gt), evaluate(restored.data, gt)
    assert after["psnr"] > before["psnr"] + 4.0
    assert after["ssim"] > before["ssim"] + 0.3
    # mapped back to the input's intensity range, not left in normalised units
    assert np.percentile(restored.data, 99.8) > 0.5 * np.percentile(raw, 99.8)


def test_network_without_weights_and_wrong_dimensionality(tmp_path, capsys):
    image = write_image(tmp_path / "v.tif", np.random.rand(8, 32, 32).astype(np.float32))
    code, err = call(capsys, "run", str(image), "-o", str(tmp_path / "o.tif"), "--model", "rln2d")
    assert code == 2 and "has no trained weights" in err and "rln2d.widefield-synthetic" in err
    code, err = call(
        capsys, "run", str(image), "-o", str(tmp_path / "o.tif"), "--model", SHIPPED[0]
    )
    assert code == 2 and "is a 2D model" in err and "--stack" in err
    out = str(tmp_path / "o.tif")
    code, err = call(capsys, "run", str(image), "-o", out, "--model", SHIPPED[0], "--stack")
    assert code == 0 and read_image(tmp_path / "o.tif").data.shape == (8, 32, 32)
    code, err = call(capsys, "run", str(image), "-o", str(tmp_path / "p.tif"), "--model", "rl")
    assert code == 2 and "needs a PSF" in err


@pytest.mark.parametrize("name", ["rln3d.widefield-synthetic", EQUIVARIANT[1]])
def test_rln3d_restores_an_unseen_structure_class(name):
    """Shells were never in training; on a held-out volume the network must sharpen them."""
    from deconv.normalization import normalize
    from deconv.runtime.predict import predict

    psf = generate_psf().data
    config = SynthConfig(structures=("shells",))
    raw, gt = simulate_pair((40, 96, 96), psf, seed=515_151, config=config)
    model, record = load_pretrained(name)
    card = get_model_card(name)
    x = normalize(raw, record.normalization)
    restored = predict(model, card, x)
    before, after = evaluate(raw, gt), evaluate(restored, gt)
    assert after["psnr"] > before["psnr"] + 4.0
    assert after["ssim"] > before["ssim"] + 0.4
    if name in EQUIVARIANT:  # the shipped weights keep the graph's exact flip equivariance
        mirrored = predict(model, card, np.ascontiguousarray(x[:, ::-1, ::-1]))[:, ::-1, ::-1]
        np.testing.assert_allclose(mirrored, restored, atol=1e-5 * float(np.abs(restored).max()))


def test_committed_training_runs_still_read_as_runs():
    """The runs behind the shipped weights must stay resumable as the training options evolve."""
    import json
    from pathlib import Path

    from deconv.training import TrainConfig
    from deconv.training.data import DataDescription

    runs = sorted((Path(pretrained_module.__file__).parent / "weights" / "runs").glob("*/run.json"))
    assert len(runs) >= 2
    for run in runs:
        TrainConfig.model_validate(json.loads(run.read_text())["train"])
        DataDescription.model_validate_json((run.parent / "data.json").read_text())


def test_export_writes_the_runs_weights_in_the_default_layout(tmp_path, monkeypatch):
    """3D runs train channels-last on CPUs; the shipped file must not depend on that."""
    import torch

    from deconv.psf import save_psf
    from deconv.training import RunDirectory, TrainConfig, train
    from deconv.training.run_dir import inference_state
    from deconv.zoo.pretrained import export_pretrained

    psf = save_psf(generate_psf(shape=(9, 17, 17)), tmp_path / "psf.tif")
    run = tmp_path / "run"
    train(TrainConfig(model="rln3d_tiny", psf=str(psf), steps=2, val_every=2, patch=(16, 32, 32),
                      volume_shape=(32, 64, 64), pool_size=1, batch_size=1,
                      validation_count=1, model_overrides={"width": 2}), run)  # fmt: skip
    trained = inference_state(RunDirectory(run).load_checkpoint("best"))
    assert not trained["fp1_a2.conv.weight"].is_contiguous()  # trained channels-last
    monkeypatch.setattr(pretrained_module, "WEIGHTS_DIR", tmp_path / "weights")
    command = "deconv psf -o psf.tif && deconv train rln3d_tiny -o run --psf psf.tif"
    path = export_pretrained(run, "rln3d_tiny.test", command, {"validation_psnr": 1.0})
    shipped = torch.load(path, weights_only=True)
    assert all(v.is_contiguous() for v in shipped.values())
    for key, value in trained.items():
        assert torch.equal(shipped[key], value), key
    model, record = load_pretrained("rln3d_tiny.test")
    assert record.training["steps"] == 2 and record.config["width"] == 2
    volume = torch.rand(1, 1, 8, 16, 16)
    reference = create_model("rln3d_tiny", width=2).eval()
    reference.load_state_dict(trained)
    with torch.no_grad():
        torch.testing.assert_close(model(volume), reference(volume), rtol=0, atol=0)
    assert record.rl_refine is None  # recorded only when chosen (on validation images)
    export_pretrained(run, "rln3d_tiny.test", command, {"validation_psnr": 1.0}, rl_refine=7)
    assert pretrained_module.pretrained_record("rln3d_tiny.test").rl_refine == 7
