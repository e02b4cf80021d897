"""What a run is (``RunConfig``) and the hyperparameters that change while it trains.

- :class:`RunConfig` fixes a run for its life: data, architecture, seed, dtype, and the
  *starting* hyperparameters. ``RunConfig()`` alone is a valid run on digits.
- :func:`validate_hparams` checks a set of live changes against the current values and
  raises ``ValueError`` naming the first bad key and value. Every path that changes
  hyperparameters (``Trainer.update``, rollbacks with changes, sandboxes, restored
  checkpoints) goes through it.
- :func:`build_optimizer` and :func:`switched_optimizer` turn hyperparameters into an
  optimizer, with the policy for its moments when the kind of optimizer changes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from dlcore.optim import Optimizer, make_optimizer
from dlcore.retention import RetentionPolicy
from dlcore.schedules import make_schedule

#: Each optimizer's own hyperparameters (besides α).
OPTIMIZER_HPARAMS = {
    "gd": (),
    "momentum": ("beta",),
    "nesterov": ("beta",),
    "rmsprop": ("beta2", "eps"),
    "adam": ("beta1", "beta2", "eps"),
}
#: What a decay schedule's "epoch" counts: completed epochs, or steps (on a small data
#: set an epoch is a few steps, and a per-epoch decay collapses α in seconds).
SCHEDULE_UNITS = ("epochs", "steps")
#: Settings of the run that ``update()`` changes but that are not hyperparameters of the
#: model: no checkpoint, no event. speed_limit: max steps/s (None: unlimited);
#: autopilot: let the assistant apply its own suggestions;
#: retention: which periodic checkpoints are kept, and how often one is written
#: (a :class:`dlcore.retention.RetentionPolicy` as a dict).
RUN_SETTINGS = ("speed_limit", "autopilot", "retention")
#: The hyperparameters every checkpoint holds; ones added since may be missing from older
#: files, and take the run config's value then.
REQUIRED_HPARAMS = frozenset({"optimizer", "lr", "beta", "beta1", "beta2", "eps", "schedule",
                              "schedule_params", "batch_size", "l2", "keep_prob",
                              "bn_momentum", "eval_every"})
#: Changing these changes the optimizer (its kind or its own hyperparameters).
OPTIMIZER_KEYS = frozenset({"optimizer", "lr", *(k for ks in OPTIMIZER_HPARAMS.values()
                                                 for k in ks)})


@dataclass(frozen=True)
class RunConfig:
    """What a run is. Everything but the hyperparameters is fixed for its life.

    ``dataset`` is "digits", "mnist", "spirals", "blobs" or a path to a data file, copied
    into the run's folder so the run stays self-contained, or with ``copy_data=False``
    (a large file in the data folder) read where it is, checked against the fingerprint
    taken at creation; ``dataset_name`` is what the pages call it (the file's own name);
    ``dataset_params`` go to the generator (e.g. ``{"n_samples": 2000}``).
    ``eval_share``: the most of the training time evaluations may take (1: evaluate at
    every multiple of ``eval_every`` however long it takes).
    The fields from ``optimizer`` on are the *starting* hyperparameters;
    ``update()`` changes them live.
    """

    dataset: str = "digits"
    dataset_params: dict = field(default_factory=dict)
    dataset_name: str = ""
    copy_data: bool = True
    dataset_fingerprint: dict = field(default_factory=dict)
    dev_fraction: float = 0.2
    hidden: tuple = (64, 32)
    activation: str = "relu"
    batchnorm: bool = True
    bn_position: str = "before"
    init: str = "he"
    seed: int = 0
    dtype: str = "float64"
    optimizer: str = "adam"
    optimizer_params: dict = field(default_factory=dict)
    lr: float = 1e-3
    batch_size: int = 64
    schedule: str = "constant"
    schedule_params: dict = field(default_factory=dict)
    schedule_unit: str = "epochs"
    l2: float = 0.0
    l1: float = 0.0
    keep_prob: float = 1.0
    bn_momentum: float = 0.9
    eval_every: int = 50
    eval_share: float = 0.05
    checkpoint_every: int = 0
    retention: dict = field(default_factory=dict)
    divergence_factor: float = 10.0

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not 0.0 < self.dev_fraction < 1.0:
            raise ValueError(f"dev_fraction must be in (0, 1), got {self.dev_fraction!r}")
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise ValueError(
                f"checkpoint_every must be an integer ≥ 0, got {self.checkpoint_every!r}"
            )
        if not (isinstance(self.divergence_factor, (int, float)) and self.divergence_factor > 1):
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor!r}")
        RetentionPolicy.from_dict(self.retention)  # the policy's defaults fill what is left out
        if not (isinstance(self.eval_share, (int, float)) and 0 < self.eval_share <= 1):
            raise ValueError(f"eval_share must be in (0, 1], got {self.eval_share!r}")

    def initial_hparams(self) -> dict:
        """The live hyperparameters a run starts with (every key ``update()`` knows)."""
        hparams = {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "beta": 0.9,
            "beta1": 0.9,
            "beta2": 0.999,
            "eps": 1e-8,
            "schedule": self.schedule,
            "schedule_params": dict(self.schedule_params),
            "schedule_unit": self.schedule_unit,
            "batch_size": self.batch_size,
            "l2": self.l2,
            "l1": self.l1,
            "keep_prob": self.keep_prob,
            "bn_momentum": self.bn_momentum,
            "eval_every": self.eval_every,
        }
        hparams.update(self.optimizer_params)
        return hparams

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RunConfig fields: {unknown}")
        return cls(**d)


def check_number(name, value, low=None, high=None, low_open=False, high_open=False,
                 integer=False):
    """One numeric value, checked: returned as float (or int); ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        finite = math.isfinite(float(value))
    except OverflowError:  # an int beyond float's range, e.g. 10**400
        finite = False
    if not finite:
        raise ValueError(f"{name} must be finite, got {value!r}")
    if integer and float(value) != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    value = int(value) if integer else float(value)
    if low is not None and (value < low or (low_open and value == low)):
        bracket = "(" if low_open else "["
        raise ValueError(
            f"{name} must be in {bracket}{low}, {high if high is not None else '∞'}"
            f"{')' if high_open or high is None else ']'}, got {value!r}"
        )
    if high is not None and (value > high or (high_open and value == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '≤'} {high}, got {value!r}")
    return value


def _choice(name: str, options) -> Callable:
    def check(value, n_train):
        if not isinstance(value, str) or value not in options:  # [] is unhashable
            raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
        return value
    return check


def _flag(name: str) -> Callable:
    def check(value, n_train):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return bool(value)
    return check


def _schedule_name(value, n_train):
    if not isinstance(value, str):
        raise ValueError(f"schedule must be a name, got {value!r}")
    return value


def _schedule_params(value, n_train):
    if not isinstance(value, Mapping):
        raise ValueError(f"schedule_params must be a dict, got {value!r}")
    return dict(value)


def _speed_limit(value, n_train):
    if value is None or (not isinstance(value, bool) and value == 0):
        return None
    return check_number("speed_limit", value, 0, low_open=True)


def _beta(name):
    return lambda value, n_train: check_number(name, value, 0, 1, high_open=True)


#: key -> check(value, n_train) returning the normalised value or raising ValueError.
_CHECKS: dict[str, Callable] = {
    "optimizer": _choice("optimizer", OPTIMIZER_HPARAMS),
    "lr": lambda v, n: check_number("lr (α)", v, 0, low_open=True),
    "beta": _beta("beta"),
    "beta1": _beta("beta1"),
    "beta2": _beta("beta2"),
    "eps": lambda v, n: check_number("eps", v, 0, low_open=True),
    "schedule": _schedule_name,
    "schedule_params": _schedule_params,
    "schedule_unit": _choice("schedule_unit", SCHEDULE_UNITS),
    "batch_size": lambda v, n: check_number("batch_size", v, 1, n, integer=True),
    "l2": lambda v, n: check_number("l2 (λ)", v, 0),
    "l1": lambda v, n: check_number("l1 (λ₁)", v, 0),
    "keep_prob": lambda v, n: check_number("keep_prob", v, 0, 1, low_open=True),
    "bn_momentum": lambda v, n: check_number(
        "bn_momentum (β of the running averages)", v, 0, 1, high_open=True),
    "eval_every": lambda v, n: check_number("eval_every", v, 1, integer=True),
    "speed_limit": _speed_limit,
    "autopilot": _flag("autopilot"),
    "retention": lambda v, n: RetentionPolicy.from_dict(v).to_dict(),
    "carry_moments": _flag("carry_moments"),
}


def validate_hparams(changes: Mapping, current: Mapping, n_train: int) -> dict:
    """Check a set of hyperparameter changes against the current values.

    ``current`` holds the hyperparameters (and run settings) as they are. Returns the
    normalised changes: only keys whose value really changes, except ``lr`` (which
    re-anchors the schedule even if equal), ``carry_moments`` and the run settings.
    A new ``schedule`` without ``schedule_params`` takes that schedule's defaults.
    Raises ``ValueError`` naming the first bad key and value.
    """
    allowed = set(current) | set(RUN_SETTINGS) | {"carry_moments"}
    unknown = sorted(set(changes) - allowed, key=str)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; known: {sorted(allowed)}")
    out = {key: _CHECKS[key](value, n_train) for key, value in changes.items()}
    if "schedule" in out and "schedule_params" not in out:
        out["schedule_params"] = {}
    merged = {**current, **out}
    # The schedule and optimizer must build with the merged values.
    try:
        if "schedule" in out or "schedule_params" in out:
            make_schedule(merged["schedule"], **merged["schedule_params"])
        if out.keys() & OPTIMIZER_KEYS:
            build_optimizer(merged)
    except (TypeError, OverflowError) as error:  # e.g. {1: 0.5} as parameters, or 10**400
        raise ValueError(f"invalid schedule or optimizer settings: {error}") from None
    always = ("lr", "carry_moments", *RUN_SETTINGS)
    return {k: v for k, v in out.items() if k in always or current.get(k) != v}


def build_optimizer(hparams: Mapping) -> Optimizer:
    """The optimizer ``hparams["optimizer"]`` with α and its own hyperparameters, fresh."""
    name = hparams["optimizer"]
    return make_optimizer(name, hparams["lr"], **{k: hparams[k] for k in OPTIMIZER_HPARAMS[name]})


def switched_optimizer(old: Optimizer, hparams: Mapping, params, carry_moments: bool):
    """The optimizer after a change of the optimizer's hyperparameters (the policy).

    The same kind keeps its moments and t (only a β or ε changed); another kind starts
    fresh (t = 0) unless ``carry_moments``, which carries what transfers
    (:func:`carried_state`).
    """
    new = build_optimizer(hparams)
    if new.name == old.name:
        new.load_state_dict(old.state_dict())
    elif carry_moments:
        new.load_state_dict(carried_state(old, new, params))
    return new


def carried_state(old: Optimizer, new: Optimizer, params) -> dict:
    """The state ``new`` starts from when an optimizer switch carries what transfers.

    A moment carries over where both optimizers have one of the same meaning:
    momentum's v and Adam's first moment v, RMSprop's s and Adam's second
    moment s. What does not transfer starts at zero, and t keeps counting
    from the old optimizer's t, so Adam's bias correction treats the carried
    moments as the long averages they are. (Carrying momentum's v into Adam
    leaves s = 0: the first steps are then much larger. The dashboard shows
    the effective step before and after, so that jump is visible.)
    """
    old_state = old.state_dict()
    moments = {}
    for name, param in params.items():
        for moment in new.moment_names:
            carried = old_state["moments"].get(f"{name}/{moment}")
            moments[f"{name}/{moment}"] = carried if carried is not None else np.zeros_like(param)
    return {"t": old_state["t"] if old_state["moments"] else 0, "moments": moments}
