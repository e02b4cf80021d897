"""Datasets: built-in and user files, a stratified train/dev split, standardization, mini-batches.

Arrays are batch-major: ``X`` is ``(m, n_features)`` float, ``y`` is ``(m,)`` int64 class ids
``0..C-1``. Everything a user can get wrong in a data file raises ``ValueError`` with a message
that names the file and says what is wrong and where (row and column, or array index).
"""

from __future__ import annotations

import array
import collections
import csv
import inspect
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlcore.arguments import require_int, require_number
from dlcore.batches import MiniBatchIterator  # noqa: F401  (part of this module's API)

BUILTIN_DATASETS = ("digits", "spirals", "blobs")
FILE_SUFFIXES = (".csv", ".npz")
# Header names that mark a CSV's label column, case-insensitive, in priority order: "class"
# comes before "y" so that a file with columns x, y, class uses y as a feature.
LABEL_COLUMN_NAMES = ("label", "class", "y")
MIN_EXAMPLES = 10
MIN_EXAMPLES_PER_CLASS = 2  # one for training, one for the dev set
DEFAULT_MAX_BYTES = 200 * 1024 * 1024


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


# ---------------------------------------------------------------------------------------------
# User files
# ---------------------------------------------------------------------------------------------


def load_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES):
    """A user's labelled data file. Returns X: (m, n_features) float64, y: (m,) int64 in 0..C-1.

    CSV: a header row is required. The label column is the one named ``label``, ``class`` or
    ``y`` (case-insensitive, in that priority), else the last column; every other column is a
    feature. Rows are numbered as in a spreadsheet: the header is row 1.
    NPZ: arrays ``X`` (2-D, numeric) and ``y`` (1-D), as written by ``np.savez(path, X=X, y=y)``;
    loaded with ``allow_pickle=False``, so object arrays are refused and nothing is unpickled.

    Labels must be integers (2.0 counts as 2). They are remapped to 0..C-1 in sorted order of
    the original values; prepare_dataset keeps the original values as ``Dataset.class_names``.
    At least MIN_EXAMPLES rows, 2 classes and MIN_EXAMPLES_PER_CLASS examples per class.

    Raises ValueError, naming the file and the place, for anything malformed; files larger than
    max_bytes (or .npz archives that expand beyond it) are refused before they are read.
    """
    X, y, _ = _load_labelled_file(path, max_bytes)
    return X, y


def _load_labelled_file(
    path, max_bytes=DEFAULT_MAX_BYTES
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """load_file's work, also returning class_names: (C,) original label of each class id."""
    path = Path(path)
    max_bytes = require_int("max_bytes", max_bytes, minimum=1)
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(
            f"{path.name}: unknown file type {path.suffix or '(no extension)'!r}; "
            "use a .csv or .npz file"
        )
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"{path.name}: the file is empty")
    if size > max_bytes:
        raise ValueError(
            f"{path.name}: the file is {_format_size(size)}, "
            f"larger than the {_format_size(max_bytes)} limit"
        )
    if suffix == ".csv":
        X, labels, where = _read_csv(path)
    else:
        X, labels, where = _read_npz(path, max_bytes)
    y, class_names = _encode_labels(labels, where, path.name)
    _check_class_counts(y, class_names, path.name)
    return X, y, class_names


def _read_csv(path: Path):
    """Returns X: (m, n) float64, labels: (m,) float64, where(i) -> "row r, column 'label'"."""
    name = path.name
    header: list[str] | None = None
    label_column = -1
    values = array.array("d")  # every cell of every data row, row after row: compact
    row_numbers: list[int] = []
    reader = None
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: Excel's BOM
            reader = csv.reader(file)
            for cells in reader:
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # blank line
                if header is None:
                    header = _check_header(cells, name)
                    label_column = _find_label_column(header, name)
                    continue
                if len(cells) != len(header):
                    raise ValueError(
                        f"{name}: row {reader.line_num} has {len(cells)} cells "
                        f"but the header has {len(header)} columns"
                    )
                try:
                    values.extend([float(cell) for cell in cells])
                except ValueError:
                    raise ValueError(
                        _describe_bad_cell(cells, header, label_column, reader.line_num, name)
                    ) from None
                row_numbers.append(reader.line_num)
    except UnicodeDecodeError as error:
        raise ValueError(f"{name}: not UTF-8 text (byte {error.start}: {error.reason})") from None
    except csv.Error as error:
        raise ValueError(f"{name}: row {reader.line_num}: {error}") from None
    if header is None:
        raise ValueError(f"{name}: the file is empty")

    table = np.frombuffer(values, dtype=np.float64).reshape(len(row_numbers), len(header))
    feature_columns = [j for j in range(len(header)) if j != label_column]
    X = np.ascontiguousarray(table[:, feature_columns])
    labels = table[:, label_column].copy()
    _check_finite(
        X,
        lambda i, j: f"row {row_numbers[i]}, column {header[feature_columns[j]]!r}",
        name,
    )
    return X, labels, lambda i: f"row {row_numbers[i]}, column {header[label_column]!r}"


