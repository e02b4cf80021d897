"""Learning-rate decay schedules: α as a pure function of (α0, epoch) plus a small config.

    constant       α0
    inverse_time   α0 / (1 + decay_rate · ⌊epoch / interval⌋)
    exponential    α0 · base^epoch
    inverse_sqrt   α0 · k / √max(epoch, 1)
    staircase      α0 · factor^⌊epoch / every⌋
    polynomial     (α0 − end) · (1 − min(epoch, total) / total)^power + end
    piecewise      α0 · factors[i],  i = how many boundaries are ≤ epoch

Every schedule is affine in α0 (the trainer re-anchors one by evaluating it at α0 = 1
and 2). ``epoch`` is a number ≥ 0 and may be fractional (the trainer passes steps /
steps per epoch). A schedule keeps no counter: the trainer owns the one step counter
and the anchor (α0, epoch offset) a schedule is applied from.

    >>> schedule = make_schedule("staircase", factor=0.5, every=10)
    >>> schedule(0.1, 25)
    0.025
    >>> make_schedule(schedule.name, **schedule.params) == schedule   # JSON round trip
    True
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SCHEDULES", "Schedule", "half_life_params", "make_schedule", "preview", "preview_over",
           "schedule_formula"]


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


def _piecewise(alpha0: float, epoch: float, *, boundaries: tuple[float, ...],
               factors: tuple[float, ...]) -> float:
    """α0·factors[i] on the i-th interval: [0, b₀) → factors[0], [b₀, b₁) → factors[1],
    ..., [b_last, ∞) → factors[-1].

    Intervals are closed on the left: at epoch == boundaries[i] the next factor
    already applies. Keras' ``PiecewiseConstantDecay`` closes them on the right
    (``step <= boundaries[0]`` still gets ``values[0]``), counts optimizer steps
    rather than epochs, and holds absolute learning rates. Here the factors are
    relative to α0, so the schedule is affine in α0 and composes with a live α
    change: the trainer re-anchors it there (α0 = α_new / factors[0], epochs
    counted from the change) and the same steps follow, scaled to the new α.
    """
    return alpha0 * factors[bisect.bisect_right(boundaries, epoch)]


@dataclass(frozen=True)
class _Kind:
    formula: Callable[..., float]
    defaults: dict[str, Any]
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
        r"""\begin{aligned}
\alpha &= (\alpha_0 - \text{end})\, r^{\text{power}} + \text{end} \\
r &= 1 - \min(\text{epoch}, \text{total}) / \text{total}
\end{aligned}""",
    ),
    "piecewise": _Kind(
        _piecewise,
        {"boundaries": (10.0, 20.0), "factors": (1.0, 0.1, 0.01)},
        r"""\begin{aligned}
\alpha &= \alpha_0 \cdot \text{factors}[i] \\
i &= \#\{\, b \in \text{boundaries} : b \le \text{epoch} \,\}
\end{aligned}""",
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

# Parameters that are sequences of numbers: the range of each element.
_SEQUENCE_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    "boundaries": (lambda x: x > 0, "> 0"),
    "factors": (lambda x: 0 < x <= 1, "in (0, 1]"),
}
MAX_BOUNDARIES = 100


def _check_finite_number(name: str, value: Any) -> float | int:
    """Return ``value`` as a Python int or float (so it serialises to JSON), if finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = int(value) if isinstance(value, (int, np.integer)) else float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def _check_sequence(name: str, value: Any) -> tuple[float, ...]:
    """``value`` (a list, tuple or 1-D array of finite numbers in range) as floats."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"{name} must be a list of numbers, got {value!r}")
    is_valid, requirement = _SEQUENCE_RULES[name]
    numbers = []
    for i, element in enumerate(value):
        number = float(_check_finite_number(f"{name}[{i}]", element))
        if not is_valid(number):
            raise ValueError(f"{name}[{i}] must be {requirement}, got {number}")
        numbers.append(number)
    return tuple(numbers)


def _check_pieces(boundaries: tuple[float, ...], factors: tuple[float, ...]) -> None:
    """Raise ValueError unless the piecewise schedule's sequences fit together."""
    if not 1 <= len(boundaries) <= MAX_BOUNDARIES:
        raise ValueError(
            f"boundaries must hold 1 to {MAX_BOUNDARIES} epochs, got {len(boundaries)}: "
            f"{list(boundaries)}"
        )
    if any(b >= c for b, c in itertools.pairwise(boundaries)):
        raise ValueError(f"boundaries must be strictly increasing, got {list(boundaries)}")
    if len(factors) != len(boundaries) + 1:
        raise ValueError(
            f"factors needs len(boundaries) + 1 = {len(boundaries) + 1} values, "
            f"got {len(factors)}: {list(factors)}"
        )


