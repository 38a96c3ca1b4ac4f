"""``--rl-consensus N``: the mean of a network's restoration and N iterations of RL.

A trained network and Richardson-Lucy get different things wrong. On held-out synthetic
shells (a class the 3D RLN never saw) the network renders mid-scale detail better than RL
and the smooth, object-sized part of each shell worse, and RL passes more noise. Their
errors are so little correlated that the plain mean of the two beats either by far more
than a second network does: on 3D shells +1.2 dB over the best RL (+1.4 dB with ``--tta``),
where in 2D an ensemble of three RLNs gained 0.1 dB (benchmarks/quality-log.md, sessions 10 and 18).

It is a hedge, not a free gain. It pays where network and RL are about equally good: on
structures unlike the training data, and in 3D. Where the network is far ahead of RL (2D,
on the classes it was trained on: 2.5 dB) the mean costs 0.6 dB against the network alone.

How the two are put on one scale: the network works in normalised units and is mapped back
to the input's range only approximately, RL's output is in the object's own units (flux
kept, background removed). The network's output is fitted to RL's by least squares (gain
and offset over the whole image), and the result is in RL's units, as ``deconv run --model
rl`` writes them. The fit uses the whole image, so the consensus needs it in memory: Zarr
streaming and Dask refuse it.

The weight is fixed at one half, chosen before measuring; 0.4-0.6 differ by ~0.1 dB. The RL
iteration count is the user's, as for ``--model rl``, and it matters: RL's best count for
the data is the one to use (400 instead of 800 costs 0.6 dB in 3D). For the shipped
networks at their training photon level: 800 (3D) and 200 (2D), each chosen as RL's best
count on held-out images of the training classes.
"""

from __future__ import annotations

import numpy as np

from deconv.metrics import fit_affine

CONSENSUS_WEIGHT = 0.5  # the network's share


def rl_consensus(
    network: np.ndarray, rl: np.ndarray, weight: float = CONSENSUS_WEIGHT
) -> np.ndarray:
    """``weight`` x the network's output fitted to RL's scale + (1 - ``weight``) x RL's."""
    if np.shape(network) != np.shape(rl):
        raise ValueError(f"network {np.shape(network)} and RL {np.shape(rl)} differ in shape")
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the network's weight must lie in [0, 1], got {weight}")
    rl = np.asarray(rl, dtype=np.float64)
    return (weight * fit_affine(network, rl) + (1.0 - weight) * rl).astype(np.float32)
