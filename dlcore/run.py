"""The worker's side of one run: what the training thread does to it, command by command.

A :class:`Run` owns the training state, the branch tree, the run's folder and the
observers, and keeps what snapshots read behind one lock. Only the worker thread of
its :class:`dlcore.trainer.Trainer` calls its methods (except :meth:`Run.snapshot`);
``HANDLERS`` maps each command type of :mod:`dlcore.commands` to the method applying it.

The state is only ever swapped whole (a rollback builds a fresh, fully checked
``TrainingState`` first), and the step, epoch, α and hyperparameters that snapshots
show are published under the lock after each step and each command: a snapshot sees
the run before or after a command, never half-way through one.

Checkpoints (listing, writing, the background write) are :mod:`dlcore.saving`'s.
"""

from __future__ import annotations

import collections
import threading
import time
import traceback
from types import MappingProxyType

from dlcore import commands, loop
from dlcore.branches import BranchTree, check_registry
from dlcore.checkpoint import CheckpointError
from dlcore.history import EXACT_STEPS
from dlcore.hparams import RUN_SETTINGS, validate_hparams
from dlcore.observers import Autopilot, LiveViews, PeriodicCheckpoints, Request
from dlcore.retention import RetentionPolicy
from dlcore.saving import Checkpoints
from dlcore.snapshot import Snapshot, bn_views, branch_views, freeze
from dlcore.state import TrainingState
from dlcore.store import CHECKPOINT_FORMAT, RunStore

STATUSES = ("idle", "running", "paused", "diverged", "error", "stopped")
#: With no checkpoint for this many steps, the history is journalled on its own: only
#: journalled rows are ever bucketed, so memory stays bounded between checkpoints too.
MAX_UNJOURNALLED_STEPS = EXACT_STEPS // 2
#: Evaluations take at most the config's ``eval_share`` of the training time (0.05 by
#: default): one that took longer than EVAL_FLOOR_SECONDS waits until 1/share − 1 times as
#: long has been spent training (multiples of eval_every in between are skipped), so a
#: large data set trains at ~95 % of its speed without evaluations (at 0.1 the bound
#: was exactly the 0.9 promised, with no room for anything else an evaluation costs).
EVAL_FLOOR_SECONDS = 0.05


