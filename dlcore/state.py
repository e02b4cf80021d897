"""The training state: everything a training step reads and changes, and nothing else.

A :class:`TrainingState` owns the network (params and BatchNorm buffers), the optimizer
(moments and t), the decay schedule with its anchor (α0 and the epoch it counts from),
the mini-batch iterator (epoch, position, permutation, RNG), the dropout RNG, the step
counter, the hyperparameters in force and the recent costs the divergence guard reads.
A checkpoint holds exactly this (:meth:`TrainingState.to_checkpoint`), and restoring is
written once (:meth:`TrainingState.from_checkpoint`): every field is checked while fresh
objects are built from it, so a caller swaps in a whole, valid state or nothing at all.

The live run, sandboxes and search trials all train a ``TrainingState`` with the same
step function (:func:`dlcore.loop.train_step`).
"""

from __future__ import annotations

import collections
import copy
import math
from collections.abc import Mapping

import numpy as np

from dlcore.checkpoint import CheckpointError, json_safe, whole
from dlcore.data import MiniBatchIterator
from dlcore.hparams import (
    OPTIMIZER_HPARAMS,
    REQUIRED_HPARAMS,
    RunConfig,
    build_optimizer,
    switched_optimizer,
    validate_hparams,
)
from dlcore.network import Architecture, Network
from dlcore.schedules import Schedule, make_schedule

#: α never falls below this: a decay schedule that would take it to 0 (polynomial with
#: end = 0, an exponential with a tiny base) holds it here instead, so the run goes on
#: and a new α or schedule brings it back.
ALPHA_FLOOR = 1e-12
#: The divergence guard compares each cost with the mean of this many recent ones.
RECENT_COSTS = 50
#: No trained weight, buffer or moment is anywhere near this large; a checkpoint that
#: holds one is damaged (float32's largest value is 3.4e38, and the first forward pass
#: would overflow).
MAX_MAGNITUDE = 1e30


def architecture_for(config: RunConfig, data) -> Architecture:
    """The network's shapes for a run's config on its data set."""
    return Architecture(
        n_features=data.n_features,
        hidden=config.hidden,
        n_classes=data.n_classes,
        activation=config.activation,
        batchnorm=config.batchnorm,
        bn_position=config.bn_position,
        init=config.init,
        dtype=config.dtype,
    )


def anchor_for(schedule: Schedule, alpha_now: float) -> float:
    """α0 such that ``schedule`` gives ``alpha_now`` at its epoch 0.

    Every schedule is affine in α0, so two evaluations give the line.
    """
    at_one = schedule(1.0, 0)
    slope = schedule(2.0, 0) - at_one
    return (alpha_now - (at_one - slope)) / slope


