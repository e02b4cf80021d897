"""Shuffled mini-batches of example indices, resumable bit for bit (``MiniBatchIterator``)."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping

import numpy as np

from dlcore.arguments import require_int


class MiniBatchIterator:
    """Shuffled mini-batches of example indices, epoch after epoch, resumable bit for bit.

    Each epoch draws a fresh permutation of range(n_examples) from the iterator's own
    np.random.Generator(PCG64(seed)); next_batch() -> (batch_size,) int64 indices, consecutive
    slices of that permutation, in permutation order (not sorted).

    The tail of an epoch shorter than batch_size is dropped, so every batch has exactly
    min(batch_size, n_examples) examples: BatchNorm never normalizes over a batch of 1 and the
    step noise does not jump at epoch ends. Since every epoch reshuffles, an example dropped in
    one epoch is seen in others. With batch_size ≥ n_examples each batch is the whole set,
    permuted anew. An epoch counts as completed as soon as its last full batch is drawn.

    batch_size may be changed between batches: the current epoch continues from the same
    position with the new size. state_dict() / load_state_dict() capture everything, so a
    restored iterator yields exactly the batches the original would have.
    """

    _STATE_KEYS = frozenset({"epoch", "position", "batch_size", "rng_state", "permutation"})

    def __init__(self, n_examples: int, batch_size: int, seed: int = 0):
        self._n_examples = require_int("n_examples", n_examples, minimum=1)
        self._batch_size = require_int("batch_size", batch_size, minimum=1)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._epoch = 0
        self._position = 0
        self._permutation = self._draw_permutation()

    @property
    def n_examples(self) -> int:
        return self._n_examples

    @property
    def epoch(self) -> int:
        """Completed epochs."""
        return self._epoch

    @property
    def position(self) -> int:
        """Index into the current epoch's permutation of the next batch's first example."""
        return self._position

    @property
    def batches_per_epoch(self) -> int:
        return self._n_examples // self._effective_batch_size

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = require_int("batch_size", value, minimum=1)

    def next_batch(self) -> np.ndarray:
        """The next (min(batch_size, n_examples),) int64 example indices."""
        # A batch size raised since the last batch may no longer fit in this epoch's tail.
        self._start_new_epoch_if_exhausted()
        end = self._position + self._effective_batch_size
        batch = self._permutation[self._position : end].copy()
        self._position = end
        self._start_new_epoch_if_exhausted()
        return batch

    def state_dict(self) -> dict:
        """Everything needed to resume: a deep copy; JSON-serializable except "permutation"."""
        return {
            "epoch": self._epoch,
            "position": self._position,
            "batch_size": self._batch_size,
            "rng_state": copy.deepcopy(self._rng.bit_generator.state),
            "permutation": self._permutation.copy(),
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore a state_dict() exactly. Validates all of it first; on error nothing changes."""
        # 1) Check every key and value.
        if not isinstance(state, Mapping):
            raise ValueError(f"iterator state must be a dict, got {type(state).__name__}")
        missing, unexpected = self._STATE_KEYS - set(state), set(state) - self._STATE_KEYS
        if missing or unexpected:
            raise ValueError(
                f"iterator state: missing keys {sorted(missing)}, unexpected keys "
                f"{sorted(unexpected, key=str)}"
            )
        epoch = require_int("iterator state 'epoch'", state["epoch"], minimum=0)
        batch_size = require_int("iterator state 'batch_size'", state["batch_size"], minimum=1)
        position = require_int("iterator state 'position'", state["position"], minimum=0)
        if position > self._n_examples:
            raise ValueError(
                f"iterator state 'position' {position} is past the end of {self._n_examples} "
                "examples"
            )
        permutation = self._check_permutation(state["permutation"])
        bit_generator = self._check_rng_state(state["rng_state"])
        # 2) Commit, all at once.
        self._epoch, self._position, self._batch_size = epoch, position, batch_size
        self._permutation = permutation
        self._rng = np.random.Generator(bit_generator)

    @property
    def _effective_batch_size(self) -> int:
        return min(self._batch_size, self._n_examples)

    def _draw_permutation(self) -> np.ndarray:
        return self._rng.permutation(self._n_examples).astype(np.int64, copy=False)

    def _start_new_epoch_if_exhausted(self) -> None:
        if self._position + self._effective_batch_size > self._n_examples:
            self._epoch += 1
            self._position = 0
            self._permutation = self._draw_permutation()

    def _check_permutation(self, permutation) -> np.ndarray:
        permutation = np.array(permutation)  # a copy: later changes to the state don't leak in
        if permutation.ndim != 1 or permutation.dtype.kind not in "iu":
            raise ValueError(
                "iterator state 'permutation' must be a 1-D integer array, got shape "
                f"{permutation.shape} dtype {permutation.dtype}"
            )
        if len(permutation) != self._n_examples:
            raise ValueError(
                f"iterator state is for {len(permutation)} examples, "
                f"this iterator has {self._n_examples}"
            )
        if not np.array_equal(np.sort(permutation), np.arange(self._n_examples)):
            raise ValueError(
                f"iterator state 'permutation' is not a permutation of range({self._n_examples})"
            )
        return permutation.astype(np.int64)

    @staticmethod
    def _check_rng_state(rng_state) -> np.random.PCG64:
        """A PCG64 set to rng_state; ValueError unless rng_state is a valid PCG64 state."""
        bounds = {"state": 2**128, "inc": 2**128, "has_uint32": 2, "uinteger": 2**32}
        try:
            if rng_state["bit_generator"] != "PCG64":
                raise ValueError(f"bit generator {rng_state['bit_generator']!r}, not PCG64")
            fields = {
                **rng_state["state"],
                "has_uint32": rng_state["has_uint32"],
                "uinteger": rng_state["uinteger"],
            }
            for field, bound in bounds.items():
                value = fields[field]
                if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                    raise ValueError(f"{field!r} is {value!r}, not an integer")
                if not 0 <= value < bound:
                    raise ValueError(f"{field!r} is {value}, outside [0, {bound})")
            bit_generator = np.random.PCG64()
            bit_generator.state = copy.deepcopy(dict(rng_state))
        except (KeyError, TypeError, ValueError, OverflowError) as error:
            raise ValueError(
                f"iterator state 'rng_state' is not a valid PCG64 state: {error}"
            ) from None
        return bit_generator
