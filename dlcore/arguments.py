"""Argument checks shared by dlcore's data modules: a ValueError that names the value."""

from __future__ import annotations

import numbers

import numpy as np


def require_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def require_number(name, value, minimum, maximum=None, inclusive=True) -> float:
    """value must be a real number ≥ minimum (> if not inclusive) and ≤ maximum (<)."""
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if valid:
        above = value >= minimum if inclusive else value > minimum
        below = maximum is None or (value <= maximum if inclusive else value < maximum)
        valid = above and below
    if not valid:
        low = f"{'≥' if inclusive else '>'} {minimum}"
        high = "" if maximum is None else f" and {'≤' if inclusive else '<'} {maximum}"
        raise ValueError(f"{name} must be a number {low}{high}, got {value!r}")
    return float(value)