def _check_header(cells: list[str], name: str) -> list[str]:
    header = [cell.strip() for cell in cells]
    if all(_is_number(cell) for cell in header):
        raise ValueError(
            f"{name}: missing header: the first row ({','.join(header)}) holds numbers; "
            "add a header row naming the columns, e.g. x1,x2,label"
        )
    for column, column_name in enumerate(header, start=1):
        if not column_name:
            raise ValueError(f"{name}: header column {column} has no name")
    # Counted in one pass: header.count per column is quadratic, minutes for 10^5 columns.
    duplicates = sorted(n for n, count in collections.Counter(header).items() if count > 1)
    if duplicates:
        raise ValueError(f"{name}: the header names column {duplicates[0]!r} more than once")
    if len(header) < 2:
        raise ValueError(
            f"{name}: only one column ({header[0]!r}); "
            "need at least one feature column and a label column"
        )
    return header


def _find_label_column(header: list[str], name: str) -> int:
    lowered = [column_name.lower() for column_name in header]
    for wanted in LABEL_COLUMN_NAMES:
        matches = [j for j, column_name in enumerate(lowered) if column_name == wanted]
        if len(matches) > 1:
            raise ValueError(
                f"{name}: columns {', '.join(repr(header[j]) for j in matches)} could each be "
                "the label column; rename all but one"
            )
        if matches:
            return matches[0]
    return len(header) - 1


def _describe_bad_cell(cells, header, label_column, row, name) -> str:
    for column, cell in enumerate(cells):
        if _is_number(cell):
            continue
        place = f"{name}: row {row}, column {header[column]!r}"
        if not cell.strip():
            return f"{place} is empty"
        if column == label_column:
            return f"{place}: {cell!r} is not an integer class label"
        return f"{place}: {cell!r} is not a number"
    raise AssertionError("called without a bad cell")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_npz(path: Path, max_bytes: int):
    """Returns X: (m, n) float64, labels: (m,) numeric, where(i) -> "y[i]"."""
    name = path.name
    with open(path, "rb") as file:
        if file.read(2) != b"PK":
            raise ValueError(
                f"{name}: not an .npz archive (expected a zip of .npy arrays, "
                "as written by numpy.savez)"
            )
    try:
        with zipfile.ZipFile(path) as archive:
            expanded = sum(member.file_size for member in archive.infolist())
    except zipfile.BadZipFile as error:
        raise ValueError(f"{name}: damaged .npz archive ({error})") from None
    if expanded > max_bytes:
        raise ValueError(
            f"{name}: its arrays take {_format_size(expanded)} uncompressed, "
            f"more than the {_format_size(max_bytes)} limit"
        )

    arrays = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in ("X", "y"):
                if key not in archive.files:
                    found = ", ".join(repr(k) for k in archive.files) or "none"
                    raise ValueError(
                        f"{name}: no array named {key!r} (found: {found}); "
                        "save with numpy.savez(path, X=X, y=y)"
                    )
                try:
                    arrays[key] = archive[key]
                except ValueError as error:  # object arrays: numpy refuses to unpickle them
                    raise ValueError(
                        f"{name}: array {key!r} cannot be loaded ({error}); object arrays and "
                        "pickled data are refused, save plain numeric arrays"
                    ) from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(f"{name}: damaged .npz archive ({error})") from None

    X, labels = arrays["X"], arrays["y"]
    for key, value in arrays.items():
        # A member that is not in .npy format comes back as raw bytes (never unpickled).
        if not isinstance(value, np.ndarray):
            raise ValueError(f"{name}: {key!r} is not a numpy array in .npy format")
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{name}: {key} has dtype {value.dtype}; it must hold numbers")
    if X.ndim != 2:
        raise ValueError(f"{name}: X must be 2-D (examples, features), got shape {X.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{name}: y must be 1-D (examples,), got shape {labels.shape}")
    if len(X) != len(labels):
        raise ValueError(f"{name}: X has {len(X)} rows but y has {len(labels)} labels")
    if X.shape[1] == 0:
        raise ValueError(f"{name}: X has no feature columns")
    X = np.ascontiguousarray(X, dtype=np.float64)
    _check_finite(X, lambda i, j: f"X[{i}, {j}]", name)
    return X, labels, lambda i: f"y[{i}]"


