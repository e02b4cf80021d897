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


def ewma(y: np.ndarray, beta: float, counts: np.ndarray | None = None) -> np.ndarray:
    """The course's exponentially weighted average with bias correction, vectorised.

    v_t = β·v_{t−1} + (1 − β)·y_t, shown as v_t / (1 − β^t), y: (n,). ``counts``: how
    many steps each value stands for (a bucket's mean of c steps counts as c steps of
    that value: v = β^c·v + (1 − β^c)·y); None for one step each. NaN values are
    carried over. β = 0 returns y. Computed in blocks of a closed form, so 10⁵ values
    take a few milliseconds (the loop of :func:`smooth` takes ~50).
    """
    y = np.asarray(y, np.float64)
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    if beta == 0 or not len(y):
        return y.copy()
    c = np.ones(len(y)) if counts is None else np.asarray(counts, np.float64)
    finite = np.isfinite(y)
    c = np.where(finite, c, 0.0)  # a NaN counts as no step: the average carries over it
    y = np.where(finite, y, 0.0)
    # a_i = β^{c_i} (decay over row i), b_i = 1 − a_i (weight of y_i); v_i = a_i v_{i−1} + b_i y_i
    log_beta = np.log(beta)
    out_v, out_w = np.empty(len(y)), np.empty(len(y))
    v = w = 0.0  # w: the same recursion on ones, i.e. 1 − β^t (the bias correction)
    block = max(1, int(600 / max(1e-12, -log_beta * max(1.0, float(c.max())))))
    for start in range(0, len(y), block):
        cs = np.cumsum(c[start:start + block])  # decay from the block start to row i: β^cs
        a_b = np.exp(log_beta * cs)
        b = 1.0 - np.exp(log_beta * c[start:start + block])
        # v_i = β^{cs_i} v + Σ_{j≤i} β^{cs_i − cs_j} b_j y_j = a_b_i (v + Σ b_j y_j / a_b_j)
        out_v[start:start + block] = a_b * (v + np.cumsum(b * y[start:start + block] / a_b))
        out_w[start:start + block] = a_b * (w + np.cumsum(b / a_b))
        v, w = out_v[start + len(cs) - 1], out_w[start + len(cs) - 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(out_w > 0, out_v / out_w, np.nan)
