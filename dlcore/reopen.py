"""A run read back from its folder: to train on (``reopened``), or to look at (``read_curves``).

``reopened`` is what ``Trainer.open`` does: every checkpoint fully checked, the newest
valid one restored, every branch's history rebuilt from the journal up to it, leftovers
of a crash removed. ``read_curves`` reads another run's learning curves for comparison
with the run that is open: checkpoint metadata and journal chunks only, no data set
loaded, nothing written or removed (that run may be training in another process).
Both rebuild the branches the same way, :func:`read_branches`.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Mapping
from dataclasses import dataclass

from dlcore.branches import JOURNAL_FORMAT, BranchTree, check_journal, check_registry
from dlcore.checkpoint import CheckpointError
from dlcore.history import Schemas
from dlcore.hparams import RunConfig
from dlcore.network import Architecture
from dlcore.run import Run, read_checked_checkpoint
from dlcore.snapshot import freeze
from dlcore.store import RunStore, prepare


def reopened(store: RunStore, config: RunConfig) -> Run:
    """A run as its folder holds it, at its newest valid checkpoint."""
    data = prepare(store.dataset_source(config), config)
    # 1) every checkpoint, fully checked; the newest valid one is where the run resumes
    checkpoints, damaged, newest = [], [], None
    for path in store.checkpoint_files():
        try:
            _, meta, state = read_checked_checkpoint(store, path, config, data)
        except CheckpointError as error:
            damaged.append({"file": path.name, "reason": str(error)})
            continue
        checkpoints.append(freeze(meta["info"]))
        newest = (meta, state)
    store.start_seq_after(store.highest_seq())
    if newest is None:
        raise ValueError(f"run {store.run_id!r} has no usable checkpoint "
                         f"({len(damaged)} damaged)")
    meta, state = newest
    info = meta["info"]
    # 2) every branch's history from the journal, up to its newest checkpoint
    store.drop_journals_after(info["seq"])
    tree = read_branches(store, Schemas.of(state.network), meta, checkpoints, damaged)
    run = Run(config, data, store, state, tree)
    run.checkpoints.listed, run.checkpoints.damaged = checkpoints, damaged
    run.checkpoints.last_good = info["id"]
    run.checkpoints.last_periodic_time = max(
        (c["time"] for c in checkpoints if c["kind"] == "periodic"), default=None)
    # 3) the picture at the step it stands on (evaluated there unless it was)
    evals = tree.current.evals.view()["eval_step"]
    record = not len(evals) or evals[-1] != state.step
    if record:
        run.evaluate()
    run.live_views.publish(run, record=record)
    return run


def read_branches(store: RunStore, schemas: Schemas, meta: Mapping, checkpoints: list,
                  damaged: list) -> BranchTree:
    """Every branch's history from the journal chunks up to the newest checkpoint
    (``meta``, whose branch is the active one); ``checkpoints``: the infos of all valid
    ones. Unreadable chunks are skipped and listed in ``damaged``."""
    newest_seq = meta["info"]["seq"]
    registry = {int(n): dict(r) for n, r in meta["branches"].items()}
    chunks = collections.defaultdict(list)
    for path in store.journal_files():
        if path.stem.isascii() and path.stem.isdigit() and int(path.stem) > newest_seq:
            continue  # after the newest checkpoint: a crash's leftover, redone on reopening
        try:
            arrays, journal_meta = store.read_journal(path, JOURNAL_FORMAT,
                                                      schemas.journal_nan_keys)
            check_journal(arrays, journal_meta, schemas)
        except (CheckpointError, KeyError, TypeError, ValueError) as error:
            if os.path.lexists(path):  # else compaction replaced it since the listing: not damage
                damaged.append({"file": f"journal/{path.name}", "reason": str(error)})
            continue
        chunks[journal_meta["branch"]].append((arrays, journal_meta))
        registry.setdefault(journal_meta["branch"], journal_meta["branch_info"])
    last_steps = collections.defaultdict(lambda: -1)
    for c in checkpoints:
        last_steps[c["branch"]] = max(last_steps[c["branch"]], c["step"])
    return BranchTree.rebuild(schemas, registry, chunks, last_steps,
                              {c["id"]: c.get("event_count") for c in checkpoints},
                              active=meta["info"]["branch"])


@dataclass(frozen=True)
class RunCurves:
    """Another run's active branch as its newest checkpoint left it, for comparison.

    ``history`` and ``events`` read like :class:`dlcore.snapshot.Snapshot`'s; ``step``,
    ``branch`` and ``hparams`` are the newest checkpoint's; ``config`` is the run's
    ``run.json``; ``damaged``: the files left out, as in ``Snapshot.damaged``.
    """

    run_id: str
    config: Mapping
    step: int
    branch: int
    hparams: Mapping
    history: Mapping
    events: tuple
    damaged: tuple


def read_curves(checkpoint_dir, run_id: str) -> RunCurves:
    """``run_id``'s curves, read without opening it; ValueError saying why it can't be."""
    store = RunStore(checkpoint_dir, run_id)
    config = store.read_config()
    checkpoints, damaged, newest = [], [], None
    for path in store.checkpoint_files():
        try:
            _, meta = store.read_checkpoint(path, meta_only=True)
            check_registry(meta["branches"], meta["info"]["branch"])
            arch = Architecture.from_dict(meta["architecture"])
        except (CheckpointError, KeyError, TypeError, ValueError) as error:
            if os.path.lexists(path):  # else retention removed it since the listing: not damage
                damaged.append({"file": path.name, "reason": str(error)})
            continue
        checkpoints.append(meta["info"])
        newest = (meta, arch)
    if newest is None:
        raise ValueError(f"run {run_id!r} has no readable checkpoint "
                         f"({len(damaged)} damaged)")
    meta, arch = newest
    schemas = Schemas.of_architecture(arch)  # the history's columns; no weights needed
    branch = read_branches(store, schemas, meta, checkpoints, damaged).current
    return RunCurves(run_id=run_id, config=freeze(config), step=int(meta["info"]["step"]),
                     branch=int(meta["info"]["branch"]),
                     hparams=freeze(meta["info"]["hparams"]), history=freeze(branch.history()),
                     events=freeze(list(branch.events)), damaged=freeze(damaged))
