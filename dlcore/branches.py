"""The branch tree: every branch's history, where it forked, and its journal chunks.

A run starts on branch 0. A rollback (or a committed look-ahead) opens a new branch at a
step of an existing one; the new branch's history begins as a copy of its parent's
lineage up to that step (:meth:`Branch.until`, the one place that copy is made), so
each branch's history is one contiguous block and only the active branch grows.

What a branch records but has not yet written to disk is handed out as a
:class:`JournalChunk` (written just before a checkpoint, see ``dlcore.store``); after a
restart :meth:`BranchTree.rebuild` puts every branch back together from those chunks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from dlcore import checkpoint as ckptio
from dlcore.checkpoint import CheckpointError, json_safe, whole
from dlcore.history import Columns, Schemas, StepHistory, bucket_schema
from dlcore.snapshot import freeze

#: β of the bias-corrected running average of the cost kept beside the raw cost.
COST_SMOOTHING = 0.98
#: BatchNorm history rows kept per branch; older rows are thinned to every other one
#: when the limit is reached.
MAX_BN_HISTORY_ROWS = 2048
JOURNAL_FORMAT = "panda-journal-v1"
#: A branch with more journal files than this has its oldest merged into one (all but
#: the newest COMPACT_KEEP), so a run's folder does not grow without bound.
COMPACT_ABOVE = 32
COMPACT_KEEP = 8


@dataclass
class JournalChunk:
    """Copies of a branch's rows and events not yet in a journal file.

    ``marks_before`` is where they began: a chunk that is not written goes back with
    :meth:`Branch.release`, so its rows and events go into the next one; ``marks_after``
    where they end.
    """

    branch_number: int
    record: dict
    arrays: dict
    events: list
    marks_before: tuple
    marks_after: tuple
    seq: int | None = None

    def payload(self, seq: int) -> tuple[dict, dict]:
        """``(arrays, meta)`` of the journal file ``journal/<seq>.npz``."""
        self.seq = seq
        meta = {"format": JOURNAL_FORMAT, "branch": self.branch_number, "seq": seq,
                "branch_info": self.record, "events": json_safe(self.events)}
        return self.arrays, meta


class Branch:
    """One branch: its history (its lineage prefix included) and where it forked."""

    def __init__(self, schemas: Schemas, parent_branch: int | None = None, fork_step: int = 0,
                 from_checkpoint: str | None = None):
        self.schemas = schemas
        self.steps = StepHistory(schemas.steps, boundary=fork_step)
        self.evals = Columns(schemas.evals)
        self.bn = Columns(schemas.bn) if schemas.bn else None
        self.events: list = []
        self.parent_branch = parent_branch
        self.fork_step = fork_step
        self.from_checkpoint = from_checkpoint
        # What is in journal files: steps up to this step (steps are bucketed, so by step),
        # evaluations and events up to these counts, BN rows (thinned) up to this eval_step.
        self._journalled = (0, 0, -1, 0)
        # Where its own history begins (events, evaluations): before is its lineage's.
        self._own_from = (0, 0)
        # Its own journal files, oldest first: (seq, the marks after it).
        self.chunks: list[tuple[int, tuple]] = []

    @property
    def record(self) -> dict:
        """Where it forked: what the registry in every checkpoint holds for it."""
        return {"parent_branch": self.parent_branch, "fork_step": self.fork_step,
                "from_checkpoint": self.from_checkpoint}

    def history(self) -> dict:
        """Read-only views: the exact per-step columns (the newest steps), the buckets
        of older steps as ``buckets/<column>`` (see :class:`dlcore.history.StepHistory`)
        and the per-evaluation columns."""
        buckets = {f"buckets/{k}": v for k, v in self.steps.bucket_view().items()}
        return {**self.steps.view(), **buckets, **self.evals.view()}

    # -- recording --------------------------------------------------------------------

    def record_step(self, row: Mapping) -> None:
        """Append a step's row, with ``cost_smoothed``: the course's bias-corrected EWMA
        of J, v = βv + (1−β)J; J̄ = v/(1−βᵗ), t counting this branch's rows."""
        rows = len(self.steps)
        previous = float(self.steps.last("cost_smoothed")) if rows else 0.0
        v = (COST_SMOOTHING * previous * (1.0 - COST_SMOOTHING**rows)
             + (1.0 - COST_SMOOTHING) * row["cost"])
        self.steps.append(**{"time": time.time(), **row},
                          cost_smoothed=v / (1.0 - COST_SMOOTHING ** (rows + 1)))

    def record_evaluation(self, row: Mapping) -> None:
        self.evals.append(**row)

    def record_bn(self, row: Mapping) -> None:
        """Append a BatchNorm row, thinning old rows to stay under MAX_BN_HISTORY_ROWS."""
        if self.bn is None:
            return
        if len(self.bn) >= MAX_BN_HISTORY_ROWS:
            self.bn = self.bn.thinned(keep_last=MAX_BN_HISTORY_ROWS // 2)
        self.bn.append(**row)

    def record_event(self, kind: str, step: int, number: int, **details) -> Mapping:
        """Append an event (frozen, with its step, branch number and time); returns it."""
        event = freeze({"kind": kind, "step": step, "branch": number, "time": time.time(),
                        **json_safe(details)})
        self.events.append(event)
        return event

    def extend(self, history: Mapping, events) -> None:
        """Rows and events recorded elsewhere (a sandbox), continuing this history."""
        self.steps.extend({k: history[k] for k in self.steps.schema})
        self.evals.extend({k: history[k] for k in self.evals.schema})
        self.events.extend(freeze(e) for e in events)

    # -- lineage ----------------------------------------------------------------------

    def until(self, step: int, event_count: int | None = None, **record) -> Branch:
        """A copy holding this history up to ``step`` (the lineage of a fork there).

        Events: the first ``event_count`` if given and consistent (a pre-change
        checkpoint precedes the change recorded at its own step), else those up to
        ``step``. ``record`` overrides where the copy forked (default: as this one).
        """
        copy = Branch(self.schemas, **{**self.record, **record})
        copy.steps = self.steps.until(step, boundary=copy.fork_step)
        copy.evals = self.evals.copy(self.evals.count_until("eval_step", step))
        if self.bn is not None:
            copy.bn = self.bn.copy(self.bn.count_until("eval_step", step))
        copy.events = _events_until(self.events, step, event_count)
        if "fork_step" in record:  # a new branch: all of this is its lineage
            copy._own_from = (len(copy.events), len(copy.evals))
        else:  # the same branch, cut at ``step``
            copy._own_from = tuple(min(a, b) for a, b in zip(
                self._own_from, (len(copy.events), len(copy.evals)), strict=True))
            copy.chunks = [c for c in self.chunks if c[1][0] <= step]
        return copy

    # -- journal ----------------------------------------------------------------------

    def mark_journalled(self, bn_step: int) -> None:
        """Everything recorded so far counts as on disk (after a fork or a rebuild)."""
        last = self.steps.last_step()
        self._journalled = (last, len(self.evals), bn_step, len(self.events))
        self.steps.bucketable = last

    def unjournalled_steps(self) -> int:
        return self.steps.last_step() - self._journalled[0]

    def claim_journal_chunk(self, number: int) -> JournalChunk:
        """Copies of what is not yet journalled; from now on it counts as journalled (and,
        once :meth:`confirm`ed on disk, its steps may be bucketed)."""
        steps_after, evals_from, bn_step, events_from = marks = self._journalled
        exact = self.steps.exact
        first = exact.count_until("step", steps_after)
        arrays = {f"steps/{k}": v.copy() for k, v in exact.view(first).items()}
        arrays.update({f"evals/{k}": v.copy() for k, v in self.evals.view(evals_from).items()})
        if self.bn is not None:
            first = self.bn.count_until("eval_step", bn_step)
            bn = self.bn.view(first)
            arrays.update({f"bn/{k}": v.copy() for k, v in bn.items()})
            if len(bn["eval_step"]):
                bn_step = int(bn["eval_step"][-1])
        arrays = _finite_on_disk(arrays, self.schemas)
        events = list(self.events[events_from:])
        self._journalled = (self.steps.last_step(), len(self.evals), bn_step, len(self.events))
        return JournalChunk(number, self.record, arrays, events, marks, self._journalled)

    def confirm(self, chunk: JournalChunk) -> None:
        """A chunk is on disk: its steps may be bucketed from now on."""
        steps = chunk.arrays["steps/step"]
        if len(steps):
            self.steps.bucketable = max(self.steps.bucketable, int(steps[-1]))
            self.steps.rebucket()
        self.chunks.append((chunk.seq, chunk.marks_after))

    def compacted_chunk(self, number: int) -> tuple[int, dict, dict] | None:
        """``(seq, arrays, meta)`` of one journal file that replaces all but the newest
        COMPACT_KEEP of this branch's own (its steps older than the exact window as
        buckets), or None if it has few enough. Marked ``compacted``: it holds the
        branch's own history from its fork, so reading it replaces what came before."""
        if len(self.chunks) <= COMPACT_ABOVE:
            return None
        seq, (last_step, evals_to, bn_step, events_to) = self.chunks[-COMPACT_KEEP - 1]
        events_from, evals_from = self._own_from
        fork = self.fork_step
        exact, buckets = self.steps.view(), self.steps.bucket_view()
        mine = (exact["step"] > fork) & (exact["step"] <= last_step)
        arrays = {f"steps/{k}": v[mine] for k, v in exact.items()}
        mine = (buckets["first_step"] > fork) & (buckets["step"] <= last_step)
        arrays.update({f"buckets/{k}": v[mine] for k, v in buckets.items()})
        arrays.update({f"evals/{k}": v.copy()
                       for k, v in self.evals.view(evals_from, evals_to).items()})
        if self.bn is not None:
            bn = self.bn.view()
            mine = (bn["eval_step"] > fork) & (bn["eval_step"] <= bn_step)
            arrays.update({f"bn/{k}": v[mine] for k, v in bn.items()})
        arrays = _finite_on_disk(arrays, self.schemas)
        meta = {"format": JOURNAL_FORMAT, "branch": number, "seq": seq,
                "branch_info": self.record, "compacted": True, "width": self.steps.width,
                "events": json_safe(self.events[events_from:events_to])}
        return seq, arrays, meta

    def compacted(self, seq: int) -> list[int]:
        """The journal file ``seq`` now holds all of this branch's up to it: their seqs,
        which can go."""
        replaced = [s for s, _ in self.chunks if s < seq]
        self.chunks = [c for c in self.chunks if c[0] >= seq]
        return replaced

    def release(self, chunk: JournalChunk) -> None:
        """A chunk that was not written: its rows and events go into the next one."""
        self._journalled = chunk.marks_before

    def has_unjournalled_events(self) -> bool:
        return self._journalled[3] < len(self.events)

    def add_chunk(self, arrays: Mapping, meta: Mapping) -> None:
        """Add a journal chunk (checked by :func:`check_journal`); rows it covers
        supersede any already here (a crash may have journalled them twice). A
        ``compacted`` one holds the branch's own history from its fork: it replaces it."""
        def block(prefix):
            return {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}

        steps, evals, bn = block("steps/"), block("evals/"), block("bn/")
        if meta.get("compacted"):
            events_from, evals_from = self._own_from
            self.steps = self.steps.until(self.fork_step)
            self.evals = self.evals.copy(evals_from)
            if self.bn is not None:
                self.bn = self.bn.copy(self.bn.count_until("eval_step", self.fork_step))
            self.events = self.events[:events_from]
            self.chunks = []
            buckets = block("buckets/")
            width = meta.get("width")
            if isinstance(width, int) and not isinstance(width, bool) and 1 <= width < 2**40:
                self.steps.width = max(self.steps.width, width)  # as they were bucketed
            if buckets and len(buckets["step"]):
                self.steps.add_buckets(buckets)
        for table, columns in ((self.steps.exact, steps), (self.evals, evals)):
            rows = len(next(iter(columns.values()), ()))
            for name in table.schema.keys() - columns.keys() if columns else ():
                dtype, shape = table.schema[name]  # an optional column newer than the chunk
                columns[name] = np.full((rows, *shape), np.nan, dtype)
        if steps and len(steps.get("step", ())):
            self.steps = self.steps.until(int(steps["step"][0]) - 1)
            self.steps.bucketable = int(steps["step"][-1])  # on disk: may be bucketed
            self.steps.extend(steps)
        if evals and len(evals.get("eval_step", ())):
            first = int(evals["eval_step"][0])
            self.evals = self.evals.copy(self.evals.count_until("eval_step", first - 1))
            self.evals.extend(evals)
            if self.bn is not None and bn and len(bn["eval_step"]):
                first = int(bn["eval_step"][0])
                self.bn = self.bn.copy(self.bn.count_until("eval_step", first - 1))
                for i in range(len(bn["eval_step"])):
                    self.record_bn({k: v[i] for k, v in bn.items()})
        self.events.extend(freeze(e) for e in meta.get("events", []))
        last = self.steps.last_step()
        bn_last = (int(self.bn.last("eval_step")) if self.bn is not None and len(self.bn)
                   else -1)
        self.chunks.append((int(meta["seq"]), (last, len(self.evals), bn_last,
                                               len(self.events))))


class BranchTree:
    """Every branch of a run by number, and which one is active (the only one growing)."""

    def __init__(self, schemas: Schemas, branches: dict[int, Branch] | None = None,
                 active: int = 0):
        self.schemas = schemas
        self.branches = branches if branches is not None else {0: Branch(schemas)}
        self.active = active

    @property
    def current(self) -> Branch:
        return self.branches[self.active]

    def registry(self) -> dict:
        """``{"0": {parent_branch, fork_step, from_checkpoint}, ...}`` for a checkpoint."""
        return {str(n): b.record for n, b in self.branches.items()}

    def fork(self, parent: int, fork_step: int, from_checkpoint: str | None,
             event_count: int | None = None, history: Mapping | None = None,
             events=()) -> Branch:
        """A new branch at ``fork_step`` of branch ``parent``, not yet in the tree (the
        copy takes a while on a long history: make it outside any lock, then :meth:`add`).

        Its history starts as the parent's lineage up to ``fork_step``, then ``history``
        and ``events`` (rows trained elsewhere, e.g. in a sandbox) if given.
        """
        source = self.branches.get(parent)
        record = {"parent_branch": parent, "fork_step": fork_step,
                  "from_checkpoint": from_checkpoint}
        branch = (source.until(fork_step, event_count, **record) if source is not None
                  else Branch(self.schemas, **record))
        branch.mark_journalled(bn_step=fork_step)
        if history is not None:
            branch.extend(history, events)
        return branch

    def add(self, branch: Branch) -> int:
        """Put a branch made by :meth:`fork` in the tree and make it active; its number."""
        number = max(self.branches) + 1
        self.branches[number] = branch
        self.active = number
        return number

    @classmethod
    def rebuild(cls, schemas: Schemas, registry: Mapping[int, Mapping], chunks: Mapping,
                last_steps: Mapping[int, int], event_counts: Mapping[str, int | None],
                active: int) -> BranchTree:
        """Every branch from its journal chunks, up to its newest checkpoint's step.

        registry: number -> record (parents have lower numbers); chunks: number -> list
        of ``(arrays, meta)`` in order; last_steps: number -> step of its newest
        checkpoint; event_counts: checkpoint id -> its ``event_count``.
        """
        branches: dict[int, Branch] = {}
        for number in sorted(registry):
            record = dict(registry[number])
            parent = branches.get(record["parent_branch"])
            branch = (parent.until(record["fork_step"],
                                   event_counts.get(record["from_checkpoint"]), **record)
                      if parent is not None else Branch(schemas, **record))
            for arrays, meta in chunks.get(number, []):
                branch.add_chunk(arrays, meta)
            if last_steps.get(number, -1) >= 0:
                branch = branch.until(last_steps[number])
            evals = branch.evals.view()["eval_step"]
            branch.mark_journalled(bn_step=int(evals[-1]) if len(evals) else -1)
            branches[number] = branch
        if active not in branches:
            branches[active] = Branch(schemas)
        return cls(schemas, branches, active)


def _events_until(events: list, step: int, count: int | None) -> list:
    """The events up to a fork: the first ``count`` if known and consistent, else by step."""
    by_step = [e for e in events if e["step"] <= step]
    if (isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= len(by_step)
            and all(e["step"] <= step for e in events[:count])):
        return list(events[:count])
    return by_step


# ---------------------------------------------------------------------------
# Checks of what a file says about branches
# ---------------------------------------------------------------------------


def check_registry(branches, active: int) -> dict[int, dict]:
    """A checkpoint's branch registry: keyed by number, each record well formed, parents
    earlier, the checkpoint's own branch in it. Returns it keyed by int."""
    if not isinstance(branches, Mapping) or not all(
            isinstance(n, str) and n.isascii() and n.isdigit() for n in branches):
        raise CheckpointError("the branch registry is not keyed by branch number")
    registry = {}
    for number, record in branches.items():
        registry[int(number)] = check_branch_record(record, int(number), f"branch {number}")
    if active not in registry:
        raise CheckpointError(f"branch {active} is not in its registry")
    return registry


def check_branch_record(record, number: int, where: str) -> dict:
    """A branch's {parent_branch, fork_step, from_checkpoint}; parents have lower numbers."""
    if not isinstance(record, Mapping) or set(record) != {
            "parent_branch", "fork_step", "from_checkpoint"}:
        raise CheckpointError(f"{where}: malformed record {record!r:.80}")
    parent = record["parent_branch"]
    if parent is not None and whole(f"{where}: parent_branch", parent) >= number:
        raise CheckpointError(f"{where}: parent branch {parent} is not an earlier one")
    whole(f"{where}: fork_step", record["fork_step"])
    origin = record["from_checkpoint"]
    if origin is not None and not (isinstance(origin, str) and ckptio.CHECKPOINT_ID.match(origin)):
        raise CheckpointError(f"{where}: from_checkpoint {origin!r:.40} is not an id")
    return dict(record)


def _finite_on_disk(arrays: dict, schemas: Schemas) -> dict:
    """A journal's arrays as written: NaN ("no batch statistics yet") is 0 on disk, except
    in the optional columns, where it says "not recorded" (see Schemas.journal_nan_keys)."""
    keep = schemas.journal_nan_keys
    return {k: np.nan_to_num(v, nan=0.0) if v.dtype.kind == "f" and k not in keep else v
            for k, v in arrays.items()}


def check_journal(arrays: Mapping, meta: Mapping, schemas: Schemas) -> None:
    """A journal chunk must fit the run's history tables exactly: else add_chunk would mix
    bad rows into the history or fail half-way."""
    number = whole("branch", meta["branch"])
    check_branch_record(meta["branch_info"], number, f"branch {number}")
    events = meta["events"]
    if not isinstance(events, list) or not all(
            isinstance(e, Mapping) and isinstance(e.get("kind"), str) for e in events):
        raise CheckpointError("events is not a list of events")
    for event in events:
        whole("an event's step", event.get("step"))
    for prefix, schema, index in (("steps/", schemas.steps, "step"),
                                  ("buckets/", bucket_schema(schemas.steps), "step"),
                                  ("evals/", schemas.evals, "eval_step"),
                                  ("bn/", schemas.bn, "eval_step")):
        block = {k.removeprefix(prefix): v for k, v in arrays.items() if k.startswith(prefix)}
        if not block:
            continue
        if schema is None or block.keys() - schema.keys() or (
                schema.keys() - block.keys() - schemas.optional):
            raise CheckpointError(f"{prefix} columns {sorted(block)} do not fit this run")
        rows = len(block[index])
        for column, (dtype, shape) in schema.items():
            value = block.get(column)
            if value is None:  # optional, added since this chunk was written
                continue
            if value.shape != (rows, *shape) or (value.dtype.kind in "iu") != (
                    np.dtype(dtype).kind in "iu"):
                raise CheckpointError(
                    f"{prefix}{column}: shape {value.shape} dtype {value.dtype} does not fit")
        if rows and (block[index][0] < 0 or np.any(np.diff(block[index]) < 0)):
            raise CheckpointError(f"{prefix}{index} is not in order")
