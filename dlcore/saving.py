"""A run's checkpoints: which are listed, which files are damaged, the last good one,
and writing new ones.

A checkpoint is written as a pair, its journal chunk first (the history rows and events
since the last one), each atomically (:class:`dlcore.store.CheckpointJob`). Periodic
checkpoints are written by a short-lived thread while training goes on, one at a time;
such a checkpoint is listed once both files are on disk, and every command, pause and
later checkpoint first waits for it (:meth:`Checkpoints.finish_background`). A write
that fails gives its rows and events back to the next chunk, so nothing is announced
that is not on disk and nothing is lost.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from dlcore import retention
from dlcore.snapshot import freeze
from dlcore.store import CHECKPOINT_FORMAT, CheckpointJob


class Checkpoints:
    """The checkpoints of one :class:`dlcore.run.Run` (only its worker thread writes).

    ``listed``: frozen infos in the order written; ``damaged``: ``{file, reason}`` of
    files that could not be used; ``last_good``: the id of the newest checkpoint the
    run can fall back to. Snapshots read them under the run's lock.
    """

    def __init__(self, run):
        self.run = run
        self.listed: list = []
        self.damaged: list[dict] = []
        self.last_good: str | None = None
        self.last_periodic_time: float | None = None  # paces periodic checkpoints
        self._pending: tuple | None = None  # (job, chunk, event) written in the background

    def write(self, kind: str, note: str, parent: str | None = None,
              background: bool = False) -> str:
        """Journal chunk, then the checkpoint, each atomically. Returns its id.

        Its parent is the last good checkpoint; a "rollback" checkpoint's is ``parent``,
        the checkpoint its branch forked from (None after a committed look-ahead).

        ``background`` (periodic checkpoints): the files are written in a short-lived
        thread while training goes on, and the checkpoint is listed once
        :meth:`finish_background` finds it on disk. Otherwise it is written and listed
        here, raising what its write raised.
        """
        self.finish_background(wait=True)  # one at a time, in seq order, parent listed
        pending = self._prepare(kind, note, parent)
        job = pending[0]
        if kind == "periodic":  # the pace counts from when one is started
            self.last_periodic_time = job.info["time"]
        if not background:
            job.run()
            return self._list(*pending)
        self._pending = pending
        try:
            threading.Thread(target=job.run, name=f"panda-{self.run.store.run_id}-write",
                             daemon=True).start()
        except RuntimeError:  # no thread to be had: written here, listed as any other
            job.run()
        return job.info["id"]

    def write_journal(self) -> None:
        """The active branch's unjournalled history as a journal chunk on its own (its
        state can't be saved, or no checkpoint came for long)."""
        run = self.run
        self.finish_background(wait=True)  # chunks in seq order
        seq = run.store.take_seq()
        branch = run.tree.current
        chunk = branch.claim_journal_chunk(run.tree.active)
        try:
            run.store.write_journal(seq, *chunk.payload(seq))
        except BaseException:
            with run.lock:
                branch.release(chunk)
            raise
        with run.lock:
            branch.confirm(chunk)
        self._compact_journal(run.tree.active)

    def finish_background(self, wait: bool) -> None:
        """List the checkpoint being written in the background, if there is one and it is
        done (or, with ``wait``, once it is); raises what its write raised."""
        pending = self._pending
        if pending is None or not (wait or pending[0].done.is_set()):
            return
        pending[0].done.wait()
        self._pending = None
        self._list(*pending)

    def finish_background_or_stop(self, wait: bool) -> None:
        """:meth:`finish_background` for callers that carry on: a failed write stops
        training, with the error shown."""
        try:
            self.finish_background(wait)
        except Exception as error:
            self.run.fail(error)

    def checkpointed_step(self) -> int:
        """The step of the last good checkpoint (-1 if none)."""
        info = next((c for c in self.listed if c["id"] == self.last_good), None)
        return info["step"] if info else -1

    def note_damaged(self, file: str, reason: str) -> None:
        """List a file found damaged after the run opened (once per file)."""
        with self.run.lock:
            if all(d["file"] != file for d in self.damaged):
                self.damaged.append({"file": file, "reason": reason})

    def forget(self, checkpoint_id: str, file: str) -> None:
        """A checkpoint whose file was deleted is listed no more."""
        with self.run.lock:
            self.listed = [c for c in self.listed if c["id"] != checkpoint_id]
            self.damaged = [d for d in self.damaged if d["file"] != file]

    def _prepare(self, kind, note, parent) -> tuple:
        """``(job, chunk, event)``: copies of everything the checkpoint's two files hold;
        its rows count as journalled. ValueError, recording nothing, for NaN/inf."""
        run = self.run
        seq = run.store.take_seq()
        checkpoint_id = f"ckpt-{seq:06d}"
        arrays, meta = run.state.to_checkpoint()
        for key, value in arrays.items():
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ValueError(f"refusing to write {checkpoint_id}: {key} holds NaN/inf")
        branch = run.tree.current
        evals = branch.evals.view()
        metrics = {}
        if len(evals["eval_step"]) and evals["eval_step"][-1] == run.state.step:
            # NaN: a column newer than the journal the row came from
            metrics = {k: float(v[-1]) for k, v in evals.items()
                       if k != "eval_step" and v.ndim == 1 and np.isfinite(v[-1])}
        meta["info"].update(
            id=checkpoint_id, seq=seq, kind=kind, note=note, branch=run.tree.active,
            parent=parent if kind == "rollback" else self.last_good, metrics=metrics,
            time=time.time(),
            # events of its branch up to and including this checkpoint's own
            event_count=len(branch.events) + (kind != "pre-change"))
        meta = {"format": CHECKPOINT_FORMAT, **meta, "config": run.config.to_dict(),
                "branches": run.tree.registry()}
        event = None
        if kind != "pre-change":  # the change event itself marks that boundary
            with run.lock:  # recorded first, so that the journal chunk holds it
                event = run.record_event("checkpoint", checkpoint=checkpoint_id,
                                         checkpoint_kind=kind, note=note)
        chunk = branch.claim_journal_chunk(run.tree.active)
        return run.store.job(seq, arrays, meta, chunk.payload(seq)), chunk, event

    def _list(self, job: CheckpointJob, chunk, event) -> str:
        """List a checkpoint whose files are on disk and return its id; if its write
        failed, give its rows and events back to the next chunk and raise the error."""
        run = self.run
        with run.lock:
            if job.error is None:
                self.listed.append(freeze(job.info))
                self.last_good = job.info["id"]
                run.tree.branches[chunk.branch_number].confirm(chunk)
            else:
                branch = run.tree.branches[chunk.branch_number]
                branch.release(chunk)
                if event is not None:  # by identity: later events may have been recorded
                    branch.events[:] = [e for e in branch.events if e is not event]
        if job.error is not None:
            raise job.error
        self._compact_journal(chunk.branch_number)
        if job.info["kind"] == "periodic":
            self.thin()
        return job.info["id"]

    def _compact_journal(self, number: int) -> None:
        """Merge a branch's oldest journal files into one when it has many (see
        ``Branch.compacted_chunk``): the merged file replaces the newest of them in one
        rename, then the others go. A failed write leaves them all, to try again later."""
        run = self.run
        branch = run.tree.branches[number]
        with run.lock:
            compacted = branch.compacted_chunk(number)
        if compacted is None:
            return
        seq, arrays, meta = compacted
        try:
            run.store.write_journal(seq, arrays, meta)
        except OSError:
            return
        with run.lock:
            replaced = branch.compacted(seq)
        for old in replaced:
            run.store.delete(run.store.journal_dir / f"{old:06d}.npz", missing_ok=True)

    def thin(self) -> None:
        """Delete the periodic checkpoints the retention policy no longer keeps, and say
        so in an event. Never: another kind, the one the run stands on, a branch's start.
        """
        run = self.run
        protected = {self.last_good, *(b.from_checkpoint for b in run.tree.branches.values())}
        removed = retention.to_remove(run.retention, self.listed, protected)
        for checkpoint_id in removed:
            run.store.delete(run.store.dir / f"{checkpoint_id}.npz", missing_ok=True)
        if removed:
            with run.lock:
                self.listed = [c for c in self.listed if c["id"] not in set(removed)]
                run.record_event("retention", removed=removed,
                                 policy=retention.describe(run.retention))