class Run:
    """One run as the worker thread drives it. See the module docstring."""

    def __init__(self, config, data, store: RunStore, state: TrainingState, tree: BranchTree):
        self.config, self.data, self.store = config, data, store
        self.state, self.tree = state, tree
        self.lock = threading.RLock()
        self.status = "paused"
        self.steps_left: int | None = None  # None: run until paused
        self.error: str | None = None
        self.error_traceback: str | None = None
        self.divergence: dict | None = None
        self.checkpoints = Checkpoints(self)
        self.speed_limit: float | None = None
        self.retention = _retention_policy(config, store)
        self.rate_times: collections.deque = collections.deque(maxlen=200)
        self.live_views = LiveViews()
        self.autopilot = Autopilot()
        self.observers = [self.live_views, self.autopilot,
                          PeriodicCheckpoints(config.checkpoint_every)]
        self._latest_bn: MappingProxyType = MappingProxyType({})
        self._decision_grid = None
        self._published: tuple = ()
        self._frozen_config = freeze(config.to_dict())
        sample = loop.evaluation_sample(data)
        self._dataset = MappingProxyType({
            "name": config.dataset_name or data.name, "n_features": data.n_features,
            "n_classes": data.n_classes, "n_train": len(data.y_train),
            "n_dev": len(data.y_dev), "class_names": tuple(str(c) for c in data.class_names),
            "train_evaluated": len(sample[1]), "dev_evaluated": len(sample[3]),
            "dev_source": data.dev_source, "feature_shape": tuple(data.feature_shape)})
        self._layers = tuple(k.split(".")[0] for k in state.network.weight_keys)
        self._evaluated = (0.0, 0.0)  # (seconds the last evaluation took, when it ended)
        self.publish_state()

    # -- what snapshots read ------------------------------------------------------------

    def publish_state(self) -> None:
        """Make the state's counters and hyperparameters what snapshots show."""
        state = self.state
        with self.lock:
            if not self._published or self._published[3] is not state.hparams:
                frozen = freeze(state.hparams)
            else:
                frozen = self._published[4]
            self._published = (state.step, state.epoch, state.alpha(), state.hparams, frozen)

    def publish_live_views(self, latest_bn, grid, bn_row=None) -> None:
        with self.lock:
            self._latest_bn, self._decision_grid = MappingProxyType(latest_bn), grid
            if bn_row is not None:
                self.tree.current.record_bn(bn_row)

    def settings(self) -> dict:
        """Hyperparameters plus the run settings (speed limit, autopilot, retention)."""
        return {**self.state.hparams, **self._run_settings()}

    def published_settings(self) -> dict:
        """:meth:`settings` as snapshots show them (for checks in a caller's thread)."""
        with self.lock:
            return {**self._published[3], **self._run_settings()}

    def _run_settings(self) -> dict:
        return {"speed_limit": self.speed_limit, "autopilot": self.autopilot.enabled,
                "retention": self.retention.to_dict()}

    def snapshot(self) -> Snapshot:
        with self.lock:
            step, epoch, alpha, _, hparams = self._published
            branch = self.tree.current
            return Snapshot(
                run_id=self.store.run_id, status=self.status, step=step, epoch=epoch,
                alpha=alpha, hparams=hparams, speed_limit=self.speed_limit,
                autopilot=self.autopilot.enabled, steps_per_second=self.steps_per_second(),
                retention=MappingProxyType(self.retention.to_dict()),
                history=MappingProxyType(branch.history()),
                events=tuple(branch.events),  # frozen when recorded: no copy per snapshot
                checkpoints=tuple(self.checkpoints.listed),
                damaged=tuple(freeze(d) for d in self.checkpoints.damaged),
                branch=self.tree.active, branches=branch_views(self.tree),
                bn=bn_views(self._latest_bn, branch), error=self.error,
                error_traceback=self.error_traceback,
                divergence=freeze(self.divergence) if self.divergence else None,
                config=self._frozen_config, dataset=self._dataset, layers=self._layers,
                last_good_checkpoint=self.checkpoints.last_good,
                checkpoint_dir=str(self.store.dir),
                decision_grid=self._decision_grid,
            )

    def steps_per_second(self) -> float:
        times = self.rate_times
        if len(times) < 2 or time.monotonic() - times[-1] > 2.0:
            return 0.0
        return (len(times) - 1) / max(times[-1] - times[0], 1e-9)

    def seconds_until_next_step(self) -> float:
        if not self.speed_limit or not self.rate_times:
            return 0.0
        return max(0.0, self.rate_times[-1] + 1.0 / self.speed_limit - time.monotonic())

    # -- training -----------------------------------------------------------------------

    def train(self) -> None:
        """One step and what follows it (evaluation, observers' requests); a failure
        anywhere stops training with the error shown."""
        try:
            self._step_and_observe()
        except Exception as error:
            self.fail(error)
            return
        if self.steps_left is not None:
            self.steps_left -= 1
            if self.steps_left <= 0:
                # Whoever sees "paused" also sees a checkpoint of this very step listed.
                self.checkpoints.finish_background_or_stop(wait=True)
                with self.lock:
                    self.steps_left = None
                    if self.status == "running":
                        self.status = "paused"

    def _step_and_observe(self) -> None:
        result = loop.train_step(self.state, self.data,
                                 divergence_factor=self.config.divergence_factor)
        if isinstance(result, loop.Divergence):
            self.diverge(result.cause)
            return
        with self.lock:  # the row and the counters together: snapshots see both or neither
            self.tree.current.record_step(result)
            self.rate_times.append(time.monotonic())
            self.publish_state()
        if self.tree.current.unjournalled_steps() > MAX_UNJOURNALLED_STEPS:
            self.checkpoints.write_journal()  # then the oldest rows may be bucketed
        evaluation = None
        if self.state.step % self.state.hparams["eval_every"] == 0 and self._evaluation_due():
            start = time.perf_counter()
            evaluation = self.evaluate()
            end = time.perf_counter()
            self._evaluated = (end - start, end)
        for observer in self.observers:
            request = observer.after_step(self, result, evaluation)
            if request is not None:
                self.apply(request)
                if self.status != "running":
                    break

    def evaluate(self) -> dict:
        row = loop.evaluate(self.state, self.data)
        with self.lock:
            self.tree.current.record_evaluation(row)
        return row

    def _evaluation_due(self) -> bool:
        seconds, ended = self._evaluated
        share = self.config.eval_share
        return (share >= 1 or seconds < EVAL_FLOOR_SECONDS
                or time.perf_counter() - ended >= seconds * (1 / share - 1))

    def apply(self, request: Request) -> None:
        """Carry out what an observer asked for, as the matching command would."""
        if request.checkpoint:
            self.checkpoints.write(request.checkpoint, request.note,
                                   background=request.checkpoint == "periodic")
        if request.update:
            self.update(commands.Update(dict(request.update), source=request.source))
        if request.rollback:
            arrays, meta, state = self.read_checkpoint(self.store.checkpoint_path(
                request.rollback))
            self.rollback(commands.Rollback(meta, state))
        if request.pause:
            self.pause(commands.Pause())
        if request.log:
            details = dict(request.log)
            with self.lock:
                self.record_event(details.pop("kind"), **details)

    def diverge(self, cause: str) -> None:
        self.checkpoints.finish_background_or_stop(wait=True)  # it may be the last good one
        with self.lock:
            self.status = "diverged"
            self.steps_left = None
            last_good = self.checkpoints.last_good
            self.divergence = {"step": self.state.step + 1, "cause": cause,
                               "last_good_checkpoint": last_good, "alpha": self.state.alpha()}
            self.record_event("divergence", cause=cause, last_good_checkpoint=last_good)

    def fail(self, error: BaseException) -> None:
        with self.lock:
            self.status = "error"
            self.steps_left = None
            self.error = f"{type(error).__name__}: {error}"
            self.error_traceback = traceback.format_exc()
            self.record_event("error", message=self.error)

    def record_event(self, kind: str, **details):
        """Call with the lock held. Returns the event as recorded (frozen)."""
        return self.tree.current.record_event(kind, self.state.step, self.tree.active,
                                              **details)

    # -- commands (HANDLERS) --------------------------------------------------------------

    def start_training(self, command: commands.Train) -> None:
        with self.lock:
            self.steps_left = command.steps
            self.status = "running"
            self.error = None
            self.error_traceback = None
            if self.divergence is not None:
                self.divergence = dict(self.divergence, resumed=True)

    def pause(self, command: commands.Pause) -> None:
        with self.lock:
            self.steps_left = None
            if self.status == "running":
                self.status = "paused"

    def update(self, command: commands.Update, checkpoint_first: bool = True) -> None:
        """Validate against the state as it is now, write a pre-change checkpoint, apply.

        If the checkpoint can't be written, no part of the change applies, run settings
        included, and its error is raised.
        """
        changes = validate_hparams(command.changes, self.settings(), len(self.data.y_train))
        carry_moments = changes.pop("carry_moments", False)
        settings = {name: changes.pop(name) for name in RUN_SETTINGS if name in changes}
        # 1) a checkpoint first, so that the change can be undone
        if changes and checkpoint_first:
            self.checkpoints.write("pre-change", "before " + ", ".join(sorted(changes)))
        with self.lock:
            if "speed_limit" in settings:
                self.speed_limit = settings["speed_limit"]
            if "autopilot" in settings:
                self.autopilot.enabled = settings["autopilot"]
            if "retention" in settings:
                self.retention = RetentionPolicy.from_dict(settings["retention"])
        if "retention" in settings:  # kept for the next start, and applied at once
            self.store.write_settings({"retention": self.retention.to_dict()})
            self.checkpoints.thin()
        if not changes:
            return
        # 2) apply to the state; 3) publish, and record old → new values
        details = self.state.change(changes, carry_moments)
        with self.lock:
            self.publish_state()
            self.record_event("change", **details, source=command.source)

    def checkpoint(self, command: commands.Checkpoint) -> str:
        return self.checkpoints.write("manual", command.note)

    def rollback(self, command: commands.Rollback) -> int:
        info = command.meta["info"]
        self._save_branch_being_left(f"before rollback to {info['id']}")
        number = self._restore(command.state, info["branch"], info["step"], info["id"],
                               note=f"rolled back to {info['id']}",
                               event_count=info.get("event_count"))
        if command.changes:  # the rollback checkpoint just written is this change's undo point
            self.update(commands.Update(command.changes), checkpoint_first=False)
        return number

    def adopt(self, command: commands.Adopt) -> int:
        """Continue from a sandbox's final state on a new branch (a committed look-ahead),
        forked where the sandbox started, wherever the run is now."""
        start_step, start_branch, arrays, meta, history, events = command.payload
        state = TrainingState.from_checkpoint(arrays, meta, self.config, self.data)
        source = self.tree.branches.get(start_branch)
        if source is None or not source.steps.covers(start_step):
            raise ValueError(f"branch {start_branch} at step {start_step}, where this "
                             "look-ahead started, is not in this run's history")
        self._save_branch_being_left("before committing a look-ahead")
        return self._restore(state, start_branch, start_step, None,
                             note=command.note, history=history,
                             events=events)

    def export(self, command: commands.Export) -> tuple[dict, dict]:
        """``(arrays, meta)`` of the complete state as a checkpoint holds it, changing nothing."""
        arrays, meta = self.state.to_checkpoint()
        meta["info"].update(id=None, kind="live", note="", branch=self.tree.active,
                            parent=None, metrics={}, time=time.time())
        return arrays, {"format": CHECKPOINT_FORMAT, **meta, "config": self.config.to_dict(),
                        "branches": self.tree.registry()}

    def delete(self, command: commands.Delete) -> None:
        checkpoint_id = command.path.stem
        if checkpoint_id == self.checkpoints.last_good:
            raise ValueError(f"{checkpoint_id} is the checkpoint the run stands on; it can't "
                             "be deleted")
        self.store.delete(command.path)
        self.checkpoints.forget(checkpoint_id, command.path.name)

    def finish(self, command: commands.Stop | None = None) -> None:
        """Save anything unsaved in a final checkpoint; the run is "stopped" afterwards."""
        self.checkpoints.finish_background_or_stop(wait=True)
        with self.lock:
            # Also unsaved: a change (or other event) made since the last checkpoint, e.g.
            # update() then stop() with no step between would otherwise lose the change.
            unsaved = (self.state.step != self.checkpoints.checkpointed_step()
                       or self.tree.current.has_unjournalled_events())
        if unsaved and self.status not in ("diverged", "error"):
            try:
                self.checkpoints.write("final", "saved on stop")
            except Exception as error:
                self.fail(error)
        with self.lock:
            self.status = "stopped"

    # -- restoring ------------------------------------------------------------------------

    def read_checkpoint(self, path) -> tuple[dict, dict, TrainingState]:
        """A checkpoint of this run, fully checked, and the state it holds (built fresh)."""
        return read_checked_checkpoint(self.store, path, self.config, self.data)

    def _save_branch_being_left(self, note: str) -> None:
        """Checkpoint the branch being left, so its whole history stays on disk."""
        if self.state.step != self.checkpoints.checkpointed_step():
            try:
                self.checkpoints.write("pre-change", note)
            except ValueError:  # NaN/inf after an overflow: keep just its history
                self.checkpoints.write_journal()

    def _restore(self, state: TrainingState, parent: int, fork_step: int,
                 from_checkpoint: str | None, note: str, event_count=None, history=None,
                 events=()) -> int:
        """Swap in ``state`` on a new branch forked at ``fork_step`` of ``parent``; then its
        first checkpoint. Returns the new branch's number."""
        branch = self.tree.fork(parent, fork_step, from_checkpoint, event_count, history,
                                events)
        with self.lock:  # the whole swap at once: a snapshot sees the run before or after
            self.state = state
            number = self.tree.add(branch)
            self.publish_state()
            self.status = "paused"
            self.steps_left = None
            self.divergence = None
            self.error = None
            self.error_traceback = None
            # None after a look-ahead: no file holds its state until its first checkpoint
            self.checkpoints.last_good = from_checkpoint
            self.record_event("rollback", checkpoint=from_checkpoint, branch=number, note=note)
        for observer in self.observers:
            observer.after_restore(self)
        try:
            self.checkpoints.write("rollback", note, parent=from_checkpoint)
        except OSError as error:
            # The fork itself is done and consistent in memory; only its first save failed.
            # Shown as an error (training stops); the next checkpoint saves the new branch.
            self.fail(error)
        return number

