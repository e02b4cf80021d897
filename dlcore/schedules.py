"""Learning-rate decay schedules: α as a pure function of (α0, epoch) plus a small config.

    constant       α0
    inverse_time   α0 / (1 + decay_rate · ⌊epoch / interval⌋)
    exponential    α0 · base^epoch
    inverse_sqrt   α0 · k / √max(epoch, 1)
    staircase      α0 · factor^⌊epoch / every⌋
    polynomial     (α0 − end) · (1 − min(epoch, total) / total)^power + end

``epoch`` is a number ≥ 0 and may be fractional (the trainer passes steps / steps per
epoch). A schedule keeps no counter: the trainer owns the one step counter and the
anchor (α0, epoch offset) a schedule is applied from.

    >>> schedule = make_schedule("staircase", factor=0.5, every=10)
    >>> schedule(0.1, 25)
    0.025
    >>> make_schedule(schedule.name, **schedule.params) == schedule   # JSON round trip
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SCHEDULES", "Schedule", "make_schedule", "preview", "schedule_formula"]


def _constant(alpha0: float, epoch: float) -> float:
    return alpha0


def _inverse_time(alpha0: float, epoch: float, *, decay_rate: float, interval: float) -> float:
    return alpha0 / (1.0 + decay_rate * math.floor(epoch / interval))


def _exponential(alpha0: float, epoch: float, *, base: float) -> float:
    return alpha0 * base**epoch


def _inverse_sqrt(alpha0: float, epoch: float, *, k: float) -> float:
    # 1/√epoch is infinite at epoch 0: hold α0·k until the first epoch is complete.
    return alpha0 * k / math.sqrt(max(epoch, 1.0))


def _staircase(alpha0: float, epoch: float, *, factor: float, every: float) -> float:
    return alpha0 * factor ** math.floor(epoch / every)


def _polynomial(alpha0: float, epoch: float, *, end: float, total: float, power: float) -> float:
    remaining = 1.0 - min(epoch, total) / total
    return (alpha0 - end) * remaining**power + end


@dataclass(frozen=True)
class _Kind:
    formula: Callable[..., float]
    defaults: dict[str, float]
    latex: str


_KINDS: dict[str, _Kind] = {
    "constant": _Kind(_constant, {}, r"\alpha = \alpha_0"),
    "inverse_time": _Kind(
        _inverse_time,
        {"decay_rate": 1.0, "interval": 1},
        r"\alpha = \frac{\alpha_0}{1 + \text{decay\_rate} \cdot"
        r" \lfloor \text{epoch} / \text{interval} \rfloor}",
    ),
    "exponential": _Kind(
        _exponential, {"base": 0.95}, r"\alpha = \alpha_0 \cdot \text{base}^{\text{epoch}}"
    ),
    "inverse_sqrt": _Kind(
        _inverse_sqrt,
        {"k": 1.0},
        r"\alpha = \frac{k}{\sqrt{\max(\text{epoch}, 1)}} \, \alpha_0",
    ),
    "staircase": _Kind(
        _staircase,
        {"factor": 0.5, "every": 10},
        r"\alpha = \alpha_0 \cdot \text{factor}^{\lfloor \text{epoch} / \text{every} \rfloor}",
    ),
    "polynomial": _Kind(
        _polynomial,
        {"end": 0.0, "total": 100, "power": 1.0},
        r"\alpha = (\alpha_0 - \text{end}) \left(1 - \frac{\min(\text{epoch}, \text{total})}"
        r"{\text{total}}\right)^{\text{power}} + \text{end}",
    ),
}

#: Names accepted by make_schedule.
SCHEDULES: tuple[str, ...] = tuple(_KINDS)

# Allowed range of every schedule parameter: (test, what the value must be).
_PARAM_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "decay_rate": (lambda x: x >= 0, ">= 0"),
    "interval": (lambda x: x > 0, "> 0"),
    "base": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "k": (lambda x: x > 0, "> 0"),
    "factor": (lambda x: 0 < x <= 1, "in (0, 1]"),
    "every": (lambda x: x > 0, "> 0"),
    "end": (lambda x: x >= 0, ">= 0"),
    "total": (lambda x: x > 0, "> 0"),
    "power": (lambda x: x > 0, "> 0"),
}


def _check_finite_number(name: str, value: Any) -> float | int:
    """Return ``value`` as a Python int or float (so it serialises to JSON), if finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = int(value) if isinstance(value, (int, np.integer)) else float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


class Schedule:
    """A learning-rate schedule: ``schedule(alpha0, epoch) -> alpha``.

    ``name`` and ``params`` (every keyword parameter, defaults filled in; plain ints and
    floats) are all there is to it: ``make_schedule(s.name, **s.params)`` rebuilds it.
    Build one with :func:`make_schedule`.
    """

    __slots__ = ("_kind", "_name", "_params")

    def __init__(self, name: str, params: dict[str, float]):
        self._name = name
        self._kind = _KINDS[name]
        self._params = dict(params)

    @property
    def name(self) -> str:
        return self._name

    @property
    def params(self) -> dict[str, float]:
        """A copy of the keyword parameters, e.g. ``{"factor": 0.5, "every": 10}``."""
        return dict(self._params)

    def __call__(self, alpha0: float, epoch: float) -> float:
        """α at ``epoch`` (≥ 0, may be fractional) for a starting learning rate ``alpha0`` > 0."""
        alpha0 = _check_finite_number("alpha0", alpha0)
        if alpha0 <= 0:
            raise ValueError(f"alpha0 must be > 0, got {alpha0}")
        epoch = _check_finite_number("epoch", epoch)
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        return float(self._kind.formula(float(alpha0), float(epoch), **self._params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return (self.name, self._params) == (other.name, other._params)

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self._params.items()))))

    def __repr__(self) -> str:
        settings = "".join(f", {key}={value!r}" for key, value in self._params.items())
        return f"make_schedule({self.name!r}{settings})"


def make_schedule(name: str, **params: float) -> Schedule:
    """Build schedule ``name`` (one of ``SCHEDULES``); omitted parameters take defaults.

    Parameters and defaults: inverse_time ``decay_rate=1.0, interval=1``; exponential
    ``base=0.95``; inverse_sqrt ``k=1.0``; staircase ``factor=0.5, every=10``;
    polynomial ``end=0.0, total=100, power=1.0``. Unknown names, unknown parameters,
    non-finite or out-of-range values raise ValueError naming the value.
    """
    kind = _KINDS.get(name)
    if kind is None:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    unknown = sorted(set(params) - set(kind.defaults))
    if unknown:
        accepted = ", ".join(kind.defaults) or "none"
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for schedule {name!r} (accepts: {accepted})"
        )
    checked = {}
    for key, default in kind.defaults.items():
        value = _check_finite_number(key, params.get(key, default))
        is_valid, requirement = _PARAM_RULES[key]
        if not is_valid(value):
            raise ValueError(f"{key} must be {requirement}, got {value}")
        checked[key] = value
    return Schedule(name, checked)


def schedule_formula(name: str) -> str:
    """The formula of schedule ``name`` as LaTeX (for ``st.latex``)."""
    if name not in _KINDS:
        raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
    return _KINDS[name].latex


def preview(schedule: Schedule, alpha0: float, epochs: int) -> np.ndarray:
    """α at epochs 0, 1, ..., epochs − 1, shape ``(epochs,)``, float64."""
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ValueError(f"epochs must be an integer >= 0, got {epochs!r}")
    return np.array([schedule(alpha0, epoch) for epoch in range(epochs)], dtype=np.float64)
