"""Numerical gradients for the gradient-check tests (float64, central differences)."""

from __future__ import annotations

import numpy as np


def numerical_gradient(f, x, h=1e-6):
    """∂f/∂x by central differences; f() reads x, which is perturbed in place."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h
        f_plus = f()
        x[i] = old - h
        f_minus = f()
        x[i] = old
        grad[i] = (f_plus - f_minus) / (2 * h)
    return grad


def relative_error(a, b):
    """max |a − b| / max(|a| + |b|): the usual gradient-check measure."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a) + np.abs(b)), 1e-12))
