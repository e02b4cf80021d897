"""Downsampling long curves for plotting, keeping spikes visible.

The full history stays on the server; a chart gets at most ``max_points``
per trace. Plain striding would hide a one-step cost spike, the very thing a
babysitter looks for, so each bucket keeps both its minimum and its maximum
(in the order they occur), the "min-max" decimation of oscilloscopes.
"""

from __future__ import annotations

import numpy as np


def minmax_indices(y: np.ndarray, max_points: int = 2000) -> np.ndarray:
    """Indices into ``y`` (sorted, ≤ max_points) that keep each bucket's extremes.

    y: (n,). NaN and inf are kept where they occur (they are the spikes that
    matter most: argmin/argmax return the first NaN of a bucket); the first
    and last points are always kept.
    """
    y = np.asarray(y)
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    n_buckets = max(1, (max_points - 4) // 2)
    width = -(-n // n_buckets)  # ceil: at most n_buckets buckets, the last one shorter
    full = n // width
    # Equal buckets as a free 2-D view of the contiguous column: no copy of 10⁶ values.
    buckets = y[: full * width].reshape(full, width)
    starts = np.arange(full) * width
    picked = [starts + buckets.argmin(axis=1), starts + buckets.argmax(axis=1), [0, n - 1]]
    if full * width < n:
        tail = y[full * width :]
        picked.append([full * width + int(tail.argmin()), full * width + int(tail.argmax())])
    return np.unique(np.concatenate(picked))


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = 2000):
    """``(x, y)`` reduced to at most max_points points by :func:`minmax_indices`."""
    keep = minmax_indices(y, max_points)
    return np.asarray(x)[keep], np.asarray(y)[keep]


def smooth(y: np.ndarray, beta: float = 0.98) -> np.ndarray:
    """Bias-corrected exponentially weighted average, the course's ``v_t/(1 − βᵗ)``.

    Non-finite values are skipped (the average carries over them).
    """
    y = np.asarray(y, np.float64)
    out = np.empty_like(y)
    v, weight = 0.0, 0.0
    for i, value in enumerate(y):
        if np.isfinite(value):
            v = beta * v + (1 - beta) * value
            weight = beta * weight + (1 - beta)
        out[i] = v / weight if weight else np.nan
    return out
