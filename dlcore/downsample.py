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
    matter most); the first and last points are always kept.
    """
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    n_buckets = max(1, (max_points - 2) // 2)
    edges = np.linspace(0, n, n_buckets + 1).astype(np.int64)
    starts = edges[:-1]
    width = int(np.max(np.diff(edges)))
    # Pad buckets to one width so argmin/argmax run vectorised over a 2-D view.
    index = np.minimum(starts[:, None] + np.arange(width)[None, :], edges[1:, None] - 1)
    values = np.asarray(y, np.float64)[index]
    bad = ~np.isfinite(values)
    low = np.where(bad, -np.inf, values).argmin(axis=1)
    high = np.where(bad, np.inf, values).argmax(axis=1)
    picked = np.concatenate([index[np.arange(len(starts)), low], index[np.arange(len(starts)), high],
                             [0, n - 1]])
    return np.unique(picked)


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
