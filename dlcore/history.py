"""Append-only metric history that a snapshot can share without copying.

Rows are only ever appended, never rewritten, so a read-only view of the
first n rows stays valid forever: when the buffer fills up it is replaced by
a larger one (capacity doubles, so appends cost amortised O(1) and growth is
never quadratic) and old views keep the old buffer alive. That makes
:meth:`Columns.view` O(number of columns), even with 10⁶ rows.

A run of 10⁷ steps would still hold 600 MB of per-step rows, so :class:`StepHistory`
keeps exact rows for the newest steps only and older ones as buckets of a power-of-two
number of steps with their mean, minimum and maximum (a spike stays visible), the way
TensorBoard keeps a sample of old scalars: its memory stays bounded however long the run.
"""

from __future__ import annotations

import numpy as np


class Columns:
    """A table of named 1-D (or row-shaped) numpy columns that only grows.

    ``Columns({"step": (np.int64, ()), "running_mean": (np.float32, (64,))})``
    """

    def __init__(self, schema: dict[str, tuple], capacity: int = 1024):
        self.schema = {
            name: (np.dtype(dtype), tuple(shape)) for name, (dtype, shape) in schema.items()
        }
        self._data = {
            name: np.empty((capacity, *shape), dtype)
            for name, (dtype, shape) in self.schema.items()
        }
        self._length = 0

    def __len__(self) -> int:
        return self._length

    def append(self, **row) -> None:
        """Add one row; every column must be given."""
        if row.keys() != self._data.keys():
            missing = sorted(self._data.keys() - row.keys())
            extra = sorted(row.keys() - self._data.keys())
            raise KeyError(f"row does not fit the columns: missing {missing}, unexpected {extra}")
        if self._length == len(next(iter(self._data.values()))):
            self._grow()
        for name, value in row.items():
            self._data[name][self._length] = value
        self._length += 1

    def extend(self, block: dict[str, np.ndarray]) -> None:
        """Append many rows at once (a dict of equally long arrays)."""
        n = len(next(iter(block.values()))) if block else 0
        while self._length + n > len(next(iter(self._data.values()))):
            self._grow()
        for name in self._data:
            self._data[name][self._length : self._length + n] = block[name]
        self._length += n

    def _grow(self) -> None:
        capacity = 2 * len(next(iter(self._data.values())))
        for name, old in self._data.items():
            new = np.empty((capacity, *old.shape[1:]), old.dtype)
            new[: self._length] = old[: self._length]
            self._data[name] = new

    def last(self, name: str):
        """The newest row's value in column ``name``; IndexError if there are no rows."""
        if not self._length:
            raise IndexError(f"no rows yet in column {name!r}")
        return self._data[name][self._length - 1]

    def view(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        """Read-only views of rows [start, stop): safe to hand to another thread."""
        stop = self._length if stop is None else min(stop, self._length)
        out = {}
        for name, column in self._data.items():
            v = column[start:stop]
            v.flags.writeable = False
            out[name] = v
        return out

    def copy_range(self, start: int, stop: int) -> Columns:
        """An independent table holding rows [start, stop)."""
        other = Columns(self.schema, capacity=max(1024, stop - start))
        other.extend(self.view(start, stop))
        return other

    def copy(self, stop: int | None = None) -> Columns:
        """An independent table holding the first ``stop`` rows."""
        stop = self._length if stop is None else min(stop, self._length)
        other = Columns(
            {name: (dtype, shape) for name, (dtype, shape) in self.schema.items()},
            capacity=max(1024, stop),
        )
        other.extend(self.view(0, stop))
        return other

    def thinned(self, keep_last: int) -> Columns:
        """A copy keeping every other row, except the newest ``keep_last`` rows, kept whole.

        For long histories that only need coarse resolution far back: thinning
        each time a size limit is reached keeps recent rows dense and the
        total bounded.
        """
        n = self._length
        split = max(0, n - keep_last)
        keep = np.concatenate([np.arange(0, split, 2), np.arange(split, n)])
        other = Columns(self.schema, capacity=max(1024, len(keep)))
        other.extend({name: column[keep] for name, column in self._data.items()})
        return other

    def count_until(self, column: str, value) -> int:
        """How many leading rows have ``column <= value`` (the column must be sorted)."""
        return int(np.searchsorted(self._data[column][: self._length], value, side="right"))


# ---------------------------------------------------------------------------
# Per-step history: exact recent rows, buckets before
# ---------------------------------------------------------------------------

#: Exact per-step rows kept: the steps after the last multiple of BUCKET_BLOCK that lies
#: EXACT_STEPS or more before the newest journalled step (so between 10⁵ and 1.5·10⁵).
EXACT_STEPS = 100_000
BUCKET_BLOCK = 50_000
#: Buckets kept at most; beyond it neighbouring buckets merge (their width doubles).
MAX_BUCKETS = 20_000


def bucket_schema(schema: dict) -> dict:
    """The columns of a bucket table for a per-step ``schema``: ``step`` (the bucket's last
    step), ``first_step``, ``count``; integer columns as their last value; each float
    column as its mean (``name``, float64) with ``name/min`` and ``name/max``."""
    out = {"step": (np.int64, ()), "first_step": (np.int64, ()), "count": (np.int64, ())}
    for name, (dtype, shape) in schema.items():
        if name == "step":
            continue
        if np.dtype(dtype).kind == "f":
            out[name] = (np.float64, shape)
            out[f"{name}/min"] = (dtype, shape)
            out[f"{name}/max"] = (dtype, shape)
        else:
            out[name] = (dtype, shape)
    return out


class StepHistory:
    """One branch's per-step rows: exact for the newest EXACT_STEPS, buckets before them.

    ``exact``: a :class:`Columns` of the step schema; ``buckets``: a :class:`Columns` of
    :func:`bucket_schema`, each row summarising the steps [first_step, step] that fall
    in one aligned bucket of ``width`` steps (``(s − 1) // width``), never mixing steps up
    to ``boundary`` (the fork step: the lineage) with later ones (the branch's own).
    Only rows up to ``bucketable`` (those already in a journal) are ever bucketed, and
    where the exact rows begin depends on nothing but the newest such step: the same
    rows, appended live or read back from a journal, are split the same way.
    """

    def __init__(self, schema: dict, boundary: int = 0, width: int = 1):
        self.schema = dict(schema)
        self.exact = Columns(schema)
        self.buckets = Columns(bucket_schema(schema))
        self.boundary = boundary
        self.width = width
        self.total = 0  # rows, exact or in buckets
        self.bucketable = 0

    def __len__(self) -> int:
        return self.total

    def append(self, **row) -> None:
        self.exact.append(**row)
        self.total += 1
        self.rebucket()

    def extend(self, block: dict) -> None:
        """Exact rows after the ones here (a dict of equally long arrays)."""
        self.exact.extend(block)
        self.total += len(block["step"]) if block else 0
        self.rebucket()

    def rebucket(self) -> None:
        """Bucket the exact rows up to the cut (see the class docstring), if it moved."""
        cut = (min(self.bucketable, self.last_step()) - EXACT_STEPS) // BUCKET_BLOCK
        if cut > 0 and len(self.exact) and self.exact.view(0, 1)["step"][0] <= cut * BUCKET_BLOCK:
            self._bucket_until(cut * BUCKET_BLOCK)

    def add_buckets(self, block: dict) -> None:
        """Bucket rows after the ones here, merged with the last bucket if they share it."""
        self._set_buckets(_concatenate(self.buckets.view(), block))
        self.total += int(np.sum(block["count"])) if block else 0

    def last(self, name: str):
        if len(self.exact):
            return self.exact.last(name)
        return self.buckets.last(name)

    def last_step(self) -> int:
        return int(self.last("step")) if self.total else 0

    def view(self) -> dict[str, np.ndarray]:
        """Read-only views of the exact rows (the newest steps)."""
        return self.exact.view()

    def bucket_view(self) -> dict[str, np.ndarray]:
        """Read-only views of the buckets (everything older than the exact rows)."""
        return self.buckets.view()

    def covers(self, step: int) -> bool:
        """Whether the history holds ``step`` (0, the start, always), exactly or bucketed."""
        if step == 0:
            return True
        exact = self.exact.view()["step"]
        if len(exact) and exact[0] <= step <= exact[-1]:
            return bool(exact[np.searchsorted(exact, step)] == step)
        buckets = self.buckets.view()
        i = np.searchsorted(buckets["step"], step)
        return bool(i < len(buckets["step"]) and buckets["first_step"][i] <= step)

    def until(self, step: int, boundary: int | None = None) -> StepHistory:
        """A copy of the rows up to ``step``; a bucket that reaches past it is left out."""
        copy = StepHistory(self.schema, self.boundary if boundary is None else boundary,
                           self.width)
        buckets = self.buckets.view()
        keep = int(np.searchsorted(buckets["step"], step, side="right"))
        copy.buckets = self.buckets.copy(keep)
        copy.exact = self.exact.copy(self.exact.count_until("step", step))
        copy.total = int(np.sum(buckets["count"][:keep])) + len(copy.exact)
        copy.bucketable = min(self.bucketable, step)
        return copy

    # -- bucketing ------------------------------------------------------------------------

    def _bucket_until(self, step: int) -> None:
        """Move the exact rows up to ``step`` into buckets, widening the buckets if there
        are too many."""
        steps = self.exact.view()["step"]
        n = int(np.searchsorted(steps, step, side="right"))
        block = {k: v[:n] for k, v in self.exact.view().items()}
        self.exact = self.exact.copy_range(n, len(steps))
        self._set_buckets(_concatenate(self.buckets.view(), _as_buckets(block)))

    def _set_buckets(self, rows: dict) -> None:
        rows = self._merged(rows)
        while len(rows["step"]) > MAX_BUCKETS:
            self.width *= 2
            rows = self._merged(rows)
        table = Columns(self.buckets.schema, capacity=max(1024, len(rows["step"])))
        table.extend(rows)
        self.buckets = table

    def _merged(self, rows: dict) -> dict:
        """Rows that fall in the same bucket (at this width and boundary) merged into one."""
        first = rows["first_step"]
        if not len(first):
            return rows
        key = ((first - 1) // self.width) * 2 + (first > self.boundary)
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        if len(starts) == len(first):
            return rows
        ends = np.r_[starts[1:], len(first)] - 1
        count = np.add.reduceat(rows["count"], starts)
        out = {"step": rows["step"][ends], "first_step": first[starts], "count": count}
        for name, values in rows.items():
            if name in out:
                continue
            if name.endswith("/min"):
                out[name] = np.minimum.reduceat(values, starts)
            elif name.endswith("/max"):
                out[name] = np.maximum.reduceat(values, starts)
            elif values.dtype.kind == "f":  # a mean: weighted by the rows in each
                shape = (-1, *[1] * (values.ndim - 1))
                out[name] = (np.add.reduceat(values * rows["count"].reshape(shape), starts)
                             / count.reshape(shape))
            else:
                out[name] = values[ends]
        return out


def _as_buckets(block: dict) -> dict:
    """Exact rows as buckets of one row each."""
    out = {"step": block["step"], "first_step": block["step"],
           "count": np.ones(len(block["step"]), np.int64)}
    for name, values in block.items():
        if name == "step":
            continue
        if values.dtype.kind == "f":
            out[name] = values.astype(np.float64)
            out[f"{name}/min"] = values
            out[f"{name}/max"] = values
        else:
            out[name] = values
    return out


def _concatenate(a: dict, b: dict) -> dict:
    if not b:
        return dict(a)
    return {name: np.concatenate([a[name], b[name]]) for name in a}


# ---------------------------------------------------------------------------
# The tables a run keeps
# ---------------------------------------------------------------------------

#: Per evaluation: inference-mode accuracy and cost on train and dev, and dev accuracy
#: in training mode (BatchNorm with the dev set's own statistics).
EVAL_COLUMNS = ("eval_step", "train_accuracy", "dev_accuracy", "train_cost", "dev_cost",
                "dev_accuracy_train_mode")
#: TensorBoard's distributions: the percentiles at 0, ±1.5σ, ±1σ, ±0.5σ and the median of
#: a normal distribution, of each layer's weights and gradients at every evaluation.
PERCENTILES = (0.0, 6.68, 15.87, 30.85, 50.0, 69.15, 84.13, 93.32, 100.0)
#: Per BatchNorm layer and unit at each evaluation (the population statistics are in the
#: snapshot for the newest evaluation only).
BN_STATISTICS = ("running_mean", "running_var", "batch_mean", "batch_var")


class Schemas:
    """The column layouts of one run's history, fixed by its network.

    ``steps``: per step, compact where precision is not at stake (10⁶ steps stay well
    under 100 MB); ``evals``: per evaluation; ``bn``: per evaluation, one row of
    ``units`` values per BN layer and statistic, or None without BatchNorm;
    ``optional``: float columns newer files have and older ones may lack.
    """

    def __init__(self, weight_keys, bn_units: dict[str, int]):
        self.steps = {
            "step": (np.int64, ()),
            "epoch": (np.int32, ()),
            "cost": (np.float64, ()),
            "cost_smoothed": (np.float64, ()),
            "lr": (np.float64, ()),
            "grad_norm": (np.float32, ()),
            "time": (np.float64, ()),  # when the step was recorded (Unix seconds)
        }
        for key in weight_keys:
            self.steps[f"update_ratio/{key.split('.')[0]}"] = (np.float32, ())
        self.evals = {name: (np.int64 if name == "eval_step" else np.float64, ())
                      for name in EVAL_COLUMNS}
        #: Columns added after the first journals were written: a chunk without them
        #: still fits, and they read NaN there.
        self.optional = {"time"}
        for key in weight_keys:
            layer = key.split(".")[0]
            self.evals[f"sparsity/{layer}"] = (np.float32, ())
            self.evals[f"weights/{layer}"] = (np.float32, (len(PERCENTILES),))
            self.evals[f"grads/{layer}"] = (np.float32, (len(PERCENTILES),))
            self.optional |= {f"sparsity/{layer}", f"weights/{layer}", f"grads/{layer}"}
        self.bn = None
        if bn_units:
            self.bn = {"eval_step": (np.int64, ())}
            for layer, n in bn_units.items():
                for stat in BN_STATISTICS:
                    self.bn[f"{layer}/{stat}"] = (np.float32, (n,))

    @classmethod
    def of(cls, network) -> Schemas:
        return cls.of_architecture(network.arch)

    @classmethod
    def of_architecture(cls, arch) -> Schemas:
        """The layouts a :class:`dlcore.network.Network` of ``arch`` records, without
        building one (reading another run's curves allocates no weights)."""
        return cls(arch.weight_keys, arch.bn_units)

    @property
    def journal_nan_keys(self) -> frozenset[str]:
        """A journal's arrays that keep NaN ("not recorded": rows from before an optional
        column existed); every other float array is finite on disk."""
        keys = set()
        for column in self.optional:
            prefix = "steps/" if column in self.steps else "evals/"
            keys.add(prefix + column)
            if prefix == "steps/":
                keys |= {f"buckets/{column}", f"buckets/{column}/min", f"buckets/{column}/max"}
        return frozenset(keys)
