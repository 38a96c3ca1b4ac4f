"""Tests for deconv.fft: smooth sizes, kernel placement, transfer functions, phase ramps."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.signal import fftconvolve

from deconv.fft import (
    fft_convolve,
    kernel_to_origin,
    next_smooth_size,
    shift_phase,
    transfer_function,
)


def test_next_smooth_size_matches_brute_force_1_to_500():
    # Independent reference: the sorted set of all 7-smooth numbers up to 1000.
    smooth = sorted(
        2**a * 3**b * 5**c * 7**d
        for a in range(10)
        for b in range(7)
        for c in range(5)
        for d in range(4)
        if 2**a * 3**b * 5**c * 7**d <= 1000
    )
    for n in range(1, 501):
        expected = next(s for s in smooth if s >= n)
        assert next_smooth_size(n) == expected, n


def test_next_smooth_size_known_values_and_custom_primes():
    assert next_smooth_size(1) == 1
    assert next_smooth_size(11) == 12
    assert next_smooth_size(97) == 98  # 2 * 7^2
    assert next_smooth_size(257) == 270  # 2 * 3^3 * 5
    assert next_smooth_size(257, primes=(2,)) == 512
    assert next_smooth_size(13, primes=(2, 3)) == 16


@pytest.mark.parametrize("n", [0, -5])
def test_next_smooth_size_rejects_non_positive(n):
    with pytest.raises(ValueError, match="positive"):
        next_smooth_size(n)


def test_kernel_to_origin_puts_centre_at_index_zero():
    kernel = np.arange(1.0, 10.0).reshape(3, 3)  # centre value 5
    placed = kernel_to_origin(kernel, (6, 7))
    assert placed[0, 0] == 5.0
    assert placed[0, 1] == 6.0 and placed[0, -1] == 4.0
    assert placed[1, 0] == 8.0 and placed[-1, 0] == 2.0
    assert placed[-1, -1] == 1.0 and placed[1, 1] == 9.0
    assert placed.sum() == kernel.sum()
    with pytest.raises(ValueError, match="does not fit"):
        kernel_to_origin(np.ones((5, 5)), (4, 8))


@pytest.mark.parametrize(
    ("image_shape", "kernel_shape"),
    [((23, 30), (5, 9)), ((40, 33), (11, 3)), ((12, 20, 17), (5, 7, 3)), ((9, 16, 21), (3, 9, 9))],
)
def test_transfer_function_is_circular_convolution(rng, image_shape, kernel_shape):
    image = rng.normal(size=image_shape)
    kernel = rng.uniform(size=kernel_shape)
    out = np.fft.irfftn(
        np.fft.rfftn(image) * transfer_function(kernel, image_shape),
        s=image_shape,
        axes=tuple(range(image.ndim)),
    )
    expected = ndimage.convolve(image, kernel, mode="wrap")
    np.testing.assert_allclose(out, expected, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize(
    ("image_shape", "kernel_shape"),
    [((23, 30), (5, 9)), ((40, 33), (11, 3)), ((12, 20, 17), (5, 7, 3)), ((9, 16, 21), (9, 9, 9))],
)
def test_fft_convolve_matches_scipy_same_mode(rng, image_shape, kernel_shape):
    image = rng.normal(size=image_shape)
    kernel = rng.uniform(size=kernel_shape)
    out = fft_convolve(image, kernel)
    expected = fftconvolve(image, kernel, mode="same")
    assert out.shape == image.shape
    np.testing.assert_allclose(out, expected, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize(
    ("shape", "shift"),
    [
        ((16,), (5,)),
        ((15, 20), (3, 7)),
        ((14, 9), (13, 0)),
        ((6, 7, 8), (1, 5, 3)),
        ((9, 10, 11), (8, 9, 10)),
    ],
)
def test_shift_phase_rolls_signal_by_minus_shift(rng, shape, shift):
    x = rng.normal(size=shape)
    phase = shift_phase(shape, shift)
    assert phase.shape == np.fft.rfftn(x).shape
    np.testing.assert_allclose(np.abs(phase), 1.0, atol=1e-12)
    moved = np.fft.irfftn(np.fft.rfftn(x) * phase, s=shape, axes=tuple(range(len(shape))))
    np.testing.assert_allclose(
        moved, np.roll(x, [-s for s in shift], axis=tuple(range(len(shape)))), atol=1e-10
    )
