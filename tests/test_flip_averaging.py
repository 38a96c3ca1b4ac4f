"""``--tta``: flip averaging is exact for equivariant backends, wired into deconv run."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from deconv.errors import DeconvError
from deconv.io import read_image, write_image
from deconv.psf import PSF, generate_psf
from deconv.runtime.flip_averaging import FlipAveraged, psf_flips, tta_flips


class Multiply:
    """A backend that multiplies by a fixed map: equivariant only if the map is symmetric."""

    def __init__(self, weights: np.ndarray) -> None:
        self.weights = weights

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return batch * self.weights

    def describe(self) -> str:
        return "multiply"


def test_widefield_psf_allows_the_lateral_flips_only(psf3d, psf2d):
    # the vectorial PSF is mirror-symmetric in y and x, not in z (spherical aberration)
    assert psf_flips(psf3d.data) == [(), (1,), (2,), (1, 2)]
    assert psf_flips(psf2d.data) == [(), (0,), (1,), (0, 1)]


def test_an_asymmetric_psf_allows_no_flip(rng):
    psf = rng.random((5, 7, 7))
    assert psf_flips(psf) == [()]
    sym_y = psf + psf[:, ::-1]  # symmetric in y only
    assert psf_flips(sym_y) == [(), (1,)]


def test_averaging_an_equivariant_backend_changes_nothing(rng):
    batch = rng.random((2, 1, 4, 6, 8)).astype(np.float32)
    symmetric = np.ones((4, 6, 8), np.float32) * 3.0
    averaged = FlipAveraged(Multiply(symmetric), [(), (1,), (2,), (1, 2)], ndim=3)
    np.testing.assert_allclose(averaged(batch), batch * 3.0, rtol=1e-6)


def test_averaging_symmetrises_a_backend_that_is_not(rng):
    batch = rng.random((1, 1, 3, 5, 8)).astype(np.float32)
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32), (3, 5, 8))
    out = FlipAveraged(Multiply(ramp), [(), (2,)], ndim=3)(batch)
    # (x r + flip(flip(x) r)) / 2 = x (r + flip(r)) / 2 = x * 3.5 for r = 0..7
    np.testing.assert_allclose(out, batch * 3.5, rtol=1e-6)
    assert "averaged over 2 flips" in FlipAveraged(Multiply(ramp), [(), (2,)], 3).describe()


def test_tta_refuses_models_it_cannot_serve(rng):
    with pytest.raises(DeconvError, match="needs the model's PSF"):
        tta_flips(SimpleNamespace(psf=None, config={}))
    lopsided = PSF(rng.random((5, 7, 7)).astype(np.float32), None)
    with pytest.raises(DeconvError, match="symmetric under no flip"):
        tta_flips(SimpleNamespace(psf=lopsided, config={}))


def test_tta_leaves_out_the_flips_an_equivariant_rln_has_built_in(psf3d):
    half = SimpleNamespace(psf=psf3d, config={"architecture": "rln", "flip_axes": [2]})
    assert tta_flips(half) == [(), (1,)]
    whole = SimpleNamespace(psf=psf3d, config={"architecture": "rln", "flip_axes": [1, 2]})
    with pytest.raises(DeconvError, match=r"already exactly equivariant to flips of axes \[1, 2\]"):
        tta_flips(whole)


def test_run_with_tta_is_the_mean_over_flipped_runs(tmp_path, capsys, rng):
    from tests.test_cli import call

    volume = (50 + 200 * rng.random((16, 48, 48))).astype(np.float32)
    psf = generate_psf(shape=(9, 17, 17))
    voxel = psf.voxel_size
    common = ["--model", "rln3d.widefield-synthetic", "--backend", "torch", "-q"]
    runs = []
    for axes in [(), (1,), (2,), (1, 2)]:
        src = write_image(tmp_path / f"in{len(runs)}.tif", np.flip(volume, axes).copy(),
                          voxel_size=voxel)  # fmt: skip
        out = tmp_path / f"out{len(runs)}.tif"
        code, _, err = call(capsys, "run", str(src), "-o", str(out), *common)
        assert code == 0, err
        runs.append(np.flip(read_image(out).data, axes))
    src = write_image(tmp_path / "in.tif", volume, voxel_size=voxel)
    code, _, err = call(capsys, "run", str(src), "-o", str(tmp_path / "tta.tif"), "--tta",
                        *common)  # fmt: skip
    assert code == 0, err
    tta = read_image(tmp_path / "tta.tif").data
    expected = np.mean(runs, axis=0)
    np.testing.assert_allclose(tta, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    assert np.abs(tta - runs[0]).max() > 1e-3 * np.abs(expected).max()  # it did something
