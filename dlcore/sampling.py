"""Sampling hyperparameters on the right scale, and narrowing the range (coarse to fine).

Course notes, "Using an appropriate scale to pick hyperparameters":

- α in [1e-4, 1]: sampling uniformly would spend 90% of the draws in [0.1, 1]. Draw
  r uniform in [log10 low, log10 high] and take α = 10^r: each decade gets an equal share.
- β in [0.9, 0.999]: what matters is 1/(1−β), the number of steps averaged over, and it
  is most sensitive near 1. Draw r uniform in [log10(1−high), log10(1−low)] and take
  β = 1 − 10^r: [0.9, 0.99] and [0.99, 0.999] get half the draws each.

Coarse to fine: after trying some samples, :func:`narrow_range` zooms the range in on
the region of the best ones, on the same scale, for the next round of sampling.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

__all__ = ["SCALES", "grid_versus_random", "narrow_range", "sample_beta", "sample_log_uniform"]

Scale = Literal["log", "beta", "linear"]
SCALES: tuple[str, ...] = ("log", "beta", "linear")

# With a single best value (zero spread) there is no spread to widen by: use this
# fraction of the original range, on the sampling scale, on each side instead.
_ZERO_SPREAD_FRACTION = 0.05

RngLike = np.random.Generator | int | None


def _check_bounds(low: float, high: float, scale: Scale) -> tuple[float, float]:
    """Return (low, high) as floats, checked for ``scale``; ValueError otherwise."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value}")
    low, high = float(low), float(high)
    if not low < high:
        raise ValueError(f"low must be < high, got low={low}, high={high}")
    if scale == "log" and low <= 0:
        raise ValueError(f"a log-scale range must be positive, got low={low}")
    if scale == "beta" and not (0 <= low and high < 1):
        raise ValueError(f"a beta range must lie in [0, 1), got [{low}, {high}]")
    return low, high


def _to_scale(values, scale: Scale):
    """Map values to the scale they are sampled uniformly on."""
    if scale == "log":
        return np.log10(values)
    if scale == "beta":
        return np.log10(1.0 - np.asarray(values))
    return np.asarray(values, dtype=np.float64)


def _from_scale(r, scale: Scale):
    """Inverse of :func:`_to_scale`."""
    if scale == "log":
        return 10.0**r
    if scale == "beta":
        return 1.0 - 10.0**r
    return r


def _sample(low: float, high: float, scale: Scale, size, rng: RngLike) -> float | np.ndarray:
    low, high = _check_bounds(low, high, scale)
    r_low, r_high = sorted(_to_scale(np.array([low, high]), scale))
    r = np.random.default_rng(rng).uniform(r_low, r_high, size)
    # The round trip 10**log10(x) can land a hair outside [low, high]: clip it back.
    values = np.clip(_from_scale(r, scale), low, high)
    return float(values) if size is None else values


def sample_log_uniform(
    low: float, high: float, size: int | tuple[int, ...] | None = None, rng: RngLike = None
) -> float | np.ndarray:
    """α = 10^r with r uniform in [log10 low, log10 high]; 0 < low < high.

    size: None for one Python float, else the shape of the returned array.
    rng: a numpy Generator, an int seed, or None for fresh entropy.
    """
    return _sample(low, high, "log", size, rng)


def sample_beta(
    low: float, high: float, size: int | tuple[int, ...] | None = None, rng: RngLike = None
) -> float | np.ndarray:
    """β = 1 − 10^r with r uniform in [log10(1−high), log10(1−low)]; 0 ≤ low < high < 1.

    size and rng as in :func:`sample_log_uniform`.
    """
    return _sample(low, high, "beta", size, rng)


def narrow_range(
    values,
    scores,
    low: float,
    high: float,
    scale: Scale = "log",
    keep: float = 0.25,
    margin: float = 0.5,
    higher_is_better: bool = True,
) -> tuple[float, float]:
    """Coarse to fine: a smaller range ⊂ [low, high] around the best-scoring values.

    values: (n,) the hyperparameter values tried; scores: (n,) their results (e.g. dev
    accuracy; pass ``higher_is_better=False`` for a cost). On the sampling scale of
    ``scale`` ("log": log10 v, "beta": log10(1−v), "linear": v):

    1) keep the best ``keep`` fraction of the samples (at least one);
    2) take their min and max and widen both sides by ``margin`` × their spread (by 5%
       of the original range if they all coincide);
    3) clip to [low, high] and map back to values.

    Returns ``(new_low, new_high)`` as floats, new_low < new_high.
    """
    low, high = _check_bounds(low, high, scale)
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("narrow_range needs at least one sample, got none")
    if values.size != scores.size:
        raise ValueError(f"got {values.size} values but {scores.size} scores")
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(scores))):
        raise ValueError("values and scores must be finite (drop diverged samples first)")
    outside = values[(values < low) | (values > high)]
    if outside.size:
        raise ValueError(f"values must lie in [low, high] = [{low}, {high}], got {outside[0]}")
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    if not (margin >= 0 and math.isfinite(margin)):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")

    # 1) the best samples (a stable sort, so ties keep their order)
    n_best = max(1, math.ceil(keep * values.size))
    order = np.argsort(scores, kind="stable")
    best = order[-n_best:] if higher_is_better else order[:n_best]

    # 2) their extent on the sampling scale, widened
    r_best = _to_scale(values[best], scale)
    r_low, r_high = float(r_best.min()), float(r_best.max())
    r_range_low, r_range_high = sorted(float(r) for r in _to_scale(np.array([low, high]), scale))
    spread = r_high - r_low
    pad = margin * spread if spread > 0 else _ZERO_SPREAD_FRACTION * (r_range_high - r_range_low)

    # 3) clipped to the original range, back in value space
    r_new_low = max(r_low - pad, r_range_low)
    r_new_high = min(r_high + pad, r_range_high)
    ends = sorted(float(v) for v in _from_scale(np.array([r_new_low, r_new_high]), scale))
    return max(ends[0], low), min(ends[1], high)


def grid_versus_random(trials: int = 25, alpha_range=(1e-4, 1.0), eps_range=(1e-10, 1e-6),
                       seed: int = 0) -> dict:
    """The course's first lesson: the same budget as a grid and as random draws.

    Two hyperparameters of very different importance, α and Adam's ε, both on log scales:
    a √trials × √trials grid tries only √trials distinct α's (5 of 25), random draws try
    ``trials`` (25). Returns ``{"grid": (alphas, epsilons), "random": (alphas, epsilons),
    "distinct_alphas": {"grid": 5, "random": 25}}``, each array of shape (trials,).
    """
    side = math.isqrt(trials)
    if side * side != trials or side < 2:
        raise ValueError(f"trials must be a square ≥ 4 (a side × side grid), got {trials}")
    a, e = np.logspace(*np.log10(alpha_range), side), np.logspace(*np.log10(eps_range), side)
    grid_a, grid_e = (values.reshape(-1) for values in np.meshgrid(a, e))
    rng = np.random.default_rng(seed)
    random_a = sample_log_uniform(*alpha_range, size=trials, rng=rng)
    random_e = sample_log_uniform(*eps_range, size=trials, rng=rng)
    return {"grid": (grid_a, grid_e), "random": (random_a, random_e),
            "distinct_alphas": {"grid": len(np.unique(grid_a)),
                                "random": len(np.unique(random_a))}}