class Schedule:
    """A learning-rate schedule: ``schedule(alpha0, epoch) -> alpha``.

    ``name`` and ``params`` (every keyword parameter, defaults filled in; plain ints,
    floats and lists of floats) are all there is to it:
    ``make_schedule(s.name, **s.params)`` rebuilds it, also after a JSON round trip.
    Build one with :func:`make_schedule`.
    """

    __slots__ = ("_kind", "_name", "_params")

    def __init__(self, name: str, params: dict[str, Any]):
        self._name = name
        self._kind = _KINDS[name]
        # sequences as tuples: immutable, so a schedule stays hashable and unchanged
        self._params = {
            key: tuple(value) if isinstance(value, (list, tuple)) else value
            for key, value in params.items()
        }

    @property
    def name(self) -> str:
        return self._name

    @property
    def params(self) -> dict[str, Any]:
        """A copy of the keyword parameters, JSON-native: e.g. ``{"factor": 0.5, "every":
        10}``, or ``{"boundaries": [10.0, 20.0], "factors": [1.0, 0.1, 0.01]}``."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in self._params.items()
        }

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
        settings = "".join(f", {key}={value!r}" for key, value in self.params.items())
        return f"make_schedule({self.name!r}{settings})"


def make_schedule(name: str, **params: Any) -> Schedule:
    """Build schedule ``name`` (one of ``SCHEDULES``); omitted parameters take defaults.

    Parameters and defaults: inverse_time ``decay_rate=1.0, interval=1``; exponential
    ``base=0.95``; inverse_sqrt ``k=1.0``; staircase ``factor=0.5, every=10``;
    polynomial ``end=0.0, total=100, power=1.0``; piecewise ``boundaries=(10, 20),
    factors=(1.0, 0.1, 0.01)`` (see :func:`_piecewise` for its half-open intervals):
    1 to 100 strictly increasing epochs > 0, and one factor in (0, 1] more than
    boundaries. Unknown names, unknown parameters, non-finite or out-of-range values
    raise ValueError naming the value.
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
        value = params.get(key, default)
        if key in _SEQUENCE_RULES:
            checked[key] = _check_sequence(key, value)
            continue
        value = _check_finite_number(key, value)
        is_valid, requirement = _PARAM_RULES[key]
        if not is_valid(value):
            raise ValueError(f"{key} must be {requirement}, got {value}")
        checked[key] = value
    if name == "piecewise":
        _check_pieces(checked["boundaries"], checked["factors"])
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


def preview_over(schedule: Schedule, alpha0: float, horizon: float,
                 points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(t, α)`` at ``points`` evenly spaced t in [0, horizon] (epochs or steps), float64."""
    if not (isinstance(horizon, (int, float)) and math.isfinite(horizon) and horizon > 0):
        raise ValueError(f"horizon must be a number > 0, got {horizon!r}")
    t = np.linspace(0.0, float(horizon), points)
    return t, np.array([schedule(alpha0, value) for value in t], dtype=np.float64)


def half_life_params(name: str, half_life: float) -> dict:
    """Parameters of schedule ``name`` under which α halves after ``half_life`` epochs
    (or steps): what a new schedule should start with, so that a decay is visible in the
    time a person watches rather than over in seconds on a small data set (where an epoch
    is a few steps) or never on a large one. Schedules without such a knob (constant,
    inverse_sqrt) get their defaults."""
    if not (isinstance(half_life, (int, float)) and math.isfinite(half_life) and half_life >= 1):
        raise ValueError(f"half_life must be a number ≥ 1, got {half_life!r}")
    h = float(half_life)
    scaled = {
        "inverse_time": {"decay_rate": 1.0 / h, "interval": 1},
        "exponential": {"base": 0.5 ** (1.0 / h)},
        "staircase": {"factor": 0.5, "every": h},
        "polynomial": {"end": 0.0, "total": 2.0 * h, "power": 1.0},
        "piecewise": {"boundaries": [h, 2.0 * h], "factors": [1.0, 0.5, 0.25]},
    }
    return make_schedule(name, **scaled.get(name, {})).params