class TrainingState:
    """One run's complete training state. See the module docstring.

    Only the thread that trains it may touch it; readers in other threads see copies
    that the owner publishes (``Trainer.snapshot``).
    """

    def __init__(self, network: Network, optimizer, schedule: Schedule, schedule_anchor: float,
                 schedule_start_epoch: int, iterator: MiniBatchIterator, dropout_rng,
                 step: int, hparams: dict, recent_costs, schedule_start_step: int = 0):
        self.network = network
        self.optimizer = optimizer
        self.schedule = schedule
        self.schedule_anchor = schedule_anchor
        self.schedule_start_epoch = schedule_start_epoch
        self.schedule_start_step = schedule_start_step
        self.iterator = iterator
        self.dropout_rng = dropout_rng
        self.step = step
        self.hparams = hparams
        self.recent_costs = collections.deque(recent_costs, maxlen=RECENT_COSTS)
        # Not state: what the last step left behind for live views and a cache of the step.
        self.last_batch_stats: dict = {}
        self.last_grads: dict = {}
        self.grad_span_cache: tuple = (None, None)
        self.ratio_columns = {key: f"update_ratio/{key.split('.')[0]}"
                              for key in network.weight_keys}

    @classmethod
    def fresh(cls, config: RunConfig, data) -> TrainingState:
        """Step 0 of a new run: seeded weights, the config's starting hyperparameters."""
        hparams = config.initial_hparams()
        validate_hparams(hparams, hparams, len(data.y_train))
        schedule = make_schedule(hparams["schedule"], **hparams["schedule_params"])
        return cls(
            network=Network(architecture_for(config, data), seed=config.seed),
            optimizer=build_optimizer(hparams),
            schedule=schedule,
            schedule_anchor=anchor_for(schedule, hparams["lr"]),
            schedule_start_epoch=0,
            iterator=MiniBatchIterator(len(data.y_train), hparams["batch_size"],
                                       seed=config.seed + 1),
            dropout_rng=np.random.default_rng(config.seed + 2),
            step=0,
            hparams=hparams,
            recent_costs=(),
        )

    # -- reading ---------------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self.iterator.epoch

    def alpha(self) -> float:
        """The α of the next step: the schedule at the epochs (or steps, by the
        ``schedule_unit``) since it started, never below ALPHA_FLOOR."""
        if self.hparams.get("schedule_unit") == "steps":
            elapsed = self.step - self.schedule_start_step
        else:
            elapsed = self.iterator.epoch - self.schedule_start_epoch
        return max(float(self.schedule(self.schedule_anchor, elapsed)), ALPHA_FLOOR)

    # -- changing ---------------------------------------------------------------------

    def change(self, changes: Mapping, carry_moments: bool = False) -> dict:
        """Apply validated hyperparameter changes; they act from the next step.

        1) the optimizer keeps its moments unless its kind changes (then fresh, or
           carrying what transfers); 2) α typed by hand re-anchors the schedule there,
           and a new schedule starts from α now, counting epochs from now; 3) a new
           mini-batch size applies from the next batch, the epoch continues.
        Returns what a "change" event records: ``changes`` (key -> [old, new]) and
        ``alpha`` ([α before, α after]).
        """
        old, alpha_before = {k: self.hparams.get(k) for k in changes}, self.alpha()
        new = {**self.hparams, **changes}
        if changes.keys() & {"optimizer", *(k for ks in OPTIMIZER_HPARAMS.values() for k in ks)}:
            self.optimizer = switched_optimizer(self.optimizer, new, self.network.params,
                                                carry_moments)
        if changes.keys() & {"schedule", "schedule_params", "schedule_unit", "lr"}:
            if "lr" not in changes:
                new["lr"] = self.alpha()
            self.schedule = make_schedule(new["schedule"], **new["schedule_params"])
            self.schedule_anchor = anchor_for(self.schedule, new["lr"])
            self.schedule_start_epoch = self.iterator.epoch
            self.schedule_start_step = self.step
        if "batch_size" in changes:
            self.iterator.batch_size = new["batch_size"]
        self.hparams = new
        details = {"changes": {k: [old[k], new[k]] for k in changes},
                   "alpha": [alpha_before, self.alpha()]}
        return {**details, "carry_moments": True} if carry_moments else details

    # -- checkpoints ------------------------------------------------------------------

    def to_checkpoint(self) -> tuple[dict, dict]:
        """``(arrays, meta)``: copies of every array, and the rest as JSON-safe values.

        arrays: ``params/…``, ``buffers/…``, ``optim/<param>/<moment>``,
        ``data/permutation``; meta: ``architecture``, ``optimizer``, ``schedule``,
        ``iterator``, ``dropout_rng``, ``recent_costs`` and ``info`` with ``step``,
        ``epoch``, ``hparams`` and ``alpha`` (a checkpoint adds its own info to it).
        """
        arrays = self.network.state_arrays()
        for key, value in self.optimizer.state_dict()["moments"].items():
            arrays[f"optim/{key}"] = value
        iterator = self.iterator.state_dict()
        arrays["data/permutation"] = iterator.pop("permutation")
        meta = {
            "architecture": self.network.arch.to_dict(),
            "optimizer": {"name": self.optimizer.name, "t": self.optimizer.t},
            "schedule": {
                "name": self.schedule.name,
                "params": self.schedule.params,
                "anchor": self.schedule_anchor,
                "start_epoch": self.schedule_start_epoch,
                "start_step": self.schedule_start_step,
            },
            "iterator": json_safe(iterator),
            "dropout_rng": json_safe(self.dropout_rng.bit_generator.state),
            "recent_costs": list(self.recent_costs),
            "info": {
                "step": self.step,
                "epoch": self.epoch,
                "hparams": json_safe(self.hparams),
                "alpha": self.alpha(),
            },
        }
        return arrays, meta

    def copy(self, config: RunConfig, data) -> TrainingState:
        """An independent state equal to this one (what a sandbox trains)."""
        arrays, meta = self.to_checkpoint()
        return TrainingState.from_checkpoint(arrays, meta, config, data)

    @classmethod
    def from_checkpoint(cls, arrays: Mapping, meta: Mapping, config: RunConfig,
                        data) -> TrainingState:
        """A fresh state built from ``(arrays, meta)`` as :meth:`to_checkpoint` makes them.

        Every field's type and range is checked, and its consistency with the others:
        the architecture and every shape, variances > 0, magnitudes below
        MAX_MAGNITUDE, hyperparameters, optimizer t ≤ step, the schedule's start epoch
        ≤ the epoch, the iterator's batch size and epoch against the hyperparameters
        and the counters, the RNG states. Raises CheckpointError (a ValueError) with
        the reason; nothing outside the new objects is touched.
        """
        try:
            return _restore(cls, arrays, meta, config, data)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError,
                IndexError) as error:
            raise CheckpointError(f"incompatible or incomplete ({error})") from None


