"""Per-feature z-scores computed in blocks of rows, without overflow, without a float64 copy.

Each column j is handled in units of its scale s_j = 2^k with max|x_j| < 2·s_j: values become
x/s in (-2, 2), so no square of a centred value can overflow, whatever the column holds
(1.7e308, ±1e200). Multiplying by a power of two is exact, so

    (x/s − mean/s) / (std/s) = (x − mean) / std
    mean/s = Σ(x/s) / m,   (std/s)² = Σ(x/s − mean/s)² / m

hold bit for bit: on data that fits in one block (BLOCK_VALUES values) the results are exactly
numpy's ``(X - X.mean(0)) / X.std(0)``; larger data is summed block by block in float64.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from dlcore.tables import BLOCK_VALUES

# Scales are kept within 2^±1000, where both s and 1/s are normal floats.
SCALE_EXPONENTS = (-1000, 1000)


class Standardizer:
    """Per-feature z-scores: X' = (X - mean) / std, with mean, std: (n,) float64 from fit().

    Fit on the training split only, then transform every split with the same statistics.
    std is the population standard deviation (1/m); a constant column gets std max(1, |value|),
    so it maps to zeros instead of dividing by zero. X may be any real dtype (uint8 images stay
    uint8) and any memory order; ``rows`` picks the examples (a split) without copying X.
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = mean
        self.std = std
        self._inverse_scale: np.ndarray | None = None

    def fit(self, X, rows=None, place: Callable[[int, int], str] | None = None) -> Standardizer:
        """X: (m, n) finite real numbers; rows: (k,) int indices to fit on (default all), k ≥ 1.

        place(i, j) names X[i, j] in a message (default "X[i, j]"). Returns self.
        """
        X = _check_array(X, "fit")
        m = len(X) if rows is None else len(rows)
        if m == 0:
            raise ValueError(f"fit needs at least one row, got shape {X.shape}")
        # 1) Range of each column: its scale, and whether it is constant.
        low = np.full(X.shape[1], np.inf)
        high = np.full(X.shape[1], -np.inf)
        for _, block in _blocks(X, rows):
            low = np.minimum(low, block.min(axis=0))
            high = np.maximum(high, block.max(axis=0))
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            _raise_non_finite(X, rows, place)
        exponent = np.frexp(np.maximum(np.abs(low), np.abs(high)))[1] - 1
        exponent = np.clip(exponent, *SCALE_EXPONENTS)
        scale, inverse_scale = np.ldexp(1.0, exponent), np.ldexp(1.0, -exponent)
        # 2) Mean, then the centred sum of squares, in units of the scale.
        total = np.zeros(X.shape[1])
        for _, block in _blocks(X, rows):
            total += np.multiply(block, inverse_scale, dtype=np.float64).sum(axis=0)
        scaled_mean = total / m
        squares = np.zeros(X.shape[1])
        for _, block in _blocks(X, rows):
            centred = np.multiply(block, inverse_scale, dtype=np.float64)
            centred -= scaled_mean
            squares += np.square(centred, out=centred).sum(axis=0)
        scaled_std = np.sqrt(squares / m)
        # A constant column's mean is its value exactly (m copies summed and divided by m can
        # miss it by an ulp), and its std max(1, |value|): training z-scores are 0, and a dev
        # value is measured against the column's magnitude (1e300 + 1 ulp is not 1e284 away).
        constant = high == low
        self.mean = np.where(constant, low, scaled_mean * scale)
        self.std = np.where(constant, np.maximum(1.0, np.abs(low)), scaled_std * scale)
        self._inverse_scale = inverse_scale
        return self

    def transform(
        self, X, rows=None, dtype=None, place: Callable[[int, int], str] | None = None
    ) -> np.ndarray:
        """X: (m, n), rows: (k,) int indices or None (all) -> (k, n) C-contiguous z-scores.

        dtype: of the result; default X's float dtype (float64 for integer input). A value so
        far from the training mean that its z-score overflows dtype raises ValueError naming it
        (place(i, j), default "X[i, j]").
        """
        if self.mean is None or self.std is None:
            raise ValueError("Standardizer.transform called before fit")
        X = _check_array(X, "transform")
        if X.shape[1] != len(self.mean):
            raise ValueError(f"expected shape (k, {len(self.mean)}), got {X.shape}")
        if dtype is None:
            dtype = X.dtype if X.dtype.kind == "f" else np.float64
        inverse_scale = self._scale_for_transform()
        scaled_mean, scaled_std = self.mean * inverse_scale, self.std * inverse_scale
        out = np.empty((len(X) if rows is None else len(rows), X.shape[1]), dtype=dtype)
        for start, block in _blocks(X, rows):
            z = np.multiply(block, inverse_scale, dtype=np.float64)
            z -= scaled_mean
            z /= scaled_std
            target = out[start : start + len(block)]
            with np.errstate(over="ignore"):  # an overflow to float32 is found just below
                target[...] = z
            if not np.isfinite(target).all():
                i, j = np.unravel_index(int(np.argmin(np.isfinite(target))), target.shape)
                row = start + int(i) if rows is None else int(rows[start + int(i)])
                where = place(row, int(j)) if place else f"X[{row}, {int(j)}]"
                raise ValueError(
                    f"{where}: {block[i, j]} lies {z[i, j]:.3g} training standard deviations "
                    f"from the training mean; its z-score does not fit in {np.dtype(dtype)}. "
                    "Remove or correct the value"
                )
        return out

    def _scale_for_transform(self) -> np.ndarray:
        if self._inverse_scale is None:  # built from a given mean and std, not fitted
            largest = np.maximum(np.abs(self.mean), self.std)
            exponent = np.clip(np.frexp(largest)[1] - 1, *SCALE_EXPONENTS)
            self._inverse_scale = np.ldexp(1.0, -exponent)
        return self._inverse_scale


def _check_array(X, what: str) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"{what} needs a 2-D array (examples, features), got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{what} needs real numbers, got dtype {X.dtype}")
    return X


def _blocks(X: np.ndarray, rows) -> Iterator[tuple[int, np.ndarray]]:
    """(start, X[rows][start:start + b]) for consecutive blocks of ~BLOCK_VALUES values:
    a view of X when rows is None, a gathered copy of b rows otherwise."""
    m = len(X) if rows is None else len(rows)
    step = max(1, BLOCK_VALUES // max(1, X.shape[1]))
    for start in range(0, m, step):
        if rows is None:
            yield start, X[start : start + step]
        else:
            yield start, X[rows[start : start + step]]


def _raise_non_finite(X, rows, place) -> None:
    from dlcore.tables import first_non_finite

    for start, block in _blocks(X, rows):
        bad = first_non_finite(block)
        if bad is not None:
            row = start + bad[0] if rows is None else int(rows[start + bad[0]])
            where = place(row, bad[1]) if place else f"X[{row}, {bad[1]}]"
            raise ValueError(f"{where}: {block[bad]} is not a finite number")
