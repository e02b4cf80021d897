"""Downsampling keeps spikes; smoothing is the course's bias-corrected EWMA."""

import numpy as np
import pytest

from dlcore.downsample import downsample, minmax_indices, smooth


@pytest.mark.parametrize("n", [10, 2000, 2001, 10**5 + 7, 10**6])
def test_at_most_max_points_sorted_with_both_ends(n):
    y = np.random.default_rng(0).random(n)
    keep = minmax_indices(y, 2000)
    assert len(keep) <= 2000 and np.all(np.diff(keep) > 0)
    assert keep[0] == 0 and keep[-1] == n - 1


def test_a_single_spike_and_a_nan_survive():
    y = np.ones(10**6)
    y[123_457] = 50.0
    y[654_321] = np.nan
    y[800_000] = -3.0
    x, kept = downsample(np.arange(10**6), y, 2000)
    assert 123_457 in x and 654_321 in x and 800_000 in x
    assert np.nanmax(kept) == 50.0 and np.isnan(kept).sum() == 1


def test_smooth_is_the_bias_corrected_ewma():
    y = np.array([1.0, 2.0, 3.0])
    v, expected = 0.0, []
    for t, value in enumerate(y, 1):
        v = 0.9 * v + 0.1 * value
        expected.append(v / (1 - 0.9**t))
    np.testing.assert_allclose(smooth(y, 0.9), expected)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.98, 0.999])
def test_ewma_equals_the_course_loop_with_bias_correction(beta):
    from dlcore.downsample import ewma, smooth

    y = np.random.default_rng(0).normal(size=5000).cumsum()
    y[[10, 400]] = np.nan
    expected = smooth(y, beta) if beta else y
    np.testing.assert_allclose(ewma(y, beta)[np.isfinite(y)], expected[np.isfinite(y)],
                               rtol=1e-9, atol=1e-9)


def test_ewma_of_buckets_counts_each_for_its_steps():
    from dlcore.downsample import ewma

    steps = np.array([1.0, 2.0, 2.0, 2.0, 5.0])
    merged = ewma(np.array([1.0, 2.0, 5.0]), 0.9, counts=np.array([1, 3, 1]))
    assert merged[-1] == pytest.approx(ewma(steps, 0.9)[-1], rel=1e-12)
