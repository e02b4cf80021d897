"""What a caviar search samples: each hyperparameter's range on its own scale.

A :class:`SearchSpace` is a tuple of :class:`Dimension` (name, low, high, searched or
not) in the course's order of importance ("Hyperparameter tuning"):

1. α, the learning rate;
2. β (momentum's, Adam's β₁), hidden units, mini-batch size;
3. layers, α decay (and L2 λ, which the course does not rank).

Each name has one scale (:data:`HYPERPARAMETERS`), the one the notes give it:

- ``log``: v = 10^r, r uniform (α, decay rate, λ): every decade gets an equal share;
- ``beta``: v = 1 − 10^r (β): what counts is 1/(1−β), the steps averaged over;
- ``pow2``: v = 2^k, k a uniform integer (hidden units, mini-batch size);
- ``int``: v uniform among the integers (layers).

A *point* is ``{name: value}`` for the searched dimensions; :meth:`SearchSpace.config_for`
turns a point into the trial's :class:`dlcore.hparams.RunConfig` (the run's config with
those values). Random draws use :mod:`dlcore.sampling`; :meth:`SearchSpace.suggest` asks
an Optuna-style trial (anything with ``suggest_float`` / ``suggest_int``) on the same
scales; :meth:`SearchSpace.narrowed` is coarse to fine around the best points.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dlcore.hparams import RunConfig
from dlcore.sampling import narrow_range, sample_beta, sample_log_uniform


@dataclass(frozen=True)
class Hyperparameter:
    """What a searchable name means: its label, scale, tier of importance, default range
    and a line on why it sits where it does."""

    label: str
    scale: str
    tier: int
    low: float
    high: float
    note: str


#: Every searchable hyperparameter, in the course's order of importance.
HYPERPARAMETERS: dict[str, Hyperparameter] = {
    "lr": Hyperparameter(
        "α (learning rate)", "log", 1, 1e-4, 1e-1,
        "Tune first: it matters most. α = 10^r, so 1e-4…1e-3 gets as many trials as "
        "1e-2…1e-1."),
    "beta": Hyperparameter(
        "β (momentum, Adam's β₁)", "beta", 2, 0.9, 0.999,
        "Second. β = 1 − 10^r: 1/(1−β) is the number of steps averaged, and it moves "
        "fastest near 1, so 0.9…0.99 and 0.99…0.999 get half the trials each. "
        "(RMSprop: its β₂.)"),
    "hidden_units": Hyperparameter(
        "hidden units (per layer)", "pow2", 2, 16, 256,
        "Second. Powers of two; every hidden layer gets this width. Changes the "
        "architecture: such a trial is babysat as a new run, not a branch."),
    "batch_size": Hyperparameter(
        "mini-batch size", "pow2", 2, 16, 256,
        "Second. Powers of two: larger batches give smoother steps, fewer per epoch."),
    "layers": Hyperparameter(
        "hidden layers", "int", 3, 1, 3,
        "Third. Changes the architecture (a trial becomes a new run)."),
    "decay_rate": Hyperparameter(
        "α decay rate", "log", 3, 1e-3, 1.0,
        "Third. α = α₀ / (1 + rate·epoch) (inverse-time decay), rate = 10^r."),
    "l2": Hyperparameter(
        "L2 λ", "log", 3, 1e-5, 1e-1,
        "Not in the course's ranking: tune it once the model overfits. λ = 10^r."),
}

#: Which of the optimizer's hyperparameters "beta" is (gradient descent has none).
BETA_KEYS = {"momentum": "beta", "nesterov": "beta", "adam": "beta1", "rmsprop": "beta2"}
#: Config fields a trial shares with its run when it can become a branch of it.
ARCHITECTURE_FIELDS = ("dataset", "dataset_params", "dev_fraction", "hidden", "activation",
                       "batchnorm", "bn_position", "init", "seed", "dtype")
#: Names whose values change the network's shapes.
ARCHITECTURE_NAMES = ("hidden_units", "layers")
MAX_LAYERS = 20
MAX_UNITS = 4096


def _is_power_of_two(value) -> bool:
    return float(value).is_integer() and value >= 1 and int(value) & (int(value) - 1) == 0


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter's range: ``low ≤ v ≤ high`` on its scale; ``searched`` says
    whether trials sample it (otherwise they keep the run's value).

    Checked on construction: ValueError naming the hyperparameter and what is wrong.
    ``pow2`` and ``int`` ranges may be a single value (low == high).
    """

    name: str
    low: float
    high: float
    searched: bool = True

    def __post_init__(self):
        if self.name not in HYPERPARAMETERS:
            raise ValueError(f"unknown hyperparameter {self.name!r}; known: "
                             f"{', '.join(HYPERPARAMETERS)}")
        label, scale = self.label, self.scale
        for end in ("low", "high"):
            value = getattr(self, end)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                    or not math.isfinite(value):
                raise ValueError(f"{label}: {end} must be a finite number, got {value!r}")
        if scale in ("log", "beta"):
            try:  # the sampler's own checks, so a range that passes here samples
                (sample_log_uniform if scale == "log" else sample_beta)(
                    self.low, self.high, rng=0)
            except ValueError as error:
                raise ValueError(f"{label}: {error}") from None
            object.__setattr__(self, "low", float(self.low))
            object.__setattr__(self, "high", float(self.high))
            return
        if scale == "pow2" and not (_is_power_of_two(self.low) and _is_power_of_two(self.high)):
            raise ValueError(f"{label}: low and high must be powers of two (1, 2, 4, …), got "
                             f"{self.low:g} and {self.high:g}")
        if not (float(self.low).is_integer() and float(self.high).is_integer()
                and 1 <= self.low <= self.high):
            raise ValueError(f"{label}: need whole numbers 1 ≤ low ≤ high, got {self.low:g} "
                             f"and {self.high:g}")
        limit = MAX_LAYERS if self.name == "layers" else MAX_UNITS
        if self.name in ARCHITECTURE_NAMES and self.high > limit:
            raise ValueError(f"{label}: at most {limit}, got {self.high:g}")
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))

    @property
    def label(self) -> str:
        return HYPERPARAMETERS[self.name].label

    @property
    def scale(self) -> str:
        return HYPERPARAMETERS[self.name].scale

    def describe(self) -> str:
        """The range as the notes write it: "α = 10^r, r ∈ [-4, -1]"."""
        low, high = self.low, self.high
        if self.scale == "log":
            return f"10^r, r ∈ [{math.log10(low):.3g}, {math.log10(high):.3g}]"
        if self.scale == "beta":
            return f"1 − 10^r, r ∈ [{math.log10(1 - high):.3g}, {math.log10(1 - low):.3g}]"
        if self.scale == "pow2":
            return f"2^k, k ∈ {{{int(math.log2(low))}, …, {int(math.log2(high))}}}"
        return f"{{{low}, …, {high}}}"

    def coordinate(self, value) -> float:
        """Where ``value`` lies on the scale it is sampled uniformly on: r = log10 v
        (log), log10(1 − v) (beta), k = log2 v (pow2), v (int). Charts plot this."""
        value = float(value)
        if self.scale == "log":
            return math.log10(value)
        if self.scale == "beta":
            return math.log10(1.0 - value)
        return math.log2(value) if self.scale == "pow2" else value

    def value_at(self, coordinate: float) -> float:
        """The inverse of :meth:`coordinate`."""
        if self.scale == "log":
            return 10.0**coordinate
        if self.scale == "beta":
            return 1.0 - 10.0**coordinate
        return 2.0**coordinate if self.scale == "pow2" else coordinate

    # -- sampling ------------------------------------------------------------------------

    def sample(self, n: int, rng: np.random.Generator) -> list:
        """n values drawn on this dimension's scale (Python floats or ints)."""
        if self.scale == "log":
            return [float(v) for v in sample_log_uniform(self.low, self.high, n, rng)]
        if self.scale == "beta":
            return [float(v) for v in sample_beta(self.low, self.high, n, rng)]
        if self.scale == "pow2":
            k = rng.integers(int(math.log2(self.low)), int(math.log2(self.high)) + 1, n)
            return [int(2**int(e)) for e in k]
        return [int(v) for v in rng.integers(self.low, self.high + 1, n)]

    def suggest(self, trial):
        """One value asked of an Optuna trial, on the same scale as :meth:`sample`.

        Optuna sees what it samples uniformly: log10 for ``log`` (``log=True``), 1 − β on
        a log axis for ``beta``, the exponent k for ``pow2``.
        """
        if self.scale == "log":
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        if self.scale == "beta":
            return 1.0 - trial.suggest_float(f"1 - {self.name}", 1.0 - self.high,
                                             1.0 - self.low, log=True)
        if self.scale == "pow2":
            return 2 ** trial.suggest_int(f"log2 {self.name}", int(math.log2(self.low)),
                                          int(math.log2(self.high)))
        return trial.suggest_int(self.name, self.low, self.high)

    def narrowed(self, values: Sequence, scores: Sequence, margin: float = 0.5) -> Dimension:
        """Coarse to fine: the range around ``values`` (the best trials' values), widened
        by ``margin`` × their spread on this scale, within the current range.

        Integer scales narrow the exponent (pow2) or the value (int) and round outward.
        """
        if self.scale in ("log", "beta"):
            low, high = narrow_range(values, scores, self.low, self.high, self.scale,
                                     keep=1.0, margin=margin)
            return dataclasses.replace(self, low=low, high=high)
        to_line = math.log2 if self.scale == "pow2" else float
        low, high = to_line(self.low), to_line(self.high)
        if low < high:
            low, high = narrow_range([to_line(v) for v in values], scores, low, high,
                                     "linear", keep=1.0, margin=margin)
        low, high = math.floor(low + 1e-9), math.ceil(high - 1e-9)
        back = (lambda k: 2**k) if self.scale == "pow2" else int
        return dataclasses.replace(self, low=back(low), high=back(high))


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions of a search, in the order of :data:`HYPERPARAMETERS`."""

    dimensions: tuple[Dimension, ...]

    def __post_init__(self):
        dims = tuple(self.dimensions)
        names = [d.name for d in dims]
        if len(set(names)) != len(names):
            raise ValueError(f"a hyperparameter appears twice in the space: {names}")
        order = list(HYPERPARAMETERS)
        object.__setattr__(self, "dimensions",
                           tuple(sorted(dims, key=lambda d: order.index(d.name))))

    @classmethod
    def for_run(cls, config: RunConfig, n_train: int) -> SearchSpace:
        """The space pre-filled for a run: every hyperparameter at its default range;
        tiers 1 and 2 searched, tier 3 not. No β for gradient descent; the mini-batch
        range stops at the training set's size."""
        dims = []
        for name, spec in HYPERPARAMETERS.items():
            low, high = spec.low, spec.high
            if name == "beta" and config.optimizer not in BETA_KEYS:
                continue
            if name == "batch_size":
                largest = 2 ** int(math.log2(max(1, n_train)))
                low, high = min(low, largest), min(high, largest)
            dims.append(Dimension(name, low, high, searched=spec.tier <= 2))
        return cls(tuple(dims))

    @property
    def searched(self) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.searched)

    def __getitem__(self, name: str) -> Dimension:
        for dimension in self.dimensions:
            if dimension.name == name:
                return dimension
        raise KeyError(name)

    def check_for(self, config: RunConfig, n_train: int) -> None:
        """ValueError if the searched ranges can't apply to this run."""
        if not self.searched:
            raise ValueError("Choose at least one hyperparameter to search.")
        names = {d.name for d in self.searched}
        if "beta" in names and config.optimizer not in BETA_KEYS:
            raise ValueError(f"{config.optimizer} has no β to search; drop β from the space")
        if "batch_size" in names and self["batch_size"].high > n_train:
            raise ValueError(f"mini-batch size: at most the {n_train} training examples, got "
                             f"{self['batch_size'].high}")

    # -- points ----------------------------------------------------------------------------

    def sample(self, n: int, seed: int) -> list[dict]:
        """n random points, reproducible from ``seed``: each dimension drawn on its scale."""
        rng = np.random.default_rng(seed)
        columns = {d.name: d.sample(n, rng) for d in self.searched}
        return [{name: column[i] for name, column in columns.items()} for i in range(n)]

    def suggest(self, trial) -> dict:
        """One point asked of an Optuna trial (define-by-run)."""
        return {d.name: d.suggest(trial) for d in self.searched}

    def narrowed(self, points: Sequence[Mapping], scores: Sequence[float],
                 best: int) -> SearchSpace:
        """Coarse to fine: every searched range narrowed around the ``best`` highest-scoring
        points (:func:`dlcore.sampling.narrow_range` on each scale). Points without a
        finite score are left out; ValueError if none has one."""
        scored = [(float(s), p) for s, p in zip(scores, points, strict=True)
                  if s is not None and math.isfinite(s)]
        if not scored:
            raise ValueError("no trial has a dev accuracy yet, so there is nothing to "
                             "narrow around")
        if best < 1:
            raise ValueError(f"narrow around at least 1 trial, got {best}")
        scored.sort(key=lambda pair: -pair[0])  # stable: ties keep the trials' order
        top = scored[:best]
        kept_scores = [s for s, _ in top]
        dims = tuple(d.narrowed([p[d.name] for _, p in top], kept_scores) if d.searched
                     else d for d in self.dimensions)
        return SearchSpace(dims)

    def config_for(self, base: RunConfig, point: Mapping) -> RunConfig:
        """The trial's config: ``base`` with the point's values (a value the point lacks
        keeps base's). hidden_units gives every hidden layer that width; layers alone
        keeps base's widths, repeating the last (64 if base has none)."""
        changes: dict = {}
        if "lr" in point:
            changes["lr"] = float(point["lr"])
        if "beta" in point:
            key = BETA_KEYS[base.optimizer]
            changes["optimizer_params"] = {**base.optimizer_params, key: float(point["beta"])}
        if "batch_size" in point:
            changes["batch_size"] = int(point["batch_size"])
        if "l2" in point:
            changes["l2"] = float(point["l2"])
        if "decay_rate" in point:
            changes["schedule"] = "inverse_time"
            changes["schedule_params"] = {"decay_rate": float(point["decay_rate"])}
        if "hidden_units" in point or "layers" in point:
            layers = int(point.get("layers", len(base.hidden)))
            if "hidden_units" in point:
                hidden = (int(point["hidden_units"]),) * layers
            else:
                widths = tuple(base.hidden) or (64,)
                hidden = (widths + widths[-1:] * layers)[:layers]
            changes["hidden"] = hidden
        return dataclasses.replace(base, **changes)

    # -- files ------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"dimensions": [dataclasses.asdict(d) for d in self.dimensions]}

    @classmethod
    def from_dict(cls, d: Mapping) -> SearchSpace:
        """ValueError for anything that is not a space :meth:`to_dict` could write."""
        try:
            return cls(tuple(Dimension(**dim) for dim in d["dimensions"]))
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a search space ({error})") from None


def same_architecture(a: RunConfig, b: RunConfig) -> bool:
    """Whether a state trained with config ``a`` can continue as a branch of a run of
    ``b``: the same data, split, seed, shapes and dtype."""
    return all(getattr(a, f) == getattr(b, f) for f in ARCHITECTURE_FIELDS)
