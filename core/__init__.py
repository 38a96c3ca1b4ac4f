"""deconv: a model zoo and runtime for fluorescence-microscopy deconvolution.

The package root holds the physics shared by every model: PSFs (:mod:`deconv.psf`),
synthetic data (:mod:`deconv.synth`), classical Richardson-Lucy (:mod:`deconv.richardson_lucy`),
metrics (:mod:`deconv.metrics`) and image I/O (:mod:`deconv.io`).
"""

import os
import sys
from importlib.metadata import PackageNotFoundError, version

from deconv.errors import DeconvError

# Idle OpenMP threads (torch's) otherwise spin for a while after each element-wise pass and
# steal the cores scipy's FFT threads need: ~1.6x slower RL on 2 cores. It only takes effect
# if set before torch is loaded; a user's own setting wins. When torch came first, the RL
# loop falls back to single-threaded element-wise passes (see deconv.fft.fft_friendly_threads).
OPENMP_MAY_SPIN = "torch" in sys.modules and os.environ.get("OMP_WAIT_POLICY", "") == ""
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("deconv")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["DeconvError", "__version__"]
