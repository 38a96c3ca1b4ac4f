"""Small shared fixtures: PSFs that are cheap to make and small enough for fast RL runs."""

from __future__ import annotations

import numpy as np
import pytest

from deconv.psf import PSF, generate_psf


@pytest.fixture(scope="session")
def psf3d() -> PSF:
    """Widefield vectorial PSF, 9x17x17 voxels of 0.2x0.065x0.065 µm (NA 1.4, 520 nm)."""
    return generate_psf(shape=(9, 17, 17))


@pytest.fixture(scope="session")
def psf2d() -> PSF:
    """In-focus plane of the same optics, 17x17 voxels."""
    return generate_psf(shape=(17, 17))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(autouse=True, scope="session")
def _private_fftw_wisdom(tmp_path_factory):
    """FFTW plans measured by tests go to a temporary cache, never the user's."""
    import os

    os.environ.setdefault("DECONV_CACHE_DIR", str(tmp_path_factory.mktemp("deconv-cache")))