def _check_finite(X: np.ndarray, where: Callable[[int, int], str], name: str) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: {where(int(i), int(j))}: {X[i, j]} is not a finite number "
            "(NaN and infinity are not allowed)"
        )


def _encode_labels(labels: np.ndarray, where: Callable[[int], str], name: str):
    """labels: (m,) integral numbers -> y: (m,) int64 in 0..C-1, class_names: (C,) str."""
    if labels.dtype.kind == "f":
        not_integral = ~np.isfinite(labels) | (labels != np.round(labels))
        if not_integral.any():
            i = int(np.flatnonzero(not_integral)[0])
            raise ValueError(
                f"{name}: {where(i)}: {float(labels[i])!r} is not an integer class label"
            )
    # Beyond 2^53 float64 no longer tells neighbouring integers apart (a CSV is parsed as
    # float), and casting past int64 would silently merge classes.
    too_large = np.abs(labels.astype(np.float64)) >= 2.0**53
    if too_large.any():
        i = int(np.flatnonzero(too_large)[0])
        raise ValueError(
            f"{name}: {where(i)}: {labels[i].item()!r} is too large for a class label; "
            "use integers between -2^53 and 2^53 (e.g. 0, 1, 2, ...)"
        )
    values, y = np.unique(labels.astype(np.int64), return_inverse=True)
    return y.astype(np.int64), tuple(str(value) for value in values.tolist())


def _check_class_counts(y: np.ndarray, class_names: tuple[str, ...], name: str) -> None:
    if len(y) < MIN_EXAMPLES:
        raise ValueError(f"{name}: only {len(y)} examples; at least {MIN_EXAMPLES} are needed")
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


def _format_size(n_bytes: int) -> str:
    for unit, scale in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"


# ---------------------------------------------------------------------------------------------
# Split and standardization
# ---------------------------------------------------------------------------------------------


def train_dev_split(X, y, dev_fraction: float = 0.2, seed: int = 0):
    """Stratified, seeded split.

    X: (m, n), y: (m,) integer labels -> X_train: (m_train, n), y_train: (m_train,),
    X_dev: (m_dev, n), y_dev: (m_dev,).

    A class with m_c examples sends round(dev_fraction·m_c) of them to dev, but at least 1 when
    m_c ≥ 2 and never all of them: every class keeps at least one training example. Which ones
    go where is drawn from np.random.default_rng(seed); both parts come out shuffled. The same
    inputs and seed give the same split.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (examples, features), got shape {X.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(f"y must be 1-D integer labels, got shape {y.shape} dtype {y.dtype}")
    if len(X) != len(y) or len(y) == 0:
        raise ValueError(f"X has {len(X)} rows and y {len(y)} labels; need the same, at least 1")
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
    return X[train_index], y[train_index], X[dev_index], y[dev_index]


class Standardizer:
    """Per-feature z-scores: X' = (X - mean) / std, with mean, std: (n,) float64 from fit().

    Fit on the training split only, then transform every split with the same statistics.
    std is the population standard deviation (1/m); a constant column gets std 1, so it maps to
    zeros instead of dividing by zero.
    """

    def __init__(self, mean: np.ndarray | None = None, std: np.ndarray | None = None):
        self.mean = mean
        self.std = std

    def fit(self, X) -> Standardizer:
        """X: (m, n) with m ≥ 1. Returns self."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) == 0:
            raise ValueError(f"fit needs a 2-D array with at least one row, got shape {X.shape}")
        self.mean = X.mean(axis=0)
        self.std = np.where(np.ptp(X, axis=0) == 0, 1.0, X.std(axis=0))
        return self

    def transform(self, X) -> np.ndarray:
        """X: (k, n) -> (k, n), in X's float dtype (float64 for integer input)."""
        if self.mean is None or self.std is None:
            raise ValueError("Standardizer.transform called before fit")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.mean):
            raise ValueError(f"expected shape (k, {len(self.mean)}), got {X.shape}")
        dtype = X.dtype if X.dtype.kind == "f" else np.float64
        return ((X - self.mean) / self.std).astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Dataset
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset ready to train on: split, standardized, in the run's dtype. Arrays are read-only.

    X_train: (m_train, n_features), X_dev: (m_dev, n_features) in the requested float dtype,
    C-contiguous, standardized as X = (raw - feature_mean) / feature_std, where
    feature_mean, feature_std: (n_features,) float64 come from the training split only.
    y_train: (m_train,), y_dev: (m_dev,) int64 class ids 0..n_classes-1.
    class_names: (n_classes,) the original label of each class id, e.g. ("-1", "1") for a file
    labelled -1/1; "0".."C-1" for the built-in sets.
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


