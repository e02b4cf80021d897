"""The training engine's public face: one run, trained step by step in a background thread.

``Trainer(config, checkpoint_dir)`` creates a run; ``Trainer.open(checkpoint_dir)``
reopens the newest one. Its public methods are the only way anything changes a run.
They may be called from any thread: each becomes a command (:mod:`dlcore.commands`) on
a bounded queue that the worker thread drains between two training steps, so a change
never lands in the middle of a step. ``update`` and ``rollback`` check their arguments
in the caller's thread first and raise ``ValueError`` (nothing is queued then); both
wait for the worker, so a call that returns has been applied.

The UI reads :meth:`Trainer.snapshot`, an immutable copy (:mod:`dlcore.snapshot`).

Where the rest lives: the worker's side of each command in :mod:`dlcore.run`, the
training step in :mod:`dlcore.loop`, the state it trains in :mod:`dlcore.state`, the
branches and their history in :mod:`dlcore.branches`, the folder on disk in
:mod:`dlcore.store`, reading a run back from it in :mod:`dlcore.reopen`, hyperparameters
in :mod:`dlcore.hparams`.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path

from dlcore import analysis, commands
from dlcore.branches import BranchTree
from dlcore.checkpoint import CheckpointError
from dlcore.history import Schemas
from dlcore.hparams import RUN_SETTINGS, RunConfig, check_number, validate_hparams
from dlcore.reopen import reopened
from dlcore.run import HANDLERS, STATUSES, Run, read_checked_checkpoint
from dlcore.snapshot import Snapshot
from dlcore.state import TrainingState
from dlcore.store import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KINDS,
    MAX_NOTE_LENGTH,
    RunStore,
    clean_note,
    list_runs,
)

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_KINDS", "MAX_NOTE_LENGTH", "STATUSES", "RunConfig",
           "Snapshot", "Trainer", "list_runs"]

#: Commands waiting for the worker; a caller that finds the queue full waits for room
#: (up to QUEUE_WAIT_SECONDS, then RuntimeError), so no caller can pile up unbounded work.
MAX_QUEUED_COMMANDS = 1000
QUEUE_WAIT_SECONDS = 10.0


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
      (run settings included); the OSError is raised to the caller; the run carries on;
    - ``rollback()``: saving the branch being left fails -> OSError, nothing changed; the
      new branch's first checkpoint fails -> the rollback stands, status "error";
    - ``stop()``: the final checkpoint fails -> "stopped" with the error; reopening
      resumes from the last checkpoint written;
    - ``Trainer(...)``: the error is raised and no run folder is left behind.
    """

    # -- creation ------------------------------------------------------------------------

    def __init__(self, config: RunConfig | None = None, checkpoint_dir="checkpoints",
                 run_id: str | None = None, start_from: tuple[dict, dict] | None = None,
                 note: str = ""):
        """A new run of ``config`` in a new folder under ``checkpoint_dir``.

        ``start_from``: ``(arrays, meta)`` of a state to start from instead of fresh
        weights (e.g. a search trial's, ``Trainer.export_state()``'s): checked like a
        checkpoint, it must fit the config's architecture and data. ``note`` goes on the
        initial checkpoint (where the run came from).
        """
        config = config or RunConfig()
        note = clean_note(note)
        store = RunStore.create(checkpoint_dir, run_id)
        try:
            config, data = store.adopt_dataset(config)
            state = (TrainingState.from_checkpoint(*start_from, config, data) if start_from
                     else TrainingState.fresh(config, data))
            run = Run(config, data, store, state, BranchTree(Schemas.of(state.network)))
            run.evaluate()
            run.live_views.publish(run, record=True)
            run.checkpoints.write("initial", note)
            # Last: list_runs only sees folders with a run.json, so a run that failed or
            # was killed before its first checkpoint is never the one open() picks.
            store.write_config(config)
            run.status = "idle"
        except BaseException:
            store.remove()
            raise
        self._attach(run)

    @classmethod
    def open(cls, checkpoint_dir="checkpoints", run_id: str | None = None) -> Trainer:
        """Reopen a run (the newest, or ``run_id``) at its newest valid checkpoint.

        Damaged checkpoint and journal files are listed in ``snapshot().damaged`` and
        skipped; leftover temporary files are removed. Status is "paused".
        """
        if run_id is None:
            runs = list_runs(checkpoint_dir)
            if not runs:
                raise FileNotFoundError(f"no run in {str(checkpoint_dir)!r}")
            run_id = runs[-1]
        store = RunStore(checkpoint_dir, run_id)
        try:
            config = RunConfig.from_dict(store.read_config())
        except (ValueError, TypeError) as error:
            raise ValueError(f"run {run_id!r} has no readable run.json: {error}") from None
        store.check_layout()
        store.clean_temporaries()
        trainer = cls.__new__(cls)
        trainer._attach(reopened(store, config))
        return trainer

    def _attach(self, run: Run) -> None:
        self._run = run
        self.run_id = run.store.run_id
        self.config = run.config
        self.data = run.data
        self._commands: queue.Queue = queue.Queue(maxsize=MAX_QUEUED_COMMANDS)
        self._thread = threading.Thread(target=self._worker, name=f"panda-{self.run_id}",
                                        daemon=True)
        self._thread.start()

    @property
    def run_dir(self) -> Path:
        """The run's folder."""
        return self._run.store.dir

    # -- public API ------------------------------------------------------------------------

    def start(self) -> None:
        """Train continuously until paused (also resumes after pause/divergence/error)."""
        self._send(commands.Train(None))

    resume = start

    def pause(self) -> None:
        self._send(commands.Pause())

    def step(self, n: int = 1) -> None:
        """Train exactly n steps, then pause (works while paused)."""
        self._send(commands.Train(check_number("n", n, 1, integer=True)))

    def update(self, **hparams) -> None:
        """Change hyperparameters live; they apply from the next step.

        Keys: lr, optimizer, beta, beta1, beta2, eps, schedule, schedule_params,
        batch_size, l2, keep_prob, bn_momentum, eval_every; the run settings
        speed_limit (max steps/s; None for unlimited) and autopilot (bool);
        and carry_moments (bool) for an optimizer switch: False starts the new
        optimizer fresh (t = 0); True carries what transfers (see
        :func:`dlcore.hparams.carried_state`). Raises ValueError at once for a bad
        key or value; nothing is queued then. A pre-change checkpoint is written
        before the change, and an event records old → new values.

        Returns once the worker has applied the change, so a call that raises
        nothing has been applied (another caller's change that landed first is
        checked against, too: a change that no longer fits raises ValueError).
        """
        validate_hparams(hparams, self._run.published_settings(), len(self.data.y_train))
        self._send(commands.Update(dict(hparams)), wait=True)

    def checkpoint(self, note: str = "") -> str:
        """Write a manual checkpoint now; returns its id."""
        return self._send(commands.Checkpoint(clean_note(note)), wait=True)

    def rollback(self, checkpoint_id: str, **hparams) -> int:
        """Restore a checkpoint's complete state and continue on a new branch.

        ``hparams`` (as for :meth:`update`) apply on the new branch at once, in
        the same command: e.g. ``rollback(last_good, lr=alpha / 2)`` after a
        divergence. Returns the new branch's number. The run is paused
        afterwards. Raises ValueError for an unknown id, a file that no longer
        loads or a bad hyperparameter; nothing changes then.
        """
        _, meta, state = self._checked(checkpoint_id, "cannot roll back to")
        if hparams:
            settings = {**state.hparams,
                        **{k: self._run.published_settings()[k] for k in RUN_SETTINGS}}
            validate_hparams(hparams, settings, len(self.data.y_train))
        return self._send(commands.Rollback(meta, state, dict(hparams)), wait=True)

    def export_state(self, checkpoint_id: str | None = None) -> tuple[dict, dict]:
        """A copy of the complete training state: the live one, taken between two
        steps, or a checkpoint's. ``(arrays, meta)`` as a checkpoint holds them;
        nothing changes and nothing is written. Sandboxes start from this.
        """
        if checkpoint_id is None:
            return self._send(commands.Export(), wait=True)
        arrays, meta, _ = self._checked(checkpoint_id)
        return arrays, meta

    def adopt(self, sandbox) -> int:
        """Continue the run from a sandbox's state, on a new branch forked where the
        sandbox started (recorded like a rollback, with the sandbox's ``note`` if it has
        one, e.g. "from caviar round 2 trial 3"). Returns the branch number.
        """
        note = clean_note(getattr(sandbox, "note", "") or "look-ahead candidate committed")
        return self._send(commands.Adopt(sandbox.commit_payload(), note), wait=True)

    def delete_checkpoint(self, checkpoint_id: str) -> None:
        """Delete a checkpoint file; never the one the run stands on."""
        self._send(commands.Delete(self._run.store.checkpoint_path(checkpoint_id)), wait=True)

    def inspect_checkpoint(self, checkpoint_id: str) -> dict:
        """Evaluate a checkpoint in inference mode, without touching the run.

        Returns its metadata (``info``) plus train/dev accuracy and cost and how the
        classes are confused (see :func:`dlcore.analysis.inspect_network`).
        """
        _, meta, state = self._checked(checkpoint_id)
        l2 = meta["info"]["hparams"].get("l2", 0.0)
        return {"info": meta["info"], **analysis.inspect_network(state.network, self.data, l2)}

    def weight_distance(self, checkpoint_a: str, checkpoint_b: str) -> dict:
        """‖θa − θb‖ over all parameters, and relative to ‖θa‖, per layer and in total."""
        a, b = (self._checked(c)[2].network for c in (checkpoint_a, checkpoint_b))
        return analysis.weight_distance(a, b)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the current step, save anything unsaved in a final checkpoint, end the
        thread."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            self._commands.put((commands.Stop(), None))
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def snapshot(self) -> Snapshot:
        """An immutable copy of everything the UI shows; cheap even with 10⁶ steps."""
        return self._run.snapshot()

    def idle(self) -> bool:
        """True when every command sent so far has been carried out and the run is not
        training."""
        return self._commands.unfinished_tasks == 0 and self._run.status != "running"

    # -- the worker ------------------------------------------------------------------------

    def _checked(self, checkpoint_id: str, what: str = "") -> tuple:
        """``(arrays, meta, state)`` of a checkpoint, checked; a damaged file is listed
        (once) and raises ValueError."""
        path = self._run.store.checkpoint_path(checkpoint_id)
        try:
            return read_checked_checkpoint(self._run.store, path, self.config, self.data)
        except CheckpointError as error:
            self._run.checkpoints.note_damaged(path.name, str(error))
            raise ValueError(f"{what} {checkpoint_id}: {error}" if what else str(error)) \
                from None

    def _send(self, command, wait: bool = False):
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("this run is stopped")
        reply = commands.Reply() if wait else None
        try:
            self._commands.put((command, reply), timeout=QUEUE_WAIT_SECONDS)
        except queue.Full:
            raise RuntimeError(
                f"the training thread has {MAX_QUEUED_COMMANDS} commands waiting and took "
                f"none for {QUEUE_WAIT_SECONDS:g} s; try again once it has caught up"
            ) from None
        return reply.wait() if wait else None

    def _worker(self) -> None:
        """Drain commands, train a step if running, repeat."""
        run = self._run
        while True:
            # Running, it only looks whether a background checkpoint write has finished;
            # otherwise it lists that write before it waits for commands.
            run.checkpoints.finish_background_or_stop(wait=run.status != "running")
            # Waits at most 1 s at a time: a tiny speed limit (1e-300 steps/s) asks for a
            # wait beyond what the OS accepts, which would raise and end this thread.
            timeout = (min(run.seconds_until_next_step(), 1.0) if run.status == "running"
                       else 0.5)
            try:
                item = (self._commands.get(timeout=timeout) if timeout > 0
                        else self._commands.get_nowait())
            except queue.Empty:
                item = None
            if item is not None:
                command, reply = item
                if isinstance(command, commands.Stop):
                    run.finish()
                    return
                self._execute(command, reply)
                self._commands.task_done()
                continue  # drain every queued command before the next step
            if run.status == "running" and run.seconds_until_next_step() <= 0:
                run.train()

    def _execute(self, command, reply) -> None:
        run = self._run
        run.checkpoints.finish_background_or_stop(wait=True)  # commands see the disk as it is
        try:
            result = HANDLERS[type(command)](run, command)
        except Exception as error:  # reported to the caller, never kills the worker
            if reply is None:
                run.fail(error)
            else:
                reply.error = error
        else:
            if reply is not None:
                reply.result = result
        finally:
            if reply is not None:
                reply.done.set()


