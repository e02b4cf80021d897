"""The training engine: one run, trained step by step in a background thread.

``Trainer(config, checkpoint_dir)`` creates a run; ``Trainer.open(checkpoint_dir)``
reopens the newest one. Its public methods are the only way anything changes a
run. They may be called from any thread: each becomes a command on a queue
that the worker drains between two training steps, so a change never lands in
the middle of a step. ``update`` and ``rollback`` validate in the caller's
thread first and raise ``ValueError`` (nothing is queued then).

The UI reads :meth:`Trainer.snapshot`, an immutable copy that shares the
append-only history arrays read-only (see :mod:`dlcore.history`).

On disk, a run is a folder ``<checkpoint_dir>/<run_id>/``::

    run.json                 the RunConfig (written once)
    dataset.csv|.npz         a copy of a user's data file, if the run uses one
    ckpt-000007.npz          checkpoints: complete state + metadata
    journal/000006.npz       history rows and events since the previous journal

Each journal chunk is written just before a checkpoint, so the curves of every
branch come back after a restart up to its newest checkpoint. Periodic checkpoints
write their two files in a short-lived thread while training goes on (at most one
write at a time); the worker lists such a checkpoint once it is on disk, and every
command, pause and later checkpoint waits for it first.

Branches: a run starts on branch 0. ``rollback(id)`` restores that checkpoint's
complete state and continues on a new branch; its history starts as a copy of
the lineage up to that step. Only the active branch ever grows, so every
branch's own rows are one contiguous block.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import math
import os
import queue
import shutil
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np

from dlcore import assistant
from dlcore import checkpoint as ckptio
from dlcore.data import MiniBatchIterator, prepare_dataset
from dlcore.history import Columns
from dlcore.network import Architecture, Network
from dlcore.optim import flat_span, make_optimizer
from dlcore.schedules import make_schedule

CHECKPOINT_FORMAT = "panda-checkpoint-v1"
JOURNAL_FORMAT = "panda-journal-v1"
OPTIMIZER_HPARAMS = {
    "gd": (),
    "momentum": ("beta",),
    "rmsprop": ("beta2", "eps"),
    "adam": ("beta1", "beta2", "eps"),
}
STATUSES = ("idle", "running", "paused", "diverged", "error", "stopped")
CHECKPOINT_KINDS = ("initial", "manual", "periodic", "pre-change", "rollback", "final")
MAX_NOTE_LENGTH = 500
# Settings of the run that update() changes but that are not hyperparameters of the
# model: no checkpoint, no event. speed_limit: max steps/s (None: unlimited);
# autopilot: let the assistant apply its own suggestions.
RUN_SETTINGS = ("speed_limit", "autopilot")
# BatchNorm history rows (units × statistics each) kept per branch; older rows
# are thinned to every other one when the limit is reached.
MAX_BN_HISTORY_ROWS = 2048
# β of the bias-corrected running average of the cost kept beside the raw cost.
COST_SMOOTHING = 0.98


# ---------------------------------------------------------------------------
# Configuration and hyperparameters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    """What a run is. Everything but the hyperparameters is fixed for its life.

    ``dataset`` is "digits", "spirals", "blobs" or a path to a CSV/NPZ file
    (copied into the run's folder so the run stays self-contained);
    ``dataset_params`` go to the generator (e.g. ``{"n_samples": 2000}``).
    The fields from ``optimizer`` on are the *starting* hyperparameters;
    ``update()`` changes them live.
    """

    dataset: str = "digits"
    dataset_params: dict = field(default_factory=dict)
    dev_fraction: float = 0.2
    hidden: tuple = (64, 32)
    activation: str = "relu"
    batchnorm: bool = True
    init: str = "he"
    seed: int = 0
    dtype: str = "float64"
    optimizer: str = "adam"
    optimizer_params: dict = field(default_factory=dict)
    lr: float = 1e-3
    batch_size: int = 64
    schedule: str = "constant"
    schedule_params: dict = field(default_factory=dict)
    l2: float = 0.0
    keep_prob: float = 1.0
    bn_momentum: float = 0.9
    eval_every: int = 50
    checkpoint_every: int = 0
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

    def initial_hparams(self) -> dict:
        hparams = {
            "optimizer": self.optimizer,
            "lr": self.lr,
            "beta": 0.9,
            "beta1": 0.9,
            "beta2": 0.999,
            "eps": 1e-8,
            "schedule": self.schedule,
            "schedule_params": dict(self.schedule_params),
            "batch_size": self.batch_size,
            "l2": self.l2,
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


def _number(name, value, low=None, high=None, low_open=False, high_open=False, integer=False):
    """Check one numeric hyperparameter; returns it as float (or int)."""
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


def validate_hparams(changes: Mapping, current: Mapping, n_train: int) -> dict:
    """Check a set of hyperparameter changes against the current values.

    Returns the normalised changes (only keys whose value really changes,
    except ``lr``, which re-anchors the schedule even if equal). Raises
    ``ValueError`` naming the first bad key and value.
    """
    allowed = set(current) | set(RUN_SETTINGS) | {"carry_moments"}
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {unknown}; known: {sorted(allowed)}")
    out = {}
    for key, value in changes.items():
        if key == "optimizer":
            if not isinstance(value, str) or value not in OPTIMIZER_HPARAMS:  # [] is unhashable
                raise ValueError(
                    f"optimizer must be one of {list(OPTIMIZER_HPARAMS)}, got {value!r}"
                )
        elif key == "lr":
            value = _number("lr (α)", value, 0, low_open=True)
        elif key in ("beta", "beta1", "beta2"):
            value = _number(key, value, 0, 1, high_open=True)
        elif key == "eps":
            value = _number("eps", value, 0, low_open=True)
        elif key == "schedule":
            if not isinstance(value, str):
                raise ValueError(f"schedule must be a name, got {value!r}")
        elif key == "schedule_params":
            if not isinstance(value, Mapping):
                raise ValueError(f"schedule_params must be a dict, got {value!r}")
            value = dict(value)
        elif key == "batch_size":
            value = _number("batch_size", value, 1, n_train, integer=True)
        elif key == "l2":
            value = _number("l2 (λ)", value, 0)
        elif key == "keep_prob":
            value = _number("keep_prob", value, 0, 1, low_open=True)
        elif key == "bn_momentum":
            value = _number("bn_momentum (β of the running averages)", value, 0, 1, high_open=True)
        elif key == "eval_every":
            value = _number("eval_every", value, 1, integer=True)
        elif key == "speed_limit":
            value = None if value in (None, 0) else _number("speed_limit", value, 0, low_open=True)
        elif key in ("autopilot", "carry_moments"):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{key} must be True or False, got {value!r}")
            value = bool(value)
        out[key] = value
    merged = {**current, **out}
    # The schedule and optimizer must build with the merged values.
    try:
        if "schedule" in out or "schedule_params" in out:
            if "schedule" in out and "schedule_params" not in out:
                merged["schedule_params"] = {}
                out["schedule_params"] = {}
            make_schedule(merged["schedule"], **merged["schedule_params"])
        if out.keys() & {"optimizer", "lr", "beta", "beta1", "beta2", "eps"}:
            _build_optimizer(merged)
    except (TypeError, OverflowError) as error:  # e.g. {1: 0.5} as parameters, or 10**400
        raise ValueError(f"invalid schedule or optimizer settings: {error}") from None
    always = ("lr", "carry_moments", *RUN_SETTINGS)
    return {k: v for k, v in out.items() if k in always or current.get(k) != v}


def _build_optimizer(hparams: Mapping):
    name = hparams["optimizer"]
    return make_optimizer(name, hparams["lr"], **{k: hparams[k] for k in OPTIMIZER_HPARAMS[name]})


def carried_state(old, new, params) -> dict:
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


def _norm(array: np.ndarray) -> float:
    """‖array‖₂ as one BLAS dot: ``np.linalg.norm``'s checks and reshapes cost more than
    the dot itself on the MNIST-like net's three weight matrices, every step.
    """
    return math.sqrt(float(np.vdot(array, array)))


def _json_safe(value):
    """Numbers and containers as plain JSON types (numpy scalars become Python)."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


# ---------------------------------------------------------------------------
# Snapshot: what the UI sees
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """An immutable picture of the run. Also readable as ``snap["status"]``.

    history: name -> read-only 1-D array for the active branch's lineage.
    Per step: ``step``, ``epoch``, ``cost`` (mini-batch J), ``lr`` (α used),
    ``grad_norm``, ``update_ratio/fc1`` ... (‖ΔW‖/‖W‖ per dense layer).
    Per evaluation: ``eval_step``, ``train_accuracy``, ``dev_accuracy``,
    ``train_cost``, ``dev_cost`` (inference mode) and
    ``dev_accuracy_train_mode`` (BatchNorm with the dev set's own statistics).
    """

    run_id: str
    status: str
    step: int
    epoch: int
    alpha: float
    hparams: Mapping
    speed_limit: float | None
    autopilot: bool
    steps_per_second: float
    history: Mapping
    events: tuple
    checkpoints: tuple
    damaged: tuple
    branch: int
    branches: Mapping
    bn: Mapping
    error: str | None
    error_traceback: str | None
    divergence: Mapping | None
    config: Mapping
    dataset: Mapping
    layers: tuple
    last_good_checkpoint: str | None
    checkpoint_dir: str
    decision_grid: Mapping | None

    def __getitem__(self, key):
        return getattr(self, key)


def _freeze(value):
    if isinstance(value, Mapping):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


# ---------------------------------------------------------------------------
# The Trainer
# ---------------------------------------------------------------------------


class _Reply:
    """A caller waiting for the worker to finish its command."""

    def __init__(self):
        self.done = threading.Event()
        self.result = None
        self.error: BaseException | None = None

    def wait(self, timeout=60.0):
        if not self.done.wait(timeout):
            raise TimeoutError("the training thread did not answer in time")
        if self.error is not None:
            raise self.error
        return self.result


@dataclass
class _Branch:
    """One branch's history (its lineage prefix included) and where it forked."""

    steps: Columns
    evals: Columns
    bn: Columns | None
    events: list
    parent_branch: int | None = None
    fork_step: int = 0
    from_checkpoint: str | None = None
    flushed_steps: int = 0  # rows already in journal files
    flushed_evals: int = 0
    flushed_bn_step: int = -1  # BN rows are thinned, so flushing goes by eval_step
    flushed_events: int = 0

    def flush_marks(self) -> tuple:
        """Where the rows and events not yet in a journal file begin."""
        return (self.flushed_steps, self.flushed_evals, self.flushed_bn_step, self.flushed_events)

    def rewind_flush_marks(self, marks: tuple) -> None:
        """Back to ``marks``: what a chunk that was not written held goes into the next one."""
        self.flushed_steps, self.flushed_evals, self.flushed_bn_step, self.flushed_events = marks


@dataclass
class _CheckpointWrite:
    """One checkpoint's files on their way to disk: its journal chunk, then itself.

    Prepared in the worker thread from copies, so :meth:`run` only does file I/O and may
    run in another thread. The worker settles it afterwards (``Trainer._settle``) with
    what it kept here: the branch, its flush marks before the chunk, the checkpoint event.
    """

    path: Path
    arrays: dict
    meta: dict  # its "info" is what the run lists once the files are on disk
    journal: tuple  # (path, arrays, meta) of the chunk
    branch: _Branch
    flush_marks: tuple  # the branch's, before the chunk
    event: Mapping | None  # the "checkpoint" event recorded for it (none before a change)
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    @property
    def info(self) -> dict:
        return self.meta["info"]

    def run(self) -> None:
        journal_path, journal_arrays, journal_meta = self.journal
        try:
            ckptio.write_atomic(journal_path, journal_arrays, journal_meta)
            ckptio.write_atomic(self.path, self.arrays, self.meta)
        except BaseException as error:
            # A failed write (disk full, I/O error) takes its journal chunk back too: the
            # chunk announces a checkpoint that doesn't exist, and its rows and events go
            # into the next chunk instead (else the next event would be skipped).
            with contextlib.suppress(OSError):
                journal_path.unlink(missing_ok=True)
            self.error = error
        finally:
            self.done.set()


class Trainer:
    """One training run, steered live. See the module docstring.

    When a write fails (disk full, I/O error), every earlier checkpoint stays as it was,
    no temporary file is left, and (docs/RELIABILITY.md):

    - a periodic checkpoint: training stops, status "error" with the message; it is
      written in the background, so the steps trained meanwhile (at most until the next
      periodic checkpoint) stand in the history, and start() resumes (the next checkpoint
      holds them all);
    - ``checkpoint()``: the OSError is raised to the caller; the run carries on;
    - ``update()``: its pre-change checkpoint failing means no part of the change applies
      (run settings included); status "error" with the message;
    - ``rollback()``: saving the branch being left fails -> OSError, nothing changed; the
      new branch's first checkpoint fails -> the rollback stands, status "error";
    - ``stop()``: the final checkpoint fails -> "stopped" with the error; reopening
      resumes from the last checkpoint written;
    - ``Trainer(...)``: the error is raised and no run folder is left behind.
    """

    # -- creation ----------------------------------------------------------

    def __init__(
        self,
        config: RunConfig | None = None,
        checkpoint_dir="checkpoints",
        run_id: str | None = None,
        *,
        _restore: bool = False,
    ):
        config = config or RunConfig()
        self._checkpoint_dir = Path(checkpoint_dir)
        self._lock = threading.RLock()
        self._commands: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None

        if _restore:
            self.run_id = run_id
            self._run_dir = self._checkpoint_dir / run_id
        else:
            self.run_id = run_id or _new_run_id(self._checkpoint_dir)
            if not isinstance(self.run_id, str) or not ckptio.RUN_ID.match(self.run_id):
                raise ValueError(
                    f"run id {self.run_id!r} may only hold letters, digits, '_', '.', '-'"
                )
            self._run_dir = self._checkpoint_dir / self.run_id
            self._run_dir.mkdir(parents=True, exist_ok=False)
        try:
            if not _restore:
                config = self._adopt_dataset_file(config)
                (self._run_dir / "journal").mkdir()
            self.config = config
            self._setup(config)
            if not _restore:
                self._evaluate()
                self._write_checkpoint("initial", "")
                # Last: list_runs only sees folders with a run.json, so a run that failed
                # or was killed before its first checkpoint is never the one open() picks.
                _write_json_atomic(self._run_dir / "run.json", {"config": config.to_dict()})
                self._status = "idle"
        except BaseException:
            if not _restore:
                shutil.rmtree(self._run_dir, ignore_errors=True)
            raise
        self._start_thread()

    def _adopt_dataset_file(self, config: RunConfig) -> RunConfig:
        if config.dataset in ("digits", "spirals", "blobs"):
            return config
        source = Path(config.dataset)
        suffix = source.suffix.lower()
        if suffix not in (".csv", ".npz"):
            raise ValueError(f"data file must be .csv or .npz, got {source.name!r}")
        if not source.is_file():
            raise ValueError(f"data file {str(source)!r} does not exist")
        # Validate before copying, so a bad file leaves no run behind.
        try:
            prepare_dataset(
                str(source),
                seed=config.seed,
                dev_fraction=config.dev_fraction,
                **config.dataset_params,
            )  # max_bytes: refused before the copy
        except ValueError:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            raise
        target = self._run_dir / f"dataset{suffix}"
        shutil.copyfile(source, target)
        return dataclasses.replace(config, dataset=target.name)

    def _dataset_source(self, config: RunConfig) -> str:
        if config.dataset in ("digits", "spirals", "blobs"):
            return config.dataset
        return str(self._run_dir / config.dataset)

    def _setup(self, config: RunConfig, data=None) -> None:
        """Build data, network, optimizer and empty history from the config."""
        self.data = data or prepare_dataset(
            self._dataset_source(config),
            seed=config.seed,
            dev_fraction=config.dev_fraction,
            dtype=config.dtype,
            **config.dataset_params,
        )
        self.architecture = Architecture(
            n_features=self.data.n_features,
            hidden=config.hidden,
            n_classes=self.data.n_classes,
            activation=config.activation,
            batchnorm=config.batchnorm,
            init=config.init,
            dtype=config.dtype,
        )
        self._net = Network(self.architecture, seed=config.seed)
        self._hparams = config.initial_hparams()
        validate_hparams(self._hparams, self._hparams, len(self.data.y_train))
        self._optimizer = _build_optimizer(self._hparams)
        self._schedule = make_schedule(
            self._hparams["schedule"], **self._hparams["schedule_params"]
        )
        self._schedule_anchor = self._anchor_for(self._hparams["lr"])
        self._schedule_start_epoch = 0
        self._iterator = MiniBatchIterator(
            len(self.data.y_train), self._hparams["batch_size"], seed=config.seed + 1
        )
        self._dropout_rng = np.random.default_rng(config.seed + 2)
        self._step = 0
        self._recent_costs: collections.deque = collections.deque(maxlen=50)
        self._speed_limit: float | None = None
        self._autopilot = False
        self._requested: dict = {}  # updates validated but not yet applied by the worker
        self._detached = False  # True for a sandbox: no thread, nothing on disk
        self._status = "paused"
        self._steps_left: int | None = None  # None: run until paused
        self._error: str | None = None
        self._error_traceback: str | None = None
        self._divergence: dict | None = None
        self._checkpoints: list[dict] = []
        self._damaged: list[dict] = []
        self._last_good_checkpoint: str | None = None
        self._pending_write: _CheckpointWrite | None = None  # a periodic one, in the background
        self._seq = 0
        self._branch = 0
        self._branches: dict[int, _Branch] = {0: self._empty_branch()}
        # update_ratio/<layer> column name of each dense layer's weight matrix
        self._ratio_columns = {
            k: f"update_ratio/{k.split('.')[0]}" for k in self._net.weight_keys
        }
        self._last_batch_stats: dict = {}
        self._grads_seen: Mapping | None = None  # see _grad_norm
        self._grads_span: np.ndarray | None = None
        self._latest_bn: dict = {}
        self._decision_grid: Mapping | None = None
        self._rate_times: collections.deque = collections.deque(maxlen=200)

    def _step_schema(self) -> dict:
        # Compact where precision is not at stake: 10⁶ steps stay well under 100 MB.
        schema = {
            "step": (np.int64, ()),
            "epoch": (np.int32, ()),
            "cost": (np.float64, ()),
            "cost_smoothed": (np.float64, ()),
            "lr": (np.float64, ()),
            "grad_norm": (np.float32, ()),
        }
        for key in self._net.weight_keys:
            schema[f"update_ratio/{key.split('.')[0]}"] = (np.float32, ())
        return schema

    def _eval_schema(self) -> dict:
        return {
            name: (np.int64 if name == "eval_step" else np.float64, ())
            for name in (
                "eval_step",
                "train_accuracy",
                "dev_accuracy",
                "train_cost",
                "dev_cost",
                "dev_accuracy_train_mode",
            )
        }

    def _bn_schema(self) -> dict | None:
        if not self._net.bn_layers:
            return None
        schema = {"eval_step": (np.int64, ())}
        for layer in self._net.bn_layers:
            n = self._net.params[f"{layer}.gamma"].shape[0]
            # The population statistics are in the snapshot for the newest evaluation only.
            for stat in ("running_mean", "running_var", "batch_mean", "batch_var"):
                schema[f"{layer}/{stat}"] = (np.float32, (n,))
        return schema

    def _empty_branch(self, **kw) -> _Branch:
        bn_schema = self._bn_schema()
        return _Branch(
            Columns(self._step_schema()),
            Columns(self._eval_schema()),
            Columns(bn_schema) if bn_schema else None,
            [],
            **kw,
        )

    @classmethod
    def detached(cls, config: RunConfig, data, arrays, meta) -> Trainer:
        """A Trainer with no thread and nothing on disk, at the given state.

        The engine of :class:`dlcore.sandbox.Sandbox`: it trains with the very
        same step as the live run, in the caller's thread.
        """
        trainer = cls.__new__(cls)
        trainer._lock = threading.RLock()
        trainer._commands = queue.Queue()
        trainer._thread = None
        trainer.run_id = "sandbox"
        trainer._checkpoint_dir = trainer._run_dir = None
        trainer.config = dataclasses.replace(config, checkpoint_every=0)
        trainer._setup(trainer.config, data)
        trainer._detached = True
        trainer._load_state(arrays, meta)
        trainer._branches = {trainer._branch: trainer._empty_branch()}
        return trainer

    @classmethod
    def open(cls, checkpoint_dir="checkpoints", run_id: str | None = None) -> Trainer:
        """Reopen a run (the newest, or ``run_id``) at its newest valid checkpoint.

        Damaged checkpoint files are listed in ``snapshot().damaged`` and
        skipped; leftover temporary files are removed. Status is "paused".
        """
        checkpoint_dir = Path(checkpoint_dir)
        if run_id is None:
            runs = list_runs(checkpoint_dir)
            if not runs:
                raise FileNotFoundError(f"no run in {str(checkpoint_dir)!r}")
            run_id = runs[-1]
        if not isinstance(run_id, str) or not ckptio.RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} may only hold letters, digits, '_', '.', '-'")
        run_dir = checkpoint_dir / run_id
        try:
            config = RunConfig.from_dict(json.loads((run_dir / "run.json").read_text())["config"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"run {run_id!r} has no readable run.json: {error}") from None
        ckptio.clean_temporaries(run_dir)
        trainer = cls.__new__(cls)
        trainer._restore_from_disk(config, checkpoint_dir, run_id)
        return trainer

    def _restore_from_disk(self, config, checkpoint_dir, run_id):
        self._checkpoint_dir = Path(checkpoint_dir)
        self._lock = threading.RLock()
        self._commands = queue.Queue()
        self._thread = None
        self.run_id = run_id
        self._run_dir = self._checkpoint_dir / run_id
        self.config = config
        self._setup(config)
        newest = None
        for path in sorted(self._run_dir.glob("ckpt-*.npz")):
            try:
                arrays, meta = self._read_checkpoint(path)
            except ckptio.CheckpointError as error:
                self._damaged.append({"file": path.name, "reason": str(error)})
                continue
            self._checkpoints.append(_freeze(meta["info"]))
            newest = (arrays, meta)
        self._seq = self._highest_seq() + 1
        if newest is None:
            raise ValueError(
                f"run {run_id!r} has no usable checkpoint ({len(self._damaged)} damaged)"
            )
        arrays, meta = newest
        self._load_state(arrays, meta)
        self._rebuild_branches(meta)
        self._last_good_checkpoint = meta["info"]["id"]
        self._status = "paused"
        self._start_thread()

    # -- public API --------------------------------------------------------

    def start(self) -> None:
        """Train continuously until paused (also resumes after pause/divergence/error)."""
        self._send("run", None)

    resume = start

    def pause(self) -> None:
        self._send("pause", None)

    def step(self, n: int = 1) -> None:
        """Train exactly n steps, then pause (works while paused)."""
        n = _number("n", n, 1, integer=True)
        self._send("run", n)

    def update(self, **hparams) -> None:
        """Change hyperparameters live; they apply from the next step.

        Keys: lr, optimizer, beta, beta1, beta2, eps, schedule, schedule_params,
        batch_size, l2, keep_prob, bn_momentum, eval_every; the run settings
        speed_limit (max steps/s; None for unlimited) and autopilot (bool);
        and carry_moments (bool) for an optimizer switch: False starts the new
        optimizer fresh (t = 0); True carries what transfers (see
        :func:`carried_state`). Raises ValueError at once for a bad key or
        value; nothing is queued then. A pre-change checkpoint is written
        before the change, and an event records old → new values.
        """
        with self._lock:
            current = dict(self._requested_hparams())
        validate_hparams(hparams, current, len(self.data.y_train))
        with self._lock:
            self._requested.update(hparams)
        self._send("update", dict(hparams))

    def checkpoint(self, note: str = "") -> str:
        """Write a manual checkpoint now; returns its id."""
        note = _clean_note(note)
        return self._send("checkpoint", note, wait=True)

    def rollback(self, checkpoint_id: str, **hparams) -> int:
        """Restore a checkpoint's complete state and continue on a new branch.

        ``hparams`` (as for :meth:`update`) apply on the new branch at once, in
        the same command: e.g. ``rollback(last_good, lr=alpha / 2)`` after a
        divergence. Returns the new branch's number. The run is paused
        afterwards. Raises ValueError for an unknown id, a file that no longer
        loads or a bad hyperparameter; nothing changes then.
        """
        path = self._checkpoint_path(checkpoint_id)
        try:
            arrays, meta = self._read_checkpoint(path)
        except ckptio.CheckpointError as error:
            with self._lock:
                if all(d["file"] != path.name for d in self._damaged):  # once per file
                    self._damaged.append({"file": path.name, "reason": str(error)})
            raise ValueError(f"cannot roll back to {checkpoint_id}: {error}") from None
        if hparams:
            settings = {
                **self.config.initial_hparams(),
                **meta["info"]["hparams"],
                **{name: getattr(self, f"_{name}") for name in RUN_SETTINGS},
            }
            validate_hparams(hparams, settings, len(self.data.y_train))
        return self._send("rollback", (arrays, meta, hparams), wait=True)

    def export_state(self, checkpoint_id: str | None = None) -> tuple[dict, dict]:
        """A copy of the complete training state: the live one, taken between two
        steps, or a checkpoint's. ``(arrays, meta)`` as a checkpoint holds them;
        nothing changes and nothing is written. Sandboxes start from this.
        """
        if checkpoint_id is None:
            return self._send("export", None, wait=True)
        path = self._checkpoint_path(checkpoint_id)
        try:
            return self._read_checkpoint(path)
        except ckptio.CheckpointError as error:
            raise ValueError(str(error)) from None

    def adopt(self, sandbox) -> int:
        """Continue the run from a sandbox's state, on a new branch forked where the
        sandbox started (recorded like a rollback). Returns the branch number.
        """
        return self._send("adopt", sandbox.commit_payload(), wait=True)

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Delete a checkpoint file; never the one the run stands on."""
        path = self._checkpoint_path(checkpoint_id)
        self._send("delete", path, wait=True)

    def inspect_checkpoint(self, checkpoint_id: str) -> dict:
        """Evaluate a checkpoint in inference mode, without touching the run.

        Returns its metadata plus train/dev accuracy and cost and the confusion
        matrices (rows: true class, columns: predicted class).
        """
        net, meta = self._checkpoint_network(checkpoint_id)
        result = {"info": meta["info"]}
        for part, X, y in (
            ("train", self.data.X_train, self.data.y_train),
            ("dev", self.data.X_dev, self.data.y_dev),
        ):
            l2 = meta["info"]["hparams"].get("l2", 0.0)
            result[f"{part}_accuracy"], result[f"{part}_cost"] = net.evaluate(X, y, l2)
            result[f"confusion_{part}"] = confusion_matrix(y, net.predict(X), self.data.n_classes)
        return result

    def weight_distance(self, checkpoint_a: str, checkpoint_b: str) -> dict:
        """‖θa − θb‖ over all parameters, and relative to ‖θa‖, per layer and in total."""
        net_a, _ = self._checkpoint_network(checkpoint_a)
        net_b, _ = self._checkpoint_network(checkpoint_b)
        out = {}
        total_diff = total_norm = 0.0
        for key, a in net_a.params.items():
            diff = float(np.sum((a - net_b.params[key]) ** 2))
            norm = float(np.sum(a**2))
            out[key] = math.sqrt(diff)
            total_diff, total_norm = total_diff + diff, total_norm + norm
        out["total"] = math.sqrt(total_diff)
        out["relative"] = math.sqrt(total_diff / total_norm) if total_norm else 0.0
        return out

    def _checkpoint_network(self, checkpoint_id):
        path = self._checkpoint_path(checkpoint_id)
        try:
            arrays, meta = self._read_checkpoint(path)
        except ckptio.CheckpointError as error:
            raise ValueError(str(error)) from None
        net = Network(self.architecture)
        net.load_state_arrays(
            {k: v for k, v in arrays.items() if k.startswith(("params/", "buffers/"))}
        )
        return net, meta

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current step, save anything unsaved in a final checkpoint, end the thread."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._commands.put(("stop", None, None))
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def snapshot(self) -> Snapshot:
        """An immutable copy of everything the UI shows; cheap even with 10⁶ steps."""
        with self._lock:
            branch = self._branches[self._branch]
            history = {**branch.steps.view(), **branch.evals.view()}
            branches = {}
            for number, b in self._branches.items():
                branches[number] = MappingProxyType(
                    {
                        "parent_branch": b.parent_branch,
                        "fork_step": b.fork_step,
                        "from_checkpoint": b.from_checkpoint,
                        "history": MappingProxyType({**b.steps.view(), **b.evals.view()}),
                        "events": tuple(b.events),
                    }
                )
            bn = {}
            for layer, latest in self._latest_bn.items():
                layer_history = {"eval_step": branch.bn.view()["eval_step"]} if branch.bn else {}
                if branch.bn is not None:
                    for name, column in branch.bn.view().items():
                        if name.startswith(f"{layer}/"):
                            layer_history[name.split("/", 1)[1]] = column
                bn[layer] = MappingProxyType({**latest, "history": MappingProxyType(layer_history)})
            return Snapshot(
                run_id=self.run_id,
                status=self._status,
                step=self._step,
                epoch=self._iterator.epoch,
                alpha=self._current_alpha(),
                hparams=_freeze(self._hparams),
                speed_limit=self._speed_limit,
                autopilot=self._autopilot,
                steps_per_second=self._steps_per_second(),
                history=MappingProxyType(history),
                events=tuple(branch.events),  # frozen when recorded: no copy per snapshot
                checkpoints=tuple(self._checkpoints),
                damaged=tuple(_freeze(d) for d in self._damaged),
                branch=self._branch,
                branches=MappingProxyType(branches),
                bn=MappingProxyType(bn),
                error=self._error,
                error_traceback=self._error_traceback,
                divergence=_freeze(self._divergence) if self._divergence else None,
                config=_freeze(self.config.to_dict()),
                dataset=MappingProxyType(
                    {
                        "name": self.data.name,
                        "n_features": self.data.n_features,
                        "n_classes": self.data.n_classes,
                        "n_train": len(self.data.y_train),
                        "n_dev": len(self.data.y_dev),
                        "class_names": tuple(str(c) for c in self.data.class_names),
                    }
                ),
                layers=tuple(k.split(".")[0] for k in self._net.weight_keys),
                last_good_checkpoint=self._last_good_checkpoint,
                checkpoint_dir=str(self._run_dir),
                decision_grid=self._decision_grid,
            )

    # -- commands ----------------------------------------------------------

    def _requested_hparams(self) -> dict:
        """Hyperparameters as they will be once every queued update is applied."""
        return {**self._settings(), **self._requested}

    def _settings(self) -> dict:
        """Hyperparameters plus the run settings (speed limit, autopilot)."""
        return {**self._hparams, **{name: getattr(self, f"_{name}") for name in RUN_SETTINGS}}

    def _send(self, name, payload, wait=False):
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("this run is stopped")
        reply = _Reply() if wait else None
        self._commands.put((name, payload, reply))
        return reply.wait() if wait else None

    def _start_thread(self):
        self._thread = threading.Thread(
            target=self._worker, name=f"panda-{self.run_id}", daemon=True
        )
        self._thread.start()

    def _worker(self) -> None:
        """Drain commands, train a step if running, repeat."""
        while True:
            # Running, it only looks whether a background checkpoint write has finished;
            # otherwise it settles that write before it waits for commands.
            self._settle_write_or_fail(wait=self._status != "running")
            training = self._status == "running"
            try:
                # Waits at most 1 s at a time: a tiny speed limit (1e-300 steps/s) asks for a
                # wait beyond what the OS accepts, which would raise and end this thread.
                timeout = min(self._seconds_until_next_step(), 1.0) if training else 0.5
                command = (
                    self._commands.get(timeout=timeout)
                    if timeout > 0
                    else self._commands.get_nowait()
                )
            except queue.Empty:
                command = None
            if command is not None:
                name, payload, reply = command
                if name == "stop":
                    self._finish()
                    return
                self._execute(name, payload, reply)
                continue  # drain every queued command before the next step
            if self._status == "running" and self._seconds_until_next_step() <= 0:
                self._guarded_step()

    def _execute(self, name, payload, reply):
        # Every command sees the checkpoints as they are on disk.
        self._settle_write_or_fail(wait=True)
        try:
            result = getattr(self, f"_do_{name}")(payload)
        except Exception as error:  # reported to the caller, never kills the worker
            if reply is None:
                self._fail(error)
            else:
                reply.error = error
        else:
            if reply is not None:
                reply.result = result
        finally:
            if reply is not None:
                reply.done.set()

    def _do_run(self, steps):
        with self._lock:
            self._steps_left = steps
            self._status = "running"
            self._error = None
            self._error_traceback = None
            if self._divergence is not None:
                self._divergence = dict(self._divergence, resumed=True)

    def _do_pause(self, _):
        with self._lock:
            self._steps_left = None
            if self._status == "running":
                self._status = "paused"

    def _do_update(self, changes, source="user", checkpoint_first=True):
        with self._lock:
            for key in changes:
                self._requested.pop(key, None)
            changes = validate_hparams(changes, self._settings(), len(self.data.y_train))
        carry_moments = changes.pop("carry_moments", False)
        settings = {name: changes.pop(name) for name in RUN_SETTINGS if name in changes}
        # 1) a checkpoint first, so the change can be undone (sandboxes keep nothing on disk);
        #    if it can't be written, no part of this update applies, run settings included
        if changes and checkpoint_first and not self._detached:
            self._write_checkpoint("pre-change", "before " + ", ".join(sorted(changes)))
        with self._lock:
            for name, value in settings.items():
                setattr(self, f"_{name}", value)
        if not changes:
            return
        old = {k: self._hparams.get(k) for k in changes}
        alpha_before = self._current_alpha()
        # 2) apply: the optimizer keeps its moments unless its kind changes
        new = {**self._hparams, **changes}
        if changes.keys() & {"optimizer", "beta", "beta1", "beta2", "eps"}:
            optimizer = _build_optimizer(new)
            if new["optimizer"] == self._hparams["optimizer"]:
                optimizer.load_state_dict(self._optimizer.state_dict())
            elif carry_moments:
                optimizer.load_state_dict(
                    carried_state(self._optimizer, optimizer, self._net.params)
                )
            self._optimizer = optimizer
        # 3) α: typing one re-anchors the schedule there; a new schedule starts from α now
        if changes.keys() & {"schedule", "schedule_params"} or "lr" in changes:
            if "lr" not in changes:
                new["lr"] = alpha_before
            self._schedule = make_schedule(new["schedule"], **new["schedule_params"])
            self._schedule_anchor = self._anchor_for(new["lr"])
            self._schedule_start_epoch = self._iterator.epoch
        if "batch_size" in changes:
            self._iterator.batch_size = new["batch_size"]
        with self._lock:
            self._hparams = new
            details = {"carry_moments": True} if carry_moments else {}
            self._record_event(
                "change",
                changes={k: [old[k], new[k]] for k in changes},
                alpha=[alpha_before, self._current_alpha()],
                source=source,
                **details,
            )

    def _do_checkpoint(self, note):
        return self._write_checkpoint("manual", note)

    def _do_rollback(self, loaded):
        arrays, meta, hparams = loaded
        info = meta["info"]
        self._save_branch_being_left(f"before rollback to {info['id']}")
        source = self._branches.get(info["branch"])
        self._load_state(arrays, meta)
        number = self._fork(
            source,
            info["branch"],
            info["step"],
            info["id"],
            note=f"rolled back to {info['id']}",
            event_count=info.get("event_count"),
        )
        if hparams:  # the rollback checkpoint just written is this change's undo point
            self._do_update(hparams, checkpoint_first=False)
        return number

    def _do_adopt(self, candidate):
        """Continue from a sandbox's final state on a new branch (a committed look-ahead)."""
        start_step, start_branch, arrays, meta, history, events = candidate
        # The sandbox started from (start_branch, start_step): the live state then, or a
        # checkpoint; the new branch forks there, wherever the run is now.
        source = self._branches.get(start_branch)
        if source is None or source.steps.count_until("step", start_step) < min(
            start_step, len(source.steps)
        ):
            raise ValueError(
                f"branch {start_branch} at step {start_step}, where this look-ahead "
                "started, is not in this run's history"
            )
        self._save_branch_being_left("before committing a look-ahead")
        self._load_state(arrays, meta)
        return self._fork(
            source,
            start_branch,
            start_step,
            None,
            history=history,
            events=events,
            note="look-ahead candidate committed",
        )

    def _save_branch_being_left(self, note):
        """Checkpoint the branch being left, so its whole history stays on disk."""
        if self._step != self._checkpointed_step():
            try:
                self._write_checkpoint("pre-change", note)
            except ValueError:  # NaN/inf after an overflow: keep just its history
                self._write_journal(self._seq)
                self._seq += 1

    def _fork(
        self,
        source,
        parent_branch,
        fork_step,
        from_checkpoint,
        note,
        history=None,
        events=(),
        event_count=None,
    ):
        """Open a new branch at fork_step of ``source`` (state already loaded); returns its number.

        Its history starts as a copy of the source's rows up to fork_step, then
        ``history`` (rows trained elsewhere, e.g. in a sandbox) if given.
        ``event_count``: how many of the source's events precede the checkpoint
        forked from (a pre-change checkpoint precedes the change at its step).
        """
        number = max(self._branches) + 1
        branch = self._empty_branch(
            parent_branch=parent_branch, fork_step=fork_step, from_checkpoint=from_checkpoint
        )
        if source is not None:
            branch.steps = source.steps.copy(source.steps.count_until("step", fork_step))
            branch.evals = source.evals.copy(source.evals.count_until("eval_step", fork_step))
            if source.bn is not None:
                branch.bn = source.bn.copy(source.bn.count_until("eval_step", fork_step))
            branch.events = _events_until(source.events, fork_step, event_count)
        branch.flushed_steps, branch.flushed_evals = len(branch.steps), len(branch.evals)
        branch.flushed_events = len(branch.events)
        branch.flushed_bn_step = fork_step
        if history is not None:
            branch.steps.extend({k: history[k] for k in branch.steps.schema})
            branch.evals.extend({k: history[k] for k in branch.evals.schema})
            branch.events.extend(_freeze(e) for e in events)
        self._publish_live_views()
        with self._lock:
            self._branches[number] = branch
            self._branch = number
            self._status = "paused"
            self._steps_left = None
            self._divergence = None
            self._error = None
            self._error_traceback = None
            self._record_event("rollback", checkpoint=from_checkpoint, branch=number, note=note)
        try:
            self._write_checkpoint("rollback", note, parent=from_checkpoint)
        except OSError as error:
            # The fork itself is done and consistent in memory; only its first save failed.
            # Shown as an error (training stops); the next checkpoint saves the new branch.
            self._fail(error)
        return number

    def _do_export(self, _):
        return self.state_copy()

    def state_copy(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` of the complete state, as a checkpoint holds it (worker thread)."""
        info = {
            "id": None,
            "kind": "live",
            "note": "",
            "step": self._step,
            "epoch": self._iterator.epoch,
            "branch": self._branch,
            "parent": None,
            "hparams": _json_safe(self._hparams),
            "alpha": self._current_alpha(),
            "metrics": {},
            "time": time.time(),
        }
        return self._state_arrays(), {
            "format": CHECKPOINT_FORMAT,
            "info": info,
            **self._state_meta(),
        }

    def _do_delete(self, path):
        checkpoint_id = path.stem
        if checkpoint_id == self._last_good_checkpoint:
            raise ValueError(
                f"{checkpoint_id} is the checkpoint the run stands on; it can't be deleted"
            )
        if not path.exists():
            raise ValueError(f"no checkpoint {checkpoint_id}")
        path.unlink()
        with self._lock:
            self._checkpoints = [c for c in self._checkpoints if c["id"] != checkpoint_id]
            self._damaged = [d for d in self._damaged if d["file"] != path.name]

    def _finish(self):
        self._settle_write_or_fail(wait=True)
        with self._lock:
            branch = self._branches[self._branch]
            # Also unsaved: a change (or other event) made since the last checkpoint, e.g.
            # update() then stop() with no step between would otherwise lose the change.
            unsaved = self._step != self._checkpointed_step() or branch.flushed_events < len(
                branch.events
            )
        if unsaved and self._status not in ("diverged", "error"):
            try:
                self._write_checkpoint("final", "saved on stop")
            except Exception as error:
                self._fail(error)
        with self._lock:
            self._status = "stopped"

    # -- training ----------------------------------------------------------

    def _current_alpha(self) -> float:
        epochs = self._iterator.epoch - self._schedule_start_epoch
        return float(self._schedule(self._schedule_anchor, epochs))

    def _anchor_for(self, alpha_now: float) -> float:
        """α0 such that the schedule gives α_now at its epoch 0 (every schedule is affine in α0)."""
        at_one = self._schedule(1.0, 0)
        slope = self._schedule(2.0, 0) - at_one
        return (alpha_now - (at_one - slope)) / slope

    def _seconds_until_next_step(self) -> float:
        if not self._speed_limit or not self._rate_times:
            return 0.0
        return max(0.0, self._rate_times[-1] + 1.0 / self._speed_limit - time.monotonic())

    def _steps_per_second(self) -> float:
        times = self._rate_times
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def _guarded_step(self):
        try:
            self._train_step()
        except Exception as error:
            self._fail(error)
            return
        if self._steps_left is not None:
            self._steps_left -= 1
            if self._steps_left <= 0:
                # Whoever sees "paused" also sees a checkpoint of this very step listed.
                self._settle_write_or_fail(wait=True)
                with self._lock:
                    self._steps_left = None
                    if self._status == "running":
                        self._status = "paused"

    def _train_step(self, alpha=None):
        """One mini-batch step: forward, backward, divergence check, update, record.

        ``alpha`` overrides the schedule for this step (the LR range test sweeps it).
        """
        net, hp = self._net, self._hparams
        # 1) the next mini-batch and (if on) its dropout masks
        epoch = self._iterator.epoch
        alpha = self._current_alpha() if alpha is None else alpha
        index = self._iterator.next_batch()
        X, y = self.data.X_train[index], self.data.y_train[index]
        masks = net.dropout_masks(len(index), hp["keep_prob"], self._dropout_rng)
        # 2) forward and backward
        # Preallocated buffers: grads are only used within this step.
        cost, grads, batch_stats = net.loss_and_grads(X, y, hp["l2"], masks, reuse_buffers=True)
        grad_norm = self._grad_norm(grads)
        # 3) divergence guard, before anything is changed
        cause = self._divergence_cause(cost, grad_norm)
        if cause:
            self._diverge(cause, cost)
            return
        # 4) update; the update-to-weight ratio ‖ΔW‖/‖W‖ takes ‖W‖ before the update
        #    and ‖ΔW‖ from the optimizer (no copy of W)
        columns = self._ratio_columns
        weight_norms = {key: _norm(net.params[key]) for key in columns}
        self._optimizer.lr = alpha
        update_norms = self._optimizer.step(net.params, grads, update_norms=columns)
        net.update_running_stats(batch_stats, hp["bn_momentum"])
        ratios = {
            column: update_norms[key] / weight_norms[key] if weight_norms[key] else 0.0
            for key, column in columns.items()
        }
        if not all(math.isfinite(r) for r in ratios.values()):
            self._diverge("parameters overflowed to inf/NaN in the update", cost)
            return
        self._recent_costs.append(cost)
        self._last_batch_stats = batch_stats
        cost_smoothed = self._smooth_cost(cost)
        # 5) record
        with self._lock:
            self._step += 1
            self._rate_times.append(time.monotonic())
            self._branches[self._branch].steps.append(
                step=self._step,
                epoch=epoch,
                cost=cost,
                cost_smoothed=cost_smoothed,
                lr=alpha,
                grad_norm=grad_norm,
                **ratios,
            )
        if self._step % hp["eval_every"] == 0:
            self._evaluate()
            if self._autopilot and not self._detached:
                self._autopilot_step()
        every = self.config.checkpoint_every
        if every and self._step % every == 0:
            self._write_checkpoint("periodic", "", background=True)

    def _grad_norm(self, grads) -> float:
        """‖g‖ over every gradient; one pass when they lie back to back in one array.

        The fast path hands back the same grads dict every step, so its span is
        looked up once per dict (a new batch size brings a new one).
        """
        if grads is not self._grads_seen:
            self._grads_seen = grads
            self._grads_span = flat_span(list(grads.values()))
        span = self._grads_span
        if span is not None:
            return math.sqrt(float(np.vdot(span, span)))
        return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))

    def _autopilot_step(self):
        """Apply the assistant's first suggestion itself, logged as an event (opt-in)."""
        for suggestion in assistant.suggest(self.snapshot()):
            source = f"autopilot: {suggestion.rule}"
            action = suggestion.action
            if "update" in action:
                self._do_update(dict(action["update"]), source=source)
            elif "rollback" in action:
                loaded = self._read_checkpoint(self._checkpoint_path(action["rollback"]))
                self._do_rollback((*loaded, {}))
            else:
                self._do_pause(None)
            with self._lock:
                self._record_event(
                    "autopilot",
                    rule=suggestion.rule,
                    title=suggestion.title,
                    evidence=suggestion.evidence,
                )
            return

    def _smooth_cost(self, cost) -> float:
        """The course's bias-corrected EWMA of J: v = βv + (1−β)J; J̄ = v/(1−βᵗ)."""
        branch = self._branches[self._branch]
        rows = len(branch.steps)
        previous = float(branch.steps.last("cost_smoothed")) if rows else 0.0
        weight_before = 1.0 - COST_SMOOTHING**rows
        v = COST_SMOOTHING * previous * weight_before + (1.0 - COST_SMOOTHING) * cost
        return v / (1.0 - COST_SMOOTHING ** (rows + 1))

    def _divergence_cause(self, cost, grad_norm) -> str | None:
        if not math.isfinite(cost):
            return f"cost is {cost}"
        if not math.isfinite(grad_norm):
            return "gradient holds NaN/inf"
        if self._recent_costs:
            # A multiple of the recent average, and worse than guessing uniformly (cost ln C):
            # near convergence a cost of 0.05 after 0.001 is noise, not divergence.
            recent = sum(self._recent_costs) / len(self._recent_costs)
            chance = math.log(self.data.n_classes)
            if cost > self.config.divergence_factor * recent and cost > chance:
                return (
                    f"cost {cost:.4g} exceeds {self.config.divergence_factor:g}× "
                    f"its recent average {recent:.4g}"
                )
        return None

    def _diverge(self, cause, cost):
        self._settle_write_or_fail(wait=True)  # it may be the last good checkpoint
        with self._lock:
            self._status = "diverged"
            self._steps_left = None
            self._divergence = {
                "step": self._step + 1,
                "cause": cause,
                "last_good_checkpoint": self._last_good_checkpoint,
                "alpha": self._current_alpha(),
            }
            self._record_event(
                "divergence", cause=cause, **{"last_good_checkpoint": self._last_good_checkpoint}
            )

    def _fail(self, error: BaseException):
        with self._lock:
            self._status = "error"
            self._steps_left = None
            self._error = f"{type(error).__name__}: {error}"
            self._error_traceback = traceback.format_exc()
            self._record_event("error", message=self._error)

    def _evaluate(self):
        """Train/dev accuracy and cost in inference mode, and the BatchNorm picture."""
        net, data, l2 = self._net, self.data, self._hparams["l2"]
        train_accuracy, train_cost = net.evaluate(data.X_train, data.y_train, l2)
        dev_accuracy, dev_cost = net.evaluate(data.X_dev, data.y_dev, l2)
        dev_accuracy_train_mode, _ = net.evaluate(data.X_dev, data.y_dev, l2, mode="train")
        bn_row = None if self._detached else self._publish_live_views()
        with self._lock:
            branch = self._branches[self._branch]
            branch.evals.append(
                eval_step=self._step,
                train_accuracy=train_accuracy,
                dev_accuracy=dev_accuracy,
                train_cost=train_cost,
                dev_cost=dev_cost,
                dev_accuracy_train_mode=dev_accuracy_train_mode,
            )
            if branch.bn is not None and bn_row is not None:
                _append_bn(branch, bn_row)

    def _publish_live_views(self) -> dict:
        """The BatchNorm picture and the decision regions of the current weights.

        Published for the snapshot (also after a rollback or reopen, so the
        pages never show a stale state); returns the BN history row.
        """
        net = self._net
        population = net.population_stats(self.data.X_train)
        latest_bn, bn_row = {}, {"eval_step": self._step}
        for layer in net.bn_layers:
            batch_mean, batch_var = self._last_batch_stats.get(layer, (None, None))
            running_mean = net.buffers[f"{layer}.running_mean"].copy()
            running_var = net.buffers[f"{layer}.running_var"].copy()
            population_mean, population_var = population[layer]
            stats = {
                "running_mean": running_mean,
                "running_var": running_var,
                "batch_mean": batch_mean.copy() if batch_mean is not None else None,
                "batch_var": batch_var.copy() if batch_var is not None else None,
                "population_mean": population_mean.copy(),
                "population_var": population_var.copy(),
                # how far the running estimates are from the truth they estimate
                "mean_error": running_mean - population_mean,
                "var_error": running_var - population_var,
                "gamma": net.params[f"{layer}.gamma"].copy(),
                "beta": net.params[f"{layer}.beta"].copy(),
            }
            for array in stats.values():
                if array is not None:
                    array.flags.writeable = False
            latest_bn[layer] = stats
            for name in ("running_mean", "running_var", "batch_mean", "batch_var"):
                value = stats[name]
                bn_row[f"{layer}/{name}"] = value if value is not None else np.nan
        grid = self._decision_regions() if self.data.n_features == 2 else None
        with self._lock:
            self._latest_bn = latest_bn
            self._decision_grid = grid
        return bn_row

    def _decision_regions(self, resolution=80) -> Mapping:
        """Predicted class on a grid over the (standardised) 2-D training data."""
        X = self.data.X_train
        low, high = X.min(axis=0) - 0.5, X.max(axis=0) + 0.5
        xs = np.linspace(low[0], high[0], resolution)
        ys = np.linspace(low[1], high[1], resolution)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(X.dtype)
        classes = self._net.predict(grid).reshape(resolution, resolution)
        for array in (xs, ys, classes):
            array.flags.writeable = False
        return MappingProxyType(
            {
                "x": xs,
                "y": ys,
                "classes": classes,
                "points": self.data.X_train,
                "labels": self.data.y_train,
            }
        )

    def _record_event(self, kind, **details) -> Mapping:
        """Call with the lock held. Returns the event as recorded."""
        event = _freeze(
            {
                "kind": kind,
                "step": self._step,
                "branch": self._branch,
                "time": time.time(),
                **_json_safe(details),
            }
        )
        self._branches[self._branch].events.append(event)
        return event

    # -- checkpoints -------------------------------------------------------

    def _checkpoint_path(self, checkpoint_id) -> Path:
        if not isinstance(checkpoint_id, str) or not ckptio.CHECKPOINT_ID.match(checkpoint_id):
            raise ValueError(f"{checkpoint_id!r} is not a checkpoint id (ckpt-NNNNNN)")
        path = self._run_dir / f"{checkpoint_id}.npz"
        if not path.is_file():
            raise ValueError(f"no checkpoint {checkpoint_id} in run {self.run_id}")
        return path

    def _checkpointed_step(self):
        info = next((c for c in self._checkpoints if c["id"] == self._last_good_checkpoint), None)
        return info["step"] if info else -1

    def _highest_seq(self) -> int:
        numbers = [-1]
        for path in list(self._run_dir.glob("ckpt-*")) + list(
            (self._run_dir / "journal").glob("*")
        ):
            digits = path.name.split(".")[0].removeprefix("ckpt-")
            if digits.isascii() and digits.isdigit():  # not '²': int() refuses it
                numbers.append(int(digits))
        return max(numbers)

    def _write_checkpoint(self, kind, note, parent=None, background=False) -> str:
        """Journal, then the checkpoint itself, each atomically. Returns its id.

        ``background`` (periodic checkpoints): the files are written in a short-lived
        thread while training goes on, and the checkpoint is listed once
        :meth:`_settle_write` finds it on disk. Otherwise it is written and settled here,
        raising what its write raised.
        """
        self._settle_write(wait=True)  # one write at a time, in seq order, its parent listed
        write = self._prepare_checkpoint(kind, note, parent)
        if not background:
            write.run()
            return self._settle(write)
        self._pending_write = write
        try:
            threading.Thread(
                target=write.run, name=f"panda-{self.run_id}-write", daemon=True
            ).start()
        except RuntimeError:  # no thread to be had: written here, settled as any other
            write.run()
        return write.info["id"]

    def _prepare_checkpoint(self, kind, note, parent) -> _CheckpointWrite:
        """Copies of everything a checkpoint's files hold; its rows count as journalled.

        Raises ValueError, recording nothing, if the state holds NaN/inf.
        """
        with self._lock:
            seq = self._seq
            self._seq += 1
        checkpoint_id = f"ckpt-{seq:06d}"
        arrays = self._state_arrays()
        for key, value in arrays.items():
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ValueError(f"refusing to write {checkpoint_id}: {key} holds NaN/inf")
        last_eval = self._branches[self._branch].evals.view()
        metrics = {}
        if len(last_eval["eval_step"]) and last_eval["eval_step"][-1] == self._step:
            metrics = {k: float(v[-1]) for k, v in last_eval.items() if k != "eval_step"}
        info = {
            "id": checkpoint_id,
            "seq": seq,
            "kind": kind,
            "note": note,
            "step": self._step,
            "epoch": self._iterator.epoch,
            "branch": self._branch,
            "parent": parent if parent is not None else self._last_good_checkpoint,
            "hparams": _json_safe(self._hparams),
            "alpha": self._current_alpha(),
            "metrics": metrics,
            "time": time.time(),
            # events of its branch up to and including this checkpoint's own
            "event_count": len(self._branches[self._branch].events) + (kind != "pre-change"),
        }
        meta = {"format": CHECKPOINT_FORMAT, "info": info, **self._state_meta()}
        branch = self._branches[self._branch]
        flush_marks = branch.flush_marks()
        event = None
        if kind != "pre-change":  # the change event itself marks that boundary
            # Recorded first so the journal written with this checkpoint holds it.
            with self._lock:
                event = self._record_event(
                    "checkpoint", checkpoint=checkpoint_id, checkpoint_kind=kind, note=note
                )
        path = self._run_dir / f"{checkpoint_id}.npz"
        journal = self._take_journal(seq)
        return _CheckpointWrite(path, arrays, meta, journal, branch, flush_marks, event)

    def _settle(self, write: _CheckpointWrite) -> str:
        """List a checkpoint whose files are on disk and return its id; if its write failed,
        hand its rows and events back to the next journal chunk and raise the write's error.
        """
        with self._lock:
            if write.error is None:
                self._checkpoints.append(_freeze(write.info))
                self._last_good_checkpoint = write.info["id"]
                return write.info["id"]
            branch = write.branch
            branch.rewind_flush_marks(write.flush_marks)
            if write.event is not None:  # by identity: later events may have been recorded
                branch.events[:] = [e for e in branch.events if e is not write.event]
        raise write.error

    def _settle_write(self, wait: bool) -> None:
        """Settle the checkpoint being written in the background, if there is one and it is
        done (or, with ``wait``, once it is). Raises what its write raised (see _settle).
        """
        write = self._pending_write
        if write is None or not (wait or write.done.is_set()):
            return
        write.done.wait()
        self._pending_write = None
        self._settle(write)

    def _settle_write_or_fail(self, wait: bool) -> None:
        """:meth:`_settle_write` for callers that carry on: a failed write stops training."""
        try:
            self._settle_write(wait)
        except Exception as error:
            self._fail(error)

    def _write_journal(self, seq):
        """A journal chunk on its own, written here (see _save_branch_being_left)."""
        branch = self._branches[self._branch]
        flush_marks = branch.flush_marks()
        path, arrays, meta = self._take_journal(seq)
        try:
            ckptio.write_atomic(path, arrays, meta)
        except BaseException:
            with self._lock:
                branch.rewind_flush_marks(flush_marks)
            raise

    def _take_journal(self, seq) -> tuple[Path, dict, dict]:
        """``(path, arrays, meta)`` of a chunk of the rows and events not yet in one; they
        count as journalled from now on (rewind the flush marks if it is not written).
        """
        branch = self._branches[self._branch]
        with self._lock:
            steps = {k: v.copy() for k, v in branch.steps.view(branch.flushed_steps).items()}
            evals = {k: v.copy() for k, v in branch.evals.view(branch.flushed_evals).items()}
            bn = {}
            if branch.bn is not None:
                first = branch.bn.count_until("eval_step", branch.flushed_bn_step)
                bn = {k: v.copy() for k, v in branch.bn.view(first).items()}
            events = list(branch.events[branch.flushed_events :])
            branch.flushed_steps += len(steps["step"])
            branch.flushed_evals += len(evals["eval_step"])
            branch.flushed_events += len(events)
            if bn and len(bn["eval_step"]):
                branch.flushed_bn_step = int(bn["eval_step"][-1])
        arrays = {f"steps/{k}": v for k, v in steps.items()}
        arrays.update({f"evals/{k}": v for k, v in evals.items()})
        arrays.update({f"bn/{k}": v for k, v in bn.items()})
        # NaN marks "no batch statistics yet"; the journal may hold it, checkpoints never do.
        arrays = {
            k: np.nan_to_num(v, nan=0.0) if v.dtype.kind == "f" else v for k, v in arrays.items()
        }
        meta = {
            "format": JOURNAL_FORMAT,
            "branch": self._branch,
            "seq": seq,
            "branch_info": {
                "parent_branch": branch.parent_branch,
                "fork_step": branch.fork_step,
                "from_checkpoint": branch.from_checkpoint,
            },
            "events": _json_safe(events),
        }
        return self._run_dir / "journal" / f"{seq:06d}.npz", arrays, meta

    def _state_arrays(self) -> dict:
        arrays = self._net.state_arrays()
        for key, value in self._optimizer.state_dict()["moments"].items():
            arrays[f"optim/{key}"] = value
        arrays["data/permutation"] = self._iterator.state_dict()["permutation"]
        return arrays

    def _state_meta(self) -> dict:
        iterator = {k: v for k, v in self._iterator.state_dict().items() if k != "permutation"}
        return {
            "architecture": self.architecture.to_dict(),
            "config": self.config.to_dict(),
            "optimizer": {"name": self._optimizer.name, "t": self._optimizer.t},
            "schedule": {
                "name": self._schedule.name,
                "params": self._schedule.params,
                "anchor": self._schedule_anchor,
                "start_epoch": self._schedule_start_epoch,
            },
            "iterator": _json_safe(iterator),
            "dropout_rng": _json_safe(self._dropout_rng.bit_generator.state),
            "recent_costs": list(self._recent_costs),
            "branches": {
                str(n): {
                    "parent_branch": b.parent_branch,
                    "fork_step": b.fork_step,
                    "from_checkpoint": b.from_checkpoint,
                }
                for n, b in self._branches.items()
            },
        }

    def _read_checkpoint(self, path: Path) -> tuple[dict, dict]:
        """Load and fully validate a checkpoint against this run, changing nothing."""
        if not ckptio.CHECKPOINT_ID.match(path.stem):
            raise ckptio.CheckpointError(f"{path.name}: not a checkpoint name (ckpt-NNNNNN.npz)")
        arrays, meta = ckptio.read(path, CHECKPOINT_FORMAT)
        try:
            info = meta["info"]
            if info["id"] != path.stem:
                raise ckptio.CheckpointError(f"{path.name}: names itself {info['id']!r}")
            if meta["architecture"] != self.architecture.to_dict():
                raise ckptio.CheckpointError(
                    f"{path.name}: another architecture ({meta['architecture']}) "
                    f"than this run's ({self.architecture.to_dict()})"
                )
            scratch = Network(self.architecture)
            scratch.load_state_arrays(
                {k: v for k, v in arrays.items() if k.startswith(("params/", "buffers/"))}
            )
            hparams = dict(info["hparams"])
            unknown = sorted(set(hparams) - set(self.config.initial_hparams()), key=str)
            if unknown:
                raise ckptio.CheckpointError(f"{path.name}: unknown hyperparameters {unknown}")
            validate_hparams(
                hparams, self.config.initial_hparams() | hparams, len(self.data.y_train)
            )
            optimizer = _build_optimizer(hparams)
            moments = {
                k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")
            }
            optimizer.load_state_dict(
                {"t": meta["optimizer"]["t"], "moments": moments}, params=scratch.params
            )
            make_schedule(meta["schedule"]["name"], **meta["schedule"]["params"])
            iterator = MiniBatchIterator(len(self.data.y_train), hparams["batch_size"], seed=0)
            iterator.load_state_dict(
                {**meta["iterator"], "permutation": arrays["data/permutation"]}
            )
            np.random.default_rng().bit_generator.state = meta["dropout_rng"]
            extra = set(arrays) - {
                k for k in arrays if k.startswith(("params/", "buffers/", "optim/"))
            }
            if extra != {"data/permutation"}:
                raise ckptio.CheckpointError(f"{path.name}: unexpected arrays {sorted(extra)}")
            _check_records(meta, path.name)
            # Fields the file lacks are ones added to RunConfig since: they don't count.
            ours = self.config.to_dict()
            differs = sorted(k for k, v in meta["config"].items() if k in ours and ours[k] != v)
            if differs:
                raise ckptio.CheckpointError(
                    f"{path.name}: from another run (its {', '.join(differs)} differ)"
                )
        except ckptio.CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
            raise ckptio.CheckpointError(
                f"{path.name}: incompatible or incomplete ({error})"
            ) from None
        return arrays, meta

    def _load_state(self, arrays, meta):
        """Make the run exactly what the (validated) checkpoint holds."""
        info = meta["info"]
        self._net.load_state_arrays(
            {k: v for k, v in arrays.items() if k.startswith(("params/", "buffers/"))}
        )
        hparams = {**self.config.initial_hparams(), **info["hparams"]}
        self._optimizer = _build_optimizer(hparams)
        moments = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
        self._optimizer.load_state_dict(
            {"t": meta["optimizer"]["t"], "moments": moments}, params=self._net.params
        )
        self._schedule = make_schedule(meta["schedule"]["name"], **meta["schedule"]["params"])
        self._schedule_anchor = float(meta["schedule"]["anchor"])
        self._schedule_start_epoch = int(meta["schedule"]["start_epoch"])
        self._iterator.load_state_dict(
            {**meta["iterator"], "permutation": arrays["data/permutation"]}
        )
        self._dropout_rng.bit_generator.state = meta["dropout_rng"]
        self._recent_costs = collections.deque(meta["recent_costs"], maxlen=50)
        with self._lock:
            self._hparams = hparams
            self._step = int(info["step"])
            self._branch = int(info["branch"])
            self._last_good_checkpoint = info["id"]
            self._last_batch_stats = {}

    def _rebuild_branches(self, newest_meta):
        """History of every branch from the journal files, up to each branch's newest checkpoint."""
        registry = {int(n): b for n, b in newest_meta["branches"].items()}
        chunks: dict[int, list] = collections.defaultdict(list)
        restored_seq = int(newest_meta["info"]["id"].removeprefix("ckpt-"))
        template = self._empty_branch()
        for path in sorted((self._run_dir / "journal").glob("*.npz")):
            if path.stem.isascii() and path.stem.isdigit() and int(path.stem) > restored_seq:
                # Journalled after the checkpoint we resume from (a crash came between the
                # journal and its checkpoint): rows and events the run is about to redo.
                # Kept, they would resurface as phantom events once a later checkpoint exists.
                path.unlink(missing_ok=True)
                continue
            try:
                arrays, meta = ckptio.read(path, JOURNAL_FORMAT)
                _check_journal(arrays, meta, template)
                chunks[int(meta["branch"])].append((arrays, meta))
                registry.setdefault(int(meta["branch"]), meta["branch_info"])
            except (ckptio.CheckpointError, KeyError, TypeError, ValueError) as error:
                self._damaged.append({"file": f"journal/{path.name}", "reason": str(error)})
        last_step = collections.defaultdict(lambda: -1)
        for c in self._checkpoints:
            last_step[c["branch"]] = max(last_step[c["branch"]], c["step"])
        self._branches = {}
        for number in sorted(registry):
            info = registry[number]
            branch = self._empty_branch(
                parent_branch=info["parent_branch"],
                fork_step=info["fork_step"],
                from_checkpoint=info["from_checkpoint"],
            )
            parent = self._branches.get(info["parent_branch"])
            if parent is not None:
                branch.steps = parent.steps.copy(
                    parent.steps.count_until("step", info["fork_step"])
                )
                branch.evals = parent.evals.copy(
                    parent.evals.count_until("eval_step", info["fork_step"])
                )
                if parent.bn is not None:
                    branch.bn = parent.bn.copy(
                        parent.bn.count_until("eval_step", info["fork_step"])
                    )
                origin = next(
                    (c for c in self._checkpoints if c["id"] == info["from_checkpoint"]), {}
                )
                branch.events = _events_until(
                    parent.events, info["fork_step"], origin.get("event_count")
                )
            for arrays, meta in chunks.get(number, []):
                _append_chunk(branch, arrays, meta)
            _truncate(branch, last_step[number])
            branch.flushed_steps, branch.flushed_evals = len(branch.steps), len(branch.evals)
            branch.flushed_events = len(branch.events)
            branch.flushed_bn_step = (
                int(branch.evals.view()["eval_step"][-1]) if len(branch.evals) else -1
            )
            self._branches[number] = branch
        if self._branch not in self._branches:
            self._branches[self._branch] = self._empty_branch()
        evals = self._branches[self._branch].evals
        if not len(evals) or evals.view()["eval_step"][-1] != self._step:
            self._evaluate()
        else:
            self._publish_live_views()


def _append_chunk(branch: _Branch, arrays, meta):
    """Add a journal chunk; rows it covers supersede any already there (after a crash)."""

    def block(prefix):
        return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}

    steps, evals, bn = block("steps/"), block("evals/"), block("bn/")
    if steps and len(steps.get("step", ())):
        keep = branch.steps.count_until("step", int(steps["step"][0]) - 1)
        branch.steps = branch.steps.copy(keep)
        if steps.keys() == branch.steps.schema.keys():
            branch.steps.extend(steps)
    if evals and len(evals.get("eval_step", ())):
        keep = branch.evals.count_until("eval_step", int(evals["eval_step"][0]) - 1)
        branch.evals = branch.evals.copy(keep)
        if evals.keys() == branch.evals.schema.keys():
            branch.evals.extend(evals)
        if branch.bn is not None and bn.keys() == branch.bn.schema.keys() and len(bn["eval_step"]):
            branch.bn = branch.bn.copy(
                branch.bn.count_until("eval_step", int(bn["eval_step"][0]) - 1)
            )
            for i in range(len(bn["eval_step"])):
                _append_bn(branch, {k: v[i] for k, v in bn.items()})
    branch.events.extend(_freeze(e) for e in meta.get("events", []))


def _events_until(events: list, step: int, count: int | None) -> list:
    """The events up to a fork: the first ``count`` if known and consistent, else by step."""
    by_step = [e for e in events if e["step"] <= step]
    if (
        isinstance(count, int)
        and not isinstance(count, bool)
        and 0 <= count <= len(by_step)
        and all(e["step"] <= step for e in events[:count])
    ):
        return list(events[:count])
    return by_step


def _append_bn(branch: _Branch, row: dict) -> None:
    """Append a BatchNorm history row, thinning old rows to stay under the limit."""
    if len(branch.bn) >= MAX_BN_HISTORY_ROWS:
        branch.bn = branch.bn.thinned(keep_last=MAX_BN_HISTORY_ROWS // 2)
    branch.bn.append(**row)


def _check_records(meta: Mapping, name: str) -> None:
    """Check what _load_state and _rebuild_branches take from a checkpoint as is: the
    counters, schedule anchor, recent costs and branch registry. CheckpointError if one lies.
    """
    info, schedule = meta["info"], meta["schedule"]
    for key in ("seq", "step", "branch", "epoch"):
        _whole(f"{name}: info {key!r}", info[key])
    anchor = schedule["anchor"]
    if (
        isinstance(anchor, bool)
        or not isinstance(anchor, (int, float))
        or not math.isfinite(anchor)
        or anchor <= 0
    ):
        raise ckptio.CheckpointError(f"{name}: schedule anchor {anchor!r} is not a number > 0")
    epochs = info["epoch"] - _whole(f"{name}: schedule 'start_epoch'", schedule["start_epoch"])
    make_schedule(schedule["name"], **schedule["params"])(anchor, max(epochs, 0))
    costs = meta["recent_costs"]
    if (
        not isinstance(costs, list)
        or len(costs) > 50
        or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
            for c in costs
        )
    ):
        raise ckptio.CheckpointError(f"{name}: recent_costs is not a list of ≤ 50 numbers")
    branches = meta["branches"]
    if not isinstance(branches, Mapping) or not all(
        isinstance(n, str) and n.isascii() and n.isdigit() for n in branches
    ):
        raise ckptio.CheckpointError(f"{name}: the branch registry is not keyed by branch number")
    for number, record in branches.items():
        _check_branch_record(record, int(number), f"{name}: branch {number}")
    if str(info["branch"]) not in branches:
        raise ckptio.CheckpointError(f"{name}: branch {info['branch']} is not in its registry")


def _check_branch_record(record, number: int, where: str) -> None:
    """A branch's {parent_branch, fork_step, from_checkpoint}; parents have lower numbers."""
    if not isinstance(record, Mapping) or set(record) != {
        "parent_branch",
        "fork_step",
        "from_checkpoint",
    }:
        raise ckptio.CheckpointError(f"{where}: malformed record {record!r:.80}")
    parent = record["parent_branch"]
    if parent is not None and _whole(f"{where}: parent_branch", parent) >= number:
        raise ckptio.CheckpointError(f"{where}: parent branch {parent} is not an earlier one")
    _whole(f"{where}: fork_step", record["fork_step"])
    origin = record["from_checkpoint"]
    if origin is not None and not (isinstance(origin, str) and ckptio.CHECKPOINT_ID.match(origin)):
        raise ckptio.CheckpointError(f"{where}: from_checkpoint {origin!r:.40} is not an id")


def _check_journal(arrays: Mapping, meta: Mapping, template: _Branch) -> None:
    """A journal chunk must fit the run's history tables (``template``'s schemas) exactly:
    else _append_chunk would mix bad rows into the history or fail half-way."""
    number = _whole("branch", meta["branch"])
    _check_branch_record(meta["branch_info"], number, f"branch {number}")
    events = meta["events"]
    if not isinstance(events, list) or not all(
        isinstance(e, Mapping) and isinstance(e.get("kind"), str) for e in events
    ):
        raise ckptio.CheckpointError("events is not a list of events")
    for event in events:
        _whole("an event's step", event.get("step"))
    tables = (
        ("steps/", template.steps, "step"),
        ("evals/", template.evals, "eval_step"),
        ("bn/", template.bn, "eval_step"),
    )
    for prefix, table, index in tables:
        block = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
        if not block:
            continue
        if table is None or block.keys() != table.schema.keys():
            raise ckptio.CheckpointError(f"{prefix} columns {sorted(block)} do not fit this run")
        rows = len(block[index])
        for column, (dtype, shape) in table.schema.items():
            value = block[column]
            if value.shape != (rows, *shape) or (value.dtype.kind in "iu") != (dtype.kind in "iu"):
                raise ckptio.CheckpointError(
                    f"{prefix}{column}: shape {value.shape} dtype {value.dtype} does not fit"
                )
        if rows and (block[index][0] < 0 or np.any(np.diff(block[index]) < 0)):
            raise ckptio.CheckpointError(f"{prefix}{index} is not in order")


def _whole(what: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise ckptio.CheckpointError(f"{what} is {value!r:.40}, not a whole number ≥ 0")
    return value


def _truncate(branch: _Branch, last_step: int):
    if last_step < 0:
        return
    branch.steps = branch.steps.copy(branch.steps.count_until("step", last_step))
    n_evals = branch.evals.count_until("eval_step", last_step)
    branch.evals = branch.evals.copy(n_evals)
    if branch.bn is not None:
        branch.bn = branch.bn.copy(branch.bn.count_until("eval_step", last_step))
    branch.events = [e for e in branch.events if e["step"] <= last_step]


def confusion_matrix(y_true, y_pred, n_classes) -> np.ndarray:
    """(C, C) counts: rows are true classes, columns predicted ones."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def _clean_note(note) -> str:
    if not isinstance(note, str):
        raise ValueError(f"a note must be text, got {type(note).__name__}")
    note = "".join(ch for ch in note if ch.isprintable() or ch == " ")
    if len(note) > MAX_NOTE_LENGTH:
        raise ValueError(f"a note may hold at most {MAX_NOTE_LENGTH} characters, got {len(note)}")
    return note


def _write_json_atomic(path: Path, obj) -> None:
    temp = path.with_name(f".{path.name}{ckptio.TEMP_MARK}{os.getpid()}")
    with open(temp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def _new_run_id(checkpoint_dir: Path) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id, n = f"run-{stamp}", 1
    while (checkpoint_dir / run_id).exists():
        n += 1
        run_id = f"run-{stamp}-{n}"
    return run_id


def list_runs(checkpoint_dir) -> list[str]:
    """Run ids in ``checkpoint_dir``, oldest first (by the time run.json was written)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    runs = [
        p
        for p in folder.iterdir()
        if p.is_dir() and ckptio.RUN_ID.match(p.name) and (p / "run.json").is_file()
    ]
    return [p.name for p in sorted(runs, key=lambda p: ((p / "run.json").stat().st_mtime, p.name))]