def _retention_policy(config, store: RunStore) -> RetentionPolicy:
    """The policy the run folder's settings hold (set on the Checkpoints page), else the
    config's; a damaged settings file falls back to the config's."""
    saved = store.read_settings().get("retention")
    try:
        return RetentionPolicy.from_dict(saved if saved is not None else config.retention)
    except ValueError:
        return RetentionPolicy.from_dict(config.retention)


def read_checked_checkpoint(store: RunStore, path, config, data):
    """``(arrays, meta, state)`` of a checkpoint of this run, every field checked: the
    file, its own metadata, its branch registry, that it is this run's (config), and the
    state it holds (built fresh). CheckpointError (a ValueError) names file and reason."""
    arrays, meta = store.read_checkpoint(path)
    try:
        check_registry(meta["branches"], meta["info"]["branch"])
        # Fields the file lacks are ones added to RunConfig since: they don't count.
        ours = config.to_dict()
        differs = sorted(k for k, v in meta["config"].items() if k in ours and ours[k] != v)
        if differs:
            raise CheckpointError(f"from another run (its {', '.join(differs)} differ)")
        state = TrainingState.from_checkpoint(arrays, meta, config, data)
    except CheckpointError as error:
        raise CheckpointError(f"{path.name}: {error}") from None
    except (KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path.name}: incompatible or incomplete ({error})") from None
    return arrays, meta, state


#: Each command type and the Run method that applies it.
HANDLERS = {
    commands.Train: Run.start_training,
    commands.Pause: Run.pause,
    commands.Update: Run.update,
    commands.Checkpoint: Run.checkpoint,
    commands.Rollback: Run.rollback,
    commands.Adopt: Run.adopt,
    commands.Export: Run.export,
    commands.Delete: Run.delete,
    commands.Stop: Run.finish,
}
