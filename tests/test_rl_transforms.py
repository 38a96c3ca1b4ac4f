"""RL's FFT engines (torch, scipy, FFTW) against numpy's FFT, and RL run on each of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from deconv.errors import DeconvError
from deconv.richardson_lucy import RichardsonLucy, RLConfig
from deconv.rl_transforms import (
    FFTW_MIN_ITERATIONS,
    ScipyTransforms,
    TorchTransforms,
    fftw_available,
    make_transforms,
)
from tests.test_cli import call

needs_fftw = pytest.mark.skipif(not fftw_available(), reason="pyFFTW is not installed")
ENGINES = ["torch", "scipy", pytest.param("fftw", marks=needs_fftw)]
CPU = torch.device("cpu")

GEOMETRIES = [
    ((16, 21), (7, 9)),
    ((15, 20), (15, 20)),  # corner == grid: the unpruned case
    ((12, 18, 25), (5, 11, 13)),
    ((9, 10, 11), (9, 1, 4)),
]


@pytest.fixture(autouse=True)
def private_wisdom(tmp_path, monkeypatch):
    """Each test measures into its own wisdom cache, never the user's."""
    monkeypatch.setenv("DECONV_CACHE_DIR", str(tmp_path / "cache"))


def _engine(name, batch, grid, corner, iterations=None):
    return make_transforms(name, CPU, batch, grid, corner, iterations)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(("grid", "corner"), GEOMETRIES)
def test_engine_transforms_agree_with_numpy(rng, engine, grid, corner):
    t = _engine(engine, 2, grid, corner)
    axes = tuple(range(1, len(grid) + 1))
    x = rng.normal(size=(2, *grid)).astype(np.float32)
    spectrum = t.forward(torch.from_numpy(x)).clone()  # forward transforms are unscaled
    np.testing.assert_allclose(spectrum.numpy(), np.fft.rfftn(x, axes=axes),
                               atol=1e-5 * np.abs(x).sum())  # fmt: skip

    back = t.inverse(spectrum.clone()).numpy() * t.scale
    np.testing.assert_allclose(back, x, atol=1e-5 * np.abs(x).max())

    corner_region = (slice(None), *[slice(0, n) for n in corner])
    out = t.inverse_corner(spectrum.clone()).numpy() * t.scale
    assert out.shape == x[corner_region].shape
    np.testing.assert_allclose(out, x[corner_region], atol=1e-5 * np.abs(x).max())

    zero_padded = np.zeros_like(x)
    zero_padded[corner_region] = x[corner_region]
    t.corner_input().copy_(torch.from_numpy(x[corner_region]))
    np.testing.assert_allclose(
        t.forward_corner().numpy(), np.fft.rfftn(zero_padded, axes=axes),
        atol=1e-5 * np.abs(zero_padded).sum(),
    )  # fmt: skip


@pytest.mark.parametrize("engine", ["torch", pytest.param("fftw", marks=needs_fftw)])
@pytest.mark.parametrize(
    ("boundary", "back_projector", "acceleration"),
    [
        ("noncirculant", "traditional", False),
        ("noncirculant", "wiener-butterworth", True),
        ("zero", "traditional", False),
        ("reflect", "gaussian", False),
        ("periodic", "traditional", True),
    ],
)
def test_rl_is_the_same_on_every_engine(rng, psf3d, engine, boundary, back_projector,
                                        acceleration):  # fmt: skip
    image = rng.poisson(50 + 100 * rng.random((2, 20, 40, 36))).astype(np.float32)
    config = RLConfig(
        boundary=boundary, back_projector=back_projector, acceleration=acceleration,
        background=5.0, iterations=8,
    )  # fmt: skip
    expected = RichardsonLucy(psf3d.data, config, fft="scipy")(image).numpy()
    out = RichardsonLucy(psf3d.data, config, fft=engine)(image).numpy()
    # float32 round-off differs between engines; acceleration amplifies it (to ~3e-4)
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=5e-4 * expected.max())


@needs_fftw
def test_fftw_rl_in_2d_matches_scipy(rng, psf2d):
    image = rng.poisson(200 * rng.random((3, 50, 45))).astype(np.float32)
    config = RLConfig(iterations=10)
    expected = RichardsonLucy(psf2d.data, config, fft="scipy")(image).numpy()
    out = RichardsonLucy(psf2d.data, config, fft="fftw")(image).numpy()
    np.testing.assert_allclose(out, expected, rtol=2e-4, atol=2e-4 * expected.max())


def test_unknown_engine_is_refused():
    with pytest.raises(DeconvError, match="unknown FFT engine 'mkl'"):
        _engine("mkl", 1, (8, 8), (4, 4))


def test_fftw_without_pyfftw_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr("deconv.rl_transforms.fftw_available", lambda: False)
    with pytest.raises(DeconvError, match=r"pip install 'deconv\[fftw\]'"):
        _engine("fftw", 1, (8, 8), (4, 4))


def test_cpu_engines_are_refused_on_other_devices():
    with pytest.raises(DeconvError, match="runs on CPU only, not on meta"):
        make_transforms("scipy", torch.device("meta"), 1, (8, 8), (4, 4))


def test_auto_without_fftw_is_scipy(monkeypatch):
    monkeypatch.setattr("deconv.rl_transforms.fftw_available", lambda: False)
    t = _engine("auto", 1, (8, 8), (4, 4), iterations=10_000)
    assert isinstance(t, ScipyTransforms)


def test_torch_engine_is_forced_off_cpu_only_by_device():
    assert isinstance(_engine("torch", 1, (8, 8), (4, 4)), TorchTransforms)