def _restore(cls, arrays, meta, config, data) -> TrainingState:
    """The work of TrainingState.from_checkpoint, in the order things depend on each other."""
    info = meta["info"]
    n_train = len(data.y_train)
    # 1) the architecture, then params and buffers into a fresh network
    architecture = architecture_for(config, data)
    if Architecture.from_dict(meta["architecture"]) != architecture:
        raise CheckpointError(f"another architecture ({meta['architecture']}) than this "
                              f"run's ({architecture.to_dict()})")
    unexpected = sorted(k for k in arrays if k != "data/permutation"
                        and not k.startswith(("params/", "buffers/", "optim/")))
    if unexpected or "data/permutation" not in arrays:
        raise CheckpointError(f"unexpected arrays {unexpected}" if unexpected
                              else "no data/permutation array")
    for key, value in arrays.items():
        _check_magnitude(key, value)
    network = Network(architecture)
    network.load_state_arrays(
        {k: v for k, v in arrays.items() if k.startswith(("params/", "buffers/"))})
    for name, buffer in network.buffers.items():
        if name.endswith("running_var") and not np.all(buffer > 0):
            raise CheckpointError(f"{name} holds a variance ≤ 0")
    # 2) hyperparameters, every key known and every value in range
    hparams = info["hparams"]
    if not isinstance(hparams, Mapping):
        raise CheckpointError("its hyperparameters are not a mapping")
    unknown = sorted(set(hparams) - set(config.initial_hparams()), key=str)
    missing = sorted(REQUIRED_HPARAMS - set(hparams))
    if unknown or missing:
        raise CheckpointError(f"unknown hyperparameters {unknown}" if unknown
                              else f"hyperparameters {missing} are missing")
    validate_hparams(hparams, config.initial_hparams() | dict(hparams), n_train)
    hparams = {**config.initial_hparams(), **hparams}
    # 3) the counters agree: each step takes ≥ 1 example (so ≤ n_train steps an epoch)
    #    and completes at most two epochs (one more if the batch size was just raised)
    step, epoch = whole("step", info["step"]), whole("epoch", info["epoch"])
    if epoch > 2 * step or step > (epoch + 1) * n_train:
        raise CheckpointError(f"step {step} and epoch {epoch} cannot both hold with "
                              f"{n_train} training examples")
    # 4) the optimizer: its kind, t ≤ step, every moment shaped like its param
    optimizer = build_optimizer(hparams)
    if meta["optimizer"]["name"] != optimizer.name:
        raise CheckpointError(f"optimizer {meta['optimizer']['name']!r} but hyperparameters "
                              f"say {optimizer.name!r}")
    t = whole("optimizer t", meta["optimizer"]["t"])
    if t > step:
        raise CheckpointError(f"optimizer t = {t} is past step {step}")
    moments = {k.removeprefix("optim/"): v for k, v in arrays.items() if k.startswith("optim/")}
    optimizer.load_state_dict({"t": t, "moments": moments}, params=network.params)
    # 5) the schedule: the one the hyperparameters name, anchored at α0 > 0, from an
    #    epoch that has been reached
    saved = meta["schedule"]
    schedule = make_schedule(saved["name"], **saved["params"])
    if schedule != make_schedule(hparams["schedule"], **hparams["schedule_params"]):
        raise CheckpointError(f"schedule {schedule!r} but hyperparameters say "
                              f"{hparams['schedule']!r} {dict(hparams['schedule_params'])}")
    anchor = saved["anchor"]
    if isinstance(anchor, bool) or not isinstance(anchor, (int, float)) or not (
            math.isfinite(anchor) and anchor > 0):
        raise CheckpointError(f"schedule anchor {anchor!r} is not a number > 0")
    start_epoch = whole("schedule start_epoch", saved["start_epoch"])
    start_step = whole("schedule start_step", saved.get("start_step", 0))  # added since v1
    if start_epoch > epoch or start_step > step:
        raise CheckpointError(f"the schedule counts from epoch {start_epoch} (step "
                              f"{start_step}), after the checkpoint's own epoch {epoch} "
                              f"(step {step})")
    # 6) the data order: this run's examples, the batch size in force, the same epoch
    iterator = MiniBatchIterator(n_train, hparams["batch_size"], seed=0)
    iterator.load_state_dict({**meta["iterator"], "permutation": arrays["data/permutation"]})
    if iterator.batch_size != hparams["batch_size"] or iterator.epoch != epoch:
        raise CheckpointError(f"the iterator (batch size {iterator.batch_size}, epoch "
                              f"{iterator.epoch}) disagrees with the hyperparameters "
                              f"(batch size {hparams['batch_size']}) and the epoch {epoch}")
    # 7) dropout's random generator and the divergence guard's recent costs
    dropout_rng = np.random.Generator(
        MiniBatchIterator._check_rng_state(copy.deepcopy(meta["dropout_rng"])))
    costs = meta["recent_costs"]
    if not isinstance(costs, list) or len(costs) > RECENT_COSTS or not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
            for c in costs):
        raise CheckpointError(f"recent_costs is not a list of ≤ {RECENT_COSTS} numbers")
    return cls(network, optimizer, schedule, float(anchor), start_epoch, iterator,
               dropout_rng, step, hparams, costs, schedule_start_step=start_step)


def _check_magnitude(key: str, value: np.ndarray) -> None:
    if value.dtype.kind == "f" and value.size and float(np.max(np.abs(value))) > MAX_MAGNITUDE:
        raise CheckpointError(f"{key} holds a value beyond ±{MAX_MAGNITUDE:g}")
