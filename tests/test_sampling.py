"""dlcore.sampling: the right scale for α and β, and coarse-to-fine narrowing."""

import math
import re

import numpy as np
import pytest

from dlcore.sampling import narrow_range, sample_beta, sample_log_uniform

N = 10_000


def test_log_uniform_puts_a_quarter_of_draws_in_each_decade():
    alphas = sample_log_uniform(1e-4, 1.0, size=N, rng=0)
    assert alphas.shape == (N,)
    assert np.all((alphas >= 1e-4) & (alphas <= 1.0))
    for decade_low in (1e-4, 1e-3, 1e-2, 1e-1):
        share = np.mean((alphas >= decade_low) & (alphas < 10 * decade_low))
        assert abs(share - 0.25) < 0.02, (decade_low, share)


def test_beta_puts_half_of_draws_on_each_side_of_0_99():
    betas = sample_beta(0.9, 0.999, size=N, rng=0)
    assert np.all((betas >= 0.9) & (betas <= 0.999))
    share_low = np.mean(betas < 0.99)
    assert abs(share_low - 0.5) < 0.02


def test_single_draw_is_a_python_float_in_range():
    alpha = sample_log_uniform(1e-3, 1e-1, rng=1)
    beta = sample_beta(0.9, 0.99, rng=1)
    assert type(alpha) is float and 1e-3 <= alpha <= 1e-1
    assert type(beta) is float and 0.9 <= beta <= 0.99


def test_seeded_draws_are_reproducible():
    assert np.array_equal(
        sample_log_uniform(1e-4, 1, 5, rng=42), sample_log_uniform(1e-4, 1, 5, rng=42)
    )
    assert np.array_equal(sample_beta(0.9, 0.999, 5, rng=42), sample_beta(0.9, 0.999, 5, rng=42))
    first = sample_log_uniform(1e-4, 1, 3, rng=np.random.default_rng(7))
    again = sample_log_uniform(1e-4, 1, 3, rng=np.random.default_rng(7))
    assert np.array_equal(first, again)


def test_a_generator_advances_between_draws():
    rng = np.random.default_rng(0)
    assert sample_log_uniform(1e-4, 1, rng=rng) != sample_log_uniform(1e-4, 1, rng=rng)