def prepare_dataset(
    source: str | os.PathLike,
    seed: int = 0,
    dev_fraction: float = 0.2,
    dtype: str = "float64",
    **kw,
) -> Dataset:
    """Load source, split it (stratified, seeded), standardize with training statistics.

    source: "digits", "spirals", "blobs" (kw go to make_spirals / make_blobs, e.g.
    n_samples=1000; their seed is this seed), or a path to a .csv or .npz file (kw: max_bytes).
    dtype: "float32" or "float64", the dtype of X_train and X_dev.
    Raises ValueError for an unknown source, option or dtype, and for any bad file (load_file).
    """
    float_dtype = _float_dtype(dtype)
    # 1) Load: the raw features in float64, labels as ids 0..C-1 and their original names.
    X, y, class_names, name = _load_source(source, seed, kw)
    # 2) Split, stratified per class.
    X_train, y_train, X_dev, y_dev = train_dev_split(X, y, dev_fraction, seed)
    # 3) Standardize both parts with statistics of the training part only.
    standardizer = Standardizer().fit(X_train)
    return Dataset(
        name=name,
        X_train=_read_only(standardizer.transform(X_train), float_dtype),
        y_train=_read_only(y_train, np.int64),
        X_dev=_read_only(standardizer.transform(X_dev), float_dtype),
        y_dev=_read_only(y_dev, np.int64),
        n_features=X.shape[1],
        n_classes=len(class_names),
        class_names=class_names,
        feature_mean=_read_only(standardizer.mean, np.float64),
        feature_std=_read_only(standardizer.std, np.float64),
    )


_GENERATORS = {"spirals": make_spirals, "blobs": make_blobs}


def _load_source(source, seed, kw):
    """Returns X: (m, n) float64, y: (m,) int64 ids, class_names, and the dataset's name."""
    if isinstance(source, str) and source in BUILTIN_DATASETS:
        if source == "digits":
            _check_options(kw, set(), source)
            X, y = load_digits()
        else:
            generator = _GENERATORS[source]
            _check_options(kw, set(inspect.signature(generator).parameters) - {"seed"}, source)
            X, y = generator(**kw, seed=seed)
        class_names = tuple(str(label) for label in range(int(y.max()) + 1))
        _check_class_counts(y, class_names, source)
        return X, y, class_names, source
    is_path = isinstance(source, str | os.PathLike)
    if not is_path or Path(source).suffix.lower() not in FILE_SUFFIXES:
        raise ValueError(
            f"unknown dataset {source!r}: use {', '.join(BUILTIN_DATASETS)}, "
            "or a path to a .csv or .npz file"
        )
    _check_options(kw, {"max_bytes"}, Path(source).name)
    X, y, class_names = _load_labelled_file(source, **kw)
    return X, y, class_names, Path(source).name


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


def _read_only(values: np.ndarray, dtype) -> np.ndarray:
    values = np.array(values, dtype=dtype, order="C")  # a fresh copy the Dataset owns
    values.flags.writeable = False
    return values