@needs_fftw
def test_auto_measures_fftw_only_when_it_pays_off_and_remembers(tmp_path):
    import deconv.fftw_transforms as fftw

    grid, corner = (22, 26, 30), (9, 13, 17)  # a grid no other test plans
    short = _engine("auto", 1, grid, corner, iterations=FFTW_MIN_ITERATIONS - 1)
    assert short.name == "scipy"  # measuring would cost more than it saves
    assert not fftw.wisdom_path().exists()

    long = _engine("auto", 1, grid, corner, iterations=FFTW_MIN_ITERATIONS)
    assert long.name == "fftw"
    saved = json.loads(fftw.wisdom_path().read_text())
    assert saved["wisdom"] and saved["fftw_version"]

    # now planning is free, so a short run gets FFTW too
    assert _engine("auto", 1, grid, corner, iterations=1).name == "fftw"

    # and a new process finds the plans on disk (wisdom-only planning succeeds there),
    # while a corner never measured still needs measuring
    env = {**os.environ, "DECONV_CACHE_DIR": str(fftw.wisdom_path().parent)}

    def probe(corner_shape):
        code = (
            "from deconv.fftw_transforms import FFTWTransforms, PlanningSkipped\n"
            "try:\n"
            f"    FFTWTransforms(1, {grid}, {corner_shape}, wisdom_only=True)\n"
            "except PlanningSkipped:\n"
            "    print('skipped')\n"
            "else:\n"
            "    print('planned')\n"
        )
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=True)  # fmt: skip
        return done.stdout.strip()

    assert probe(corner) == "planned"
    assert probe((5, 5, 5)) == "skipped"


@needs_fftw
def test_unwritable_wisdom_cache_only_costs_remeasuring(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DECONV_CACHE_DIR", str(blocker / "cache"))
    t = _engine("fftw", 1, (10, 12), (6, 7))
    x = torch.rand(1, 10, 12)
    back = t.inverse(t.forward(x).clone()) * t.scale
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-6)


@needs_fftw
def test_fftw_forward_accepts_unaligned_and_strided_input(rng):
    t = _engine("fftw", 1, (10, 12), (10, 12))
    big = torch.from_numpy(rng.random(1 + 120, dtype=np.float32))
    x = big[1:].reshape(1, 10, 12)  # 4 bytes off any SIMD alignment
    assert x.data_ptr() % 16 != 0
    spectrum = t.forward(x)
    np.testing.assert_allclose(spectrum.numpy(), np.fft.rfftn(x.numpy(), axes=(1, 2)),
                               atol=1e-4)  # fmt: skip


@needs_fftw
def test_fft_plan_command_makes_later_short_runs_use_fftw(tmp_path, capsys, rng):
    from deconv.psf import generate_psf, save_psf

    psf = generate_psf(shape=(9, 17, 17))
    path = save_psf(psf, tmp_path / "psf.tif")
    shape = (12, 30, 34)
    code, out, err = call(capsys, "fft-plan", "--psf", str(path), "--shape", "12,30,34",
                           "--effort", "measure")  # fmt: skip
    assert code == 0, err
    assert "20x48x50 grid" in out and "wisdom saved to" in out

    probe = (
        "import numpy as np\n"
        "from deconv.psf import load_psf\n"
        "from deconv.richardson_lucy import RichardsonLucy\n"
        f"rl = RichardsonLucy(load_psf({str(path)!r}).data)\n"
        f"rl(np.ones({shape}, np.float32), iterations=1)\n"
        f"print(sorted(k[0] for k in rl.plan({shape}).transforms))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, env=dict(os.environ))  # fmt: skip
    assert done.stdout.strip() == "['fftw']"


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ("12,30", "--shape has 2 sizes but the PSF is 3D"),
        ("5,30,34", "is larger than the image"),
        ("12,a,34", "--shape: expected comma-separated numbers"),
    ],
)
@needs_fftw
def test_fft_plan_command_bad_input(tmp_path, capsys, shape, message):
    from deconv.psf import generate_psf, save_psf

    path = save_psf(generate_psf(shape=(9, 17, 17)), tmp_path / "psf.tif")
    code, _out, err = call(capsys, "fft-plan", "--psf", str(path), "--shape", shape)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("engine", ["scipy", pytest.param("fftw", marks=needs_fftw)])
def test_one_model_used_from_threads_gives_each_its_own_answer(rng, psf2d, engine):
    from concurrent.futures import ThreadPoolExecutor

    images = [rng.poisson(100 * rng.random((40, 44))).astype(np.float32) for _ in range(4)]
    model = RichardsonLucy(psf2d.data, RLConfig(iterations=6), fft=engine)
    alone = [model(im).numpy() for im in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda im: model(im).numpy(), images))
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * a.max())


@needs_fftw
@pytest.mark.parametrize("content", ["not json", '{"wisdom": ["@@not base64@@"]}', '{"x": 1}'])
def test_corrupt_wisdom_cache_is_measured_over(tmp_path, monkeypatch, content):
    import deconv.fftw_transforms as fftw

    monkeypatch.setenv("DECONV_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(fftw, "_loaded_wisdom_from", None)
    fftw.wisdom_path().write_text(content)
    t = _engine("fftw", 1, (14, 10), (7, 5))
    x = torch.rand(1, 14, 10)
    np.testing.assert_allclose((t.inverse(t.forward(x).clone()) * t.scale).numpy(), x.numpy(),
                               atol=1e-6)  # fmt: skip
    assert json.loads(fftw.wisdom_path().read_text())["wisdom"]  # replaced by good wisdom