@pytest.mark.parametrize(
    "sampler, low, high, shown",
    [
        (sample_log_uniform, 0.0, 1.0, "low=0.0"),
        (sample_log_uniform, -1e-3, 1.0, "-0.001"),
        (sample_log_uniform, 1.0, 1e-4, "low=1.0, high=0.0001"),
        (sample_log_uniform, 1e-4, math.inf, "inf"),
        (sample_beta, 0.9, 1.0, "1.0"),
        (sample_beta, -0.1, 0.9, "-0.1"),
        (sample_beta, 0.99, 0.9, "low=0.99, high=0.9"),
    ],
)
def test_invalid_ranges_raise(sampler, low, high, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        sampler(low, high)


# -- coarse to fine ------------------------------------------------------------------------


def peaked_scores(values, best):
    """A score that peaks at `best` on a log scale."""
    return -np.abs(np.log10(values) - np.log10(best))


def test_narrow_range_zooms_in_on_the_best_alphas():
    alphas = sample_log_uniform(1e-5, 1.0, size=200, rng=0)
    new_low, new_high = narrow_range(alphas, peaked_scores(alphas, 3e-3), 1e-5, 1.0)
    assert 1e-5 <= new_low < 3e-3 < new_high <= 1.0
    # the best 50 lie within ~0.63 decades of the peak; widened by half their spread
    # on each side, the 5 decades shrink to about 2.5
    best = np.log10(np.sort(alphas[np.argsort(peaked_scores(alphas, 3e-3))[-50:]]))
    spread = best[-1] - best[0]
    assert math.log10(new_low) == pytest.approx(best[0] - 0.5 * spread)
    assert math.log10(new_high) == pytest.approx(best[-1] + 0.5 * spread)
    assert math.log10(new_high) - math.log10(new_low) < 2.7


def test_narrow_range_with_costs_picks_the_lowest():
    alphas = np.array([1e-4, 1e-3, 1e-2, 1e-1])
    costs = np.array([5.0, 0.1, 3.0, 9.0])
    new_low, new_high = narrow_range(
        alphas, costs, 1e-4, 1.0, keep=0.25, margin=0.5, higher_is_better=False
    )
    # one best sample (spread 0): widened by 5% of the 4 decades on each side
    assert new_low == pytest.approx(10 ** (-3 - 0.2))
    assert new_high == pytest.approx(10 ** (-3 + 0.2))


def test_narrow_range_is_clipped_to_the_original_range():
    alphas = np.array([1e-4, 2e-4, 1e-2, 1e-1])
    scores = np.array([1.0, 0.9, 0.1, 0.0])
    new_low, new_high = narrow_range(alphas, scores, 1e-4, 1.0, keep=0.5, margin=1.0)
    assert new_low == 1e-4
    assert new_high == pytest.approx(10 ** (math.log10(2e-4) + math.log10(2)))


def test_narrow_range_on_the_beta_scale():
    betas = sample_beta(0.8, 0.9999, size=400, rng=3)
    # best near β = 0.99, i.e. averaging over ~100 steps
    scores = -np.abs(np.log10(1 - betas) - np.log10(1 - 0.99))
    new_low, new_high = narrow_range(betas, scores, 0.8, 0.9999, scale="beta")
    assert 0.8 <= new_low < 0.99 < new_high <= 0.9999
    assert new_low > 0.9 and new_high < 0.999


def test_narrow_range_on_a_linear_scale():
    values = np.linspace(0, 10, 11)
    scores = -np.abs(values - 6)
    new_low, new_high = narrow_range(values, scores, 0, 10, scale="linear", keep=3 / 11)
    assert (new_low, new_high) == (4.0, 8.0)  # best 5..7, widened by 0.5 · 2


@pytest.mark.parametrize(
    "values, scores, kwargs, shown",
    [
        ([], [], {}, "at least one"),
        ([1e-3, 1e-2], [1.0], {}, "2 values but 1 scores"),
        ([1e-3, math.nan], [1.0, 2.0], {}, "finite"),
        ([1e-3, 1e-2], [1.0, math.inf], {}, "finite"),
        ([1e-3, 2.0], [1.0, 2.0], {}, "2.0"),
        ([1e-3], [1.0], {"low": 1.0, "high": 1e-4}, "low must be < high"),
        ([1e-3], [1.0], {"low": 0.0}, "low=0.0"),
        ([0.95], [1.0], {"low": 0.9, "high": 1.0, "scale": "beta"}, "[0.9, 1.0]"),
        ([1e-3], [1.0], {"scale": "ln"}, "'ln'"),
        ([1e-3], [1.0], {"keep": 0.0}, "keep must be in (0, 1], got 0.0"),
        ([1e-3], [1.0], {"margin": -1.0}, "-1.0"),
    ],
)
def test_narrow_range_rejects_bad_input(values, scores, kwargs, shown):
    arguments = {"low": 1e-4, "high": 1.0} | kwargs
    with pytest.raises(ValueError, match=re.escape(shown)):
        narrow_range(values, scores, **arguments)


def test_grid_versus_random_tries_5_versus_25_distinct_alphas_on_the_same_budget():
    from dlcore.sampling import grid_versus_random

    result = grid_versus_random(25, seed=3)
    assert result["distinct_alphas"] == {"grid": 5, "random": 25}
    for alphas, epsilons in (result["grid"], result["random"]):
        assert alphas.shape == epsilons.shape == (25,)
        assert np.all((1e-4 <= alphas) & (alphas <= 1))
        assert np.all((1e-10 <= epsilons) & (epsilons <= 1e-6))
    grid_alphas = np.unique(result["grid"][0])
    np.testing.assert_allclose(np.diff(np.log10(grid_alphas)), 1.0)  # one per decade
    with pytest.raises(ValueError, match="square"):
        grid_versus_random(24)
