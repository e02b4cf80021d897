"""Observers: small objects the worker calls after each step, which may ask for a command.

An observer never changes the run itself. It returns a :class:`Request` (a checkpoint,
a hyperparameter change, a rollback, a pause), and the worker applies it at once, at
the same safe point between two steps, exactly as it applies a user's command
(Hugging Face's ``TrainerControl``: an observer asks, the loop decides).

- :class:`LiveViews` publishes the BatchNorm picture and the decision regions at every
  evaluation and after a restore;
- :class:`Autopilot` applies the assistant's first suggestion when switched on;
- :class:`PeriodicCheckpoints` asks for a checkpoint every ``every`` steps, and at an
  evaluation whose dev accuracy beats every checkpoint of the lineage, both paced by
  the run's retention policy.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from dlcore import analysis, assistant, loop, retention


@dataclass(frozen=True)
class Request:
    """What an observer asks the worker to do now (all fields optional).

    checkpoint: a checkpoint kind to write ("periodic" ones are written in the
    background); update: hyperparameter changes (a pre-change checkpoint first);
    rollback: a checkpoint id; pause: stop training; source: who asks, for the event
    log; log: details of an event to record with it (its kind included).
    """

    checkpoint: str | None = None
    note: str = ""
    update: Mapping | None = None
    rollback: str | None = None
    pause: bool = False
    source: str = ""
    log: Mapping | None = None


class Observer:
    """Called by the worker thread between two steps; the hooks' defaults do nothing.

    ``run`` is the :class:`dlcore.run.Run`: observers read its ``state``, ``data`` and
    ``snapshot()``; they publish through its methods, never by assignment.
    """

    def after_step(self, run, row: Mapping, evaluation: Mapping | None) -> Request | None:
        """After a step's row is recorded; ``evaluation`` is its evaluation row, if any."""
        return None

    def after_restore(self, run) -> None:
        """After the state was replaced as a whole: a rollback, an adoption, a reopen."""


class LiveViews(Observer):
    """The BatchNorm picture and the decision regions of the current weights, published
    for the snapshot at every evaluation (with a row of BN history) and after a restore,
    so that the pages never show a stale state."""

    def after_step(self, run, row, evaluation):
        if evaluation is not None:
            self.publish(run, record=True)
        return None

    def after_restore(self, run):
        self.publish(run, record=False)

    def publish(self, run, record: bool) -> None:
        """Publish the picture now; ``record``: also a row of BN history (an evaluation)."""
        state, data = run.state, run.data
        sample = data.X_train[:loop.EVAL_ROWS]  # population statistics of a sample
        latest, bn_row = analysis.batchnorm_picture(state.network, sample,
                                                    state.last_batch_stats)
        grid = (analysis.decision_regions(state.network, data.X_train, data.y_train)
                if data.n_features == 2 else None)
        run.publish_live_views(latest, grid, {"eval_step": state.step, **bn_row}
                               if record else None)


class Autopilot(Observer):
    """Applies the assistant's first suggestion at each evaluation, if switched on; each
    one is logged as an event, after a pre-change checkpoint that undoes it."""

    def __init__(self, enabled: bool = False):
        self.enabled = enabled

    def after_step(self, run, row, evaluation):
        if not (self.enabled and evaluation is not None):
            return None
        for suggestion in assistant.suggest(run.snapshot()):
            action = suggestion.action
            log = {"kind": "autopilot", "rule": suggestion.rule, "title": suggestion.title,
                   "evidence": suggestion.evidence}
            return Request(update=action.get("update"), rollback=action.get("rollback"),
                           pause=bool(action.get("pause")),
                           source=f"autopilot: {suggestion.rule}", log=log)
        return None


#: A new best dev accuracy this much above the best checkpoint's is saved at once, however
#: soon after the last periodic checkpoint (a fast run improves 20 points in seconds).
BEST_MARGIN = 0.005


class PeriodicCheckpoints(Observer):
    """A periodic checkpoint every ``every`` steps (0: never), at most one per
    ``min_seconds`` of the run's retention policy; and, with ``save_best``, one at an
    evaluation whose dev accuracy beats every checkpoint of the lineage (at once if by
    BEST_MARGIN, else within the same pace). Written in the background."""

    def __init__(self, every: int):
        self.every = every

    def after_step(self, run, row, evaluation):
        policy, now = run.retention, time.time()
        last = run.checkpoints.last_periodic_time
        if retention.periodic_due(policy, row["step"], self.every, now, last):
            return Request(checkpoint="periodic")
        if not (policy.save_best and evaluation is not None):
            return None
        dev = evaluation["dev_accuracy"]
        saved = [c["metrics"]["dev_accuracy"] for c in
                 assistant.lineage_checkpoints(run.snapshot())
                 if "dev_accuracy" in c["metrics"]]
        best = max(saved, default=-math.inf)
        paced = last is None or not 0 <= now - last < policy.min_seconds
        if math.isfinite(dev) and dev > best and (paced or dev >= best + BEST_MARGIN):
            return Request(checkpoint="periodic",
                           note=f"best dev accuracy so far ({dev:.1%})")
        return None
