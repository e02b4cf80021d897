"""Append-only metric history that a snapshot can share without copying.

Rows are only ever appended, never rewritten, so a read-only view of the
first n rows stays valid forever: when the buffer fills up it is replaced by
a larger one (capacity doubles, so appends cost amortised O(1) and growth is
never quadratic) and old views keep the old buffer alive. That makes
:meth:`Columns.view` O(number of columns), even with 10⁶ rows.
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
# The tables a run keeps
# ---------------------------------------------------------------------------

#: Per evaluation: inference-mode accuracy and cost on train and dev, and dev accuracy
#: in training mode (BatchNorm with the dev set's own statistics).
EVAL_COLUMNS = ("eval_step", "train_accuracy", "dev_accuracy", "train_cost", "dev_cost",
                "dev_accuracy_train_mode")
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
        }
        for key in weight_keys:
            self.steps[f"update_ratio/{key.split('.')[0]}"] = (np.float32, ())
        self.evals = {name: (np.int64 if name == "eval_step" else np.float64, ())
                      for name in EVAL_COLUMNS}
        #: Columns added after the first journals were written: a chunk without them
        #: still fits, and they read NaN there.
        self.optional = set()
        for key in weight_keys:
            self.evals[f"sparsity/{key.split('.')[0]}"] = (np.float32, ())
            self.optional.add(f"sparsity/{key.split('.')[0]}")
        self.bn = None
        if bn_units:
            self.bn = {"eval_step": (np.int64, ())}
            for layer, n in bn_units.items():
                for stat in BN_STATISTICS:
                    self.bn[f"{layer}/{stat}"] = (np.float32, (n,))

    @classmethod
    def of(cls, network) -> Schemas:
        return cls(network.weight_keys,
                   {layer: network.params[f"{layer}.gamma"].shape[0]
                    for layer in network.bn_layers})
