"""What the UI sees of a run: :class:`Snapshot`, an immutable picture taken under the lock.

Nothing in a snapshot is live mutable state: history columns are read-only views of
rows that are never rewritten (see :mod:`dlcore.history`), everything else is frozen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


def freeze(value):
    """A read-only copy of nested dicts and lists (mappings become proxies, lists tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(freeze(v) for v in value)
    return value


@dataclass(frozen=True)
class Snapshot:
    """An immutable picture of the run. Also readable as ``snap["status"]``.

    ``alpha`` is the α in force (the next step's, after any decay);
    ``hparams["lr"]`` is the α the schedule was last anchored at (α₀).
    history: name -> read-only 1-D array for the active branch's lineage.
    Per step: ``step``, ``epoch``, ``cost`` (mini-batch J), ``cost_smoothed``,
    ``lr`` (α used), ``grad_norm``, ``update_ratio/fc1`` ... (‖ΔW‖/‖W‖ per dense layer),
    exact for the newest 10⁵ steps or more; older steps as buckets ``buckets/step`` (the
    bucket's last step), ``buckets/first_step``, ``buckets/count``, ``buckets/cost``
    (mean), ``buckets/cost/min``, ``buckets/cost/max``, and so on for each column.
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
    retention: Mapping
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


def branch_views(tree) -> Mapping:
    """Each branch of a :class:`dlcore.branches.BranchTree` as the snapshot shows it."""
    return MappingProxyType({
        number: MappingProxyType({
            "parent_branch": b.parent_branch,
            "fork_step": b.fork_step,
            "from_checkpoint": b.from_checkpoint,
            "history": MappingProxyType(b.history()),
            "events": tuple(b.events),
        })
        for number, b in tree.branches.items()
    })


def bn_views(latest: Mapping, branch) -> Mapping:
    """Per BN layer: the newest picture (``latest``) plus its history on ``branch``."""
    table = branch.bn.view() if branch.bn is not None else {}
    out = {}
    for layer, stats in latest.items():
        history = {"eval_step": table["eval_step"]} if table else {}
        for name, column in table.items():
            if name.startswith(f"{layer}/"):
                history[name.split("/", 1)[1]] = column
        out[layer] = MappingProxyType({**stats, "history": MappingProxyType(history)})
    return MappingProxyType(out)
