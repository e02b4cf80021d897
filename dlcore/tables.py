"""What every file reader returns, and the rules they share (column names, label column).

A reader turns one file into a ``RawFile``: its features exactly as stored (uint8 images stay
uint8, float32 stays float32: nothing is widened before standardisation), its labels as
numbers or names, and callbacks that say where a value sits in the file, so that a message
about example 41 523 can name "row 41 525, column 'pixel7'" or "x_test[3, 14, 2]".
"""

from __future__ import annotations

import collections
import math
import mmap
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# Header names that mark the label column, case-insensitive, in priority order: "class"
# comes before "y" so that a file with columns x, y, class uses y as a feature.
LABEL_COLUMN_NAMES = ("label", "class", "y")
# Rows per block when a whole array is scanned: ~1M values, a few MB of temporaries.
BLOCK_VALUES = 2**20


@dataclass(frozen=True)
class Part:
    """One labelled block of a file, as stored.

    X: (m, n_features) real numbers in the file's dtype, any memory order, every value finite.
    labels: (m,) numbers (int, uint, float, bool) or names (str).
    cell(i, j): where X[i, j] is in the file, e.g. "row 7, column 'x2'" or "x_test[3, 14, 2]".
    label_place(i): where labels[i] is, e.g. "row 7, column 'label'" or "y[5]".
    """

    X: np.ndarray
    labels: np.ndarray
    cell: Callable[[int, int], str]
    label_place: Callable[[int], str]


@dataclass(frozen=True)
class RawFile:
    """A data file as read: the training part, and the file's own test split if it has one.

    feature_shape: one example's shape before it was flattened into n_features values, e.g.
    (28, 28) for images; (n_features,) for tables.
    """

    name: str
    train: Part
    dev: Part | None
    feature_shape: tuple[int, ...]


def check_column_names(names: list[str], file_name: str) -> int:
    """names: a table's column names (stripped). Returns the label column's index.

    The label column is the one named label, class or y (case-insensitive, in that priority),
    else the last; every other column is a feature.
    """
    for column, column_name in enumerate(names, start=1):
        if not column_name:
            raise ValueError(f"{file_name}: header column {column} has no name")
    # Counted in one pass: names.count per column is quadratic, minutes for 10^5 columns.
    duplicates = sorted(n for n, count in collections.Counter(names).items() if count > 1)
    if duplicates:
        raise ValueError(
            f"{file_name}: the header names column {duplicates[0]!r} more than once"
        )
    if len(names) < 2:
        raise ValueError(
            f"{file_name}: only one column ({names[0]!r}); "
            "need at least one feature column and a label column"
        )
    lowered = [column_name.lower() for column_name in names]
    for wanted in LABEL_COLUMN_NAMES:
        matches = [j for j, column_name in enumerate(lowered) if column_name == wanted]
        if len(matches) > 1:
            raise ValueError(
                f"{file_name}: columns {', '.join(repr(names[j]) for j in matches)} could each "
                "be the label column; rename all but one"
            )
        if matches:
            return matches[0]
    return len(names) - 1


def first_non_finite(X: np.ndarray) -> tuple[int, int] | None:
    """X: (m, n). (i, j) of the first NaN or ±inf in row-major order, or None.

    Scanned in blocks of rows, so the check needs no (m, n) temporary.
    """
    if X.dtype.kind != "f":
        return None
    rows = max(1, BLOCK_VALUES // max(1, X.shape[1]))
    for start in range(0, len(X), rows):
        finite = np.isfinite(X[start : start + rows])
        if not finite.all():
            i, j = np.unravel_index(int(np.argmin(finite)), finite.shape)
            return start + int(i), int(j)
    return None


def scratch_array(shape: tuple[int, int], order: str = "C", dtype=np.float64) -> np.ndarray:
    """np.empty(shape, dtype) for a reader's temporary copy of a table, in memory that is not
    flagged for transparent huge pages.

    numpy asks the kernel for huge pages for every array of 4 MB or more; where the kernel then
    compacts memory to find them (THP defrag "madvise", as on the machines this runs on), the
    first write to a 400 MB array took 0.7-1.0 s, against 0.19 s in 4 KB pages. This copy is
    written once and read once in blocks, so huge pages buy it nothing. Pages never written
    (rows past the end of an upper bound) are never backed by memory.
    """
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    if count * dtype.itemsize < 1 << 22:
        return np.empty(shape, dtype=dtype, order=order)
    buffer = mmap.mmap(-1, count * dtype.itemsize)  # anonymous: zero pages on first touch
    return np.frombuffer(buffer, dtype=dtype, count=count).reshape(shape, order=order)


def non_finite_message(file_name: str, place: str, value) -> str:
    return (
        f"{file_name}: {place}: {value} is not a finite number "
        "(NaN and infinity are not allowed)"
    )


def short(text: str, limit: int = 40) -> str:
    """text, cut to ``limit`` characters for a message (a cell can hold a megabyte)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
