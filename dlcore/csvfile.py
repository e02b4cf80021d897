"""CSV and TSV files: a header row, then one example per row.

Two readers, one behaviour. pandas' C parser reads every file of more than
``ROWS_READ_BY_ROW`` rows: its speed is that of a plain ``pandas.read_csv``. It stops at the
first sign of trouble (a cell that is not a number, an empty cell, a ragged row, bad UTF-8)
and hands over to the csv-module reader, which walks the rows itself and so knows every
row's number: it writes the message. Files of few rows (up to 10^5 columns wide) are read by
the csv-module reader directly, since pandas spends ~20 µs per column on any file.

Numbers are what pandas' C parser reads as numbers (both readers parse with it; the slower
``pandas.to_numeric`` names the cells it refuses): "1_000" and Arabic-Indic digits are text
(Python's float() would take both), "nan" and "" are not numbers, "inf" is refused as not
finite.
Rows are numbered as in a spreadsheet or text editor: the header is row 1 (blank lines count).
"""

from __future__ import annotations

import codecs
import csv
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlcore.tables import (
    Part,
    RawFile,
    check_column_names,
    first_non_finite,
    non_finite_message,
    scratch_array,
    short,
)

SEPARATORS = {".csv": ",", ".tsv": "\t"}
ROWS_READ_BY_ROW = 100
# Cells the csv-module reader holds as Python strings before converting them (~4 MB).
ROW_BLOCK_CELLS = 2**16
NAN_SPELLINGS = frozenset({"nan", "+nan", "-nan"})
LABEL_BYTES = 64  # a label kept as a Python str, per row, for the memory estimate


@dataclass(frozen=True)
class Header:
    """A file's first non-blank row. names: (n,) stripped; label: index of the label column."""

    path: Path
    name: str
    separator: str
    names: tuple[str, ...]
    label: int
    features: tuple[int, ...]  # the indices of every other column


def read_csv(path: Path, check_memory) -> RawFile:
    """A .csv or .tsv file -> RawFile with X: (m, n_features) real and labels: (m,).

    check_memory(name, held_bytes, values, what): see dlcore.readers.MemoryCheck.
    """
    header = read_header(path)
    lines = count_lines(path)
    n_features = len(header.features)
    # pandas' columns (8 bytes a cell, twice while it joins the pieces it parsed) drain into X.
    check_memory(
        header.name,
        lines * (n_features * 16 + LABEL_BYTES),
        lines * n_features,
        f"up to {lines - 1:,} rows × {n_features:,} features parsed as float64, plus the copy "
        "that training uses",
    )
    if lines - 1 <= ROWS_READ_BY_ROW:
        X, labels, row_numbers = read_by_row(header, lines)
    else:
        X, labels, row_numbers = read_with_pandas(header, lines)
    feature_names = [header.names[j] for j in header.features]
    label_name = header.names[header.label]

    def label_place(i: int) -> str:
        return f"row {row_numbers(i)}, column {label_name!r}"

    part = Part(
        X=X,
        labels=labels if labels.dtype != object else labels_from_text(labels, label_place,
                                                                          header.name),
        cell=lambda i, j: f"row {row_numbers(i)}, column {feature_names[j]!r}",
        label_place=label_place,
    )
    return RawFile(name=header.name, train=part, dev=None, feature_shape=(n_features,))


# ---------------------------------------------------------------------------------------------
# Rows, as the csv module sees them
# ---------------------------------------------------------------------------------------------


def records(path: Path, separator: str) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) for every non-blank row, the header included.

    Raises ValueError naming the row for bad quoting and the byte for text that is not UTF-8.
    """
    name = path.name
    line = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as file:  # -sig: Excel's BOM
            reader = csv.reader(file, delimiter=separator, strict=True)
            while True:
                line = reader.line_num + 1  # where the next record starts
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                if not cells or (len(cells) == 1 and not cells[0].strip()):
                    continue  # a blank line, as pandas skips them
                yield line, cells
    except UnicodeDecodeError:
        raise ValueError(describe_bad_utf8(path)) from None
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            raise ValueError(
                f'{name}: row {line}: a quoted cell (") starts in this row and is never closed'
            ) from None
        if "field larger than field limit" in str(error):
            raise ValueError(
                f"{name}: row {line}: a cell is longer than {csv.field_size_limit():,} "
                'characters; is a quote (") never closed?'
            ) from None
        raise ValueError(f"{name}: row {line}: {error}; check the quotes (\") in it") from None


def data_records(header: Header) -> Iterator[tuple[int, list[str]]]:
    """(row number, cells) of every row after the header; ragged rows raise ValueError."""
    rows = records(header.path, header.separator)
    next(rows)
    width = len(header.names)
    for line, cells in rows:
        if len(cells) != width:
            raise ValueError(
                f"{header.name}: row {line} has {len(cells)} cells "
                f"but the header has {width} columns"
            )
        yield line, cells


def read_header(path: Path) -> Header:
    name = path.name
    first = next(records(path, SEPARATORS[path.suffix.lower()]), None)
    if first is None:
        raise ValueError(f"{name}: the file is empty")
    names = [cell.strip() for cell in first[1]]
    if all(np.isfinite(to_numbers(np.array(some, dtype=object))).all()
           for some in (names[:8], names)):  # most headers are told by their first names
        raise ValueError(
            f"{name}: missing header: the first row ({short(','.join(names), 60)}) holds "
            "numbers; add a header row naming the columns, e.g. x1,x2,label"
        )
    label = check_column_names(names, name)
    features = tuple(j for j in range(len(names)) if j != label)
    return Header(path, name, SEPARATORS[path.suffix.lower()], tuple(names), label, features)


def count_lines(path: Path) -> int:
    """Newlines + 1: an upper bound on the rows, read at disk speed."""
    newlines = 0
    with open(path, "rb") as file:
        while block := file.read(1 << 23):
            newlines += block.count(b"\n")
    return newlines + 1


def describe_bad_utf8(path: Path) -> str:
    """Where the first byte that is not UTF-8 is: its offset and row."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, line = 0, 1
    with open(path, "rb") as file:
        while block := file.read(1 << 20):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:
                at = offset - pending + error.start
                line += (decoder.getstate()[0] + block)[: error.start].count(b"\n")
                bad = (decoder.getstate()[0] + block)[error.start]
                return (
                    f"{path.name}: not UTF-8 text: byte {at} (row {line}) is {bad:#04x}; "
                    "save the file as UTF-8 (in Excel: 'CSV UTF-8')"
                )
            line += block.count(b"\n")
            offset += len(block)
    return f"{path.name}: not UTF-8 text; save the file as UTF-8 (in Excel: 'CSV UTF-8')"


# ---------------------------------------------------------------------------------------------
# Cells
# ---------------------------------------------------------------------------------------------


def to_numbers(texts: np.ndarray) -> np.ndarray:
    """texts: (k,) object array of str -> (k,) float64, NaN where pandas reads no number."""
    import pandas as pd

    return np.asarray(pd.to_numeric(texts, errors="coerce"), dtype=np.float64)


def describe_cell(file_name: str, place: str, text: str) -> str:
    """Why a feature cell is not a finite number, e.g. "data.csv: row 7, column 'x2' is empty"."""
    stripped = text.strip()
    if not stripped:
        return f"{file_name}: {place} is empty"
    if "\x00" in text:
        return f"{file_name}: {place} holds a NUL byte (\\x00); is this really a text file?"
    value = to_numbers(np.array([stripped], dtype=object))[0]
    if stripped.lower() in NAN_SPELLINGS or np.isinf(value):
        return non_finite_message(file_name, place, short(stripped))
    return f"{file_name}: {place}: {short(stripped)!r} is not a number{_hint(stripped)}"


def _hint(text: str) -> str:
    if "_" in text:
        return " (write 1000, not 1_000)"
    if any(not character.isascii() for character in text):
        return " (only the ASCII digits 0-9 make numbers)"
    return ""


def parse_numbers(texts: list[str]) -> np.ndarray | None:
    """texts: (k,) cells -> (k,) float64 by pandas' C parser, or None if it refuses any.

    The cells are handed to it as one column, one per line: 3-4× faster than to_numeric,
    which goes through a Python object per cell.
    """
    import pandas as pd

    text = "\n".join(texts)
    if text.count("\n") != len(texts) - 1:  # a cell holding a line break
        return None
    try:
        column = pd.read_csv(
            io.StringIO(text), header=None, names=[0], dtype={0: np.float64}, na_filter=False,
            skip_blank_lines=False, quoting=csv.QUOTE_NONE, engine="c",
        )[0].to_numpy()
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning):
        return None
    return column if len(column) == len(texts) else None


def convert_block(header: Header, cells: np.ndarray, lines: list[int]) -> np.ndarray:
    """cells: (k, n) object array of str, one block of rows, lines: their k row numbers ->
    (k, n_features) float64. Raises ValueError for the first cell (row-major) that is not a
    finite number (a feature) or is empty (the label)."""
    features = list(header.features)
    feature_cells = cells[:, features].ravel()
    values = parse_numbers(feature_cells.tolist())
    if values is None:  # to_numeric, slower, says which cells are no numbers
        values = to_numbers(feature_cells)
    values = values.reshape(len(cells), len(features))
    bad = np.zeros(cells.shape, dtype=bool)
    bad[:, features] = ~np.isfinite(values)
    bad[:, header.label] = [not text.strip() for text in cells[:, header.label]]
    if bad.any():
        i, column = (int(k) for k in np.unravel_index(int(np.argmax(bad)), bad.shape))
        place = f"row {lines[i]}, column {header.names[column]!r}"
        if column == header.label:
            raise ValueError(f"{header.name}: {place} is empty")
        raise ValueError(describe_cell(header.name, place, cells[i, column]))
    return values


# ---------------------------------------------------------------------------------------------
# The csv-module reader: exact, ~0.3 µs a cell
# ---------------------------------------------------------------------------------------------


def read_by_row(header: Header, lines: int):
    """Returns X: (m, n_features) float64, labels: (m,) object str, row_numbers(i) -> int."""
    X = scratch_array((lines, len(header.features)))  # an upper bound: unused rows cost nothing
    labels, row_numbers = [], []
    block, block_lines = [], []
    rows_per_block = max(1, ROW_BLOCK_CELLS // len(header.names))

    def convert():
        cells = np.array(block, dtype=object).reshape(len(block), len(header.names))
        start = len(row_numbers)
        X[start : start + len(block)] = convert_block(header, cells, block_lines)
        labels.extend(cells[:, header.label])
        row_numbers.extend(block_lines)
        block.clear()
        block_lines.clear()

    for line, cells in data_records(header):
        block.append(cells)
        block_lines.append(line)
        if len(block) == rows_per_block:
            convert()
    if block:
        convert()
    numbers = np.array(row_numbers, dtype=np.int64)
    return X[: len(numbers)], np.array(labels, dtype=object), lambda i: int(numbers[i])


# ---------------------------------------------------------------------------------------------
# The pandas reader: fast, hands every problem to the csv-module reader
# ---------------------------------------------------------------------------------------------


def read_with_pandas(header: Header, lines: int):
    """Returns X: (m, n_features) in the most compact dtype that holds it exactly (uint8,
    float32 or float64; Fortran order), labels: (m,) numbers as pandas inferred them, or
    object str (names, or a column pandas could not read as numbers), row_numbers(i) -> int
    (found on demand, for messages)."""
    import pandas as pd

    options = dict(
        sep=header.separator,
        header=0,  # the first non-blank row, replaced by names: pandas cannot mangle them
        names=list(range(len(header.names))),
        index_col=False,
        na_filter=False,  # "nan" and "" stay text: they are refused, not read as NaN
        engine="c",
        encoding="utf-8",
    )
    # One call, as a plain read_csv: reading in chunks took 1.8x as long (and low_memory=False
    # 2.2x) on 10^6 rows.
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # a row longer than names
            warnings.simplefilter("ignore", pd.errors.DtypeWarning)  # mixed columns are checked
            frame = pd.read_csv(header.path, **options)
    except (pd.errors.ParserError, pd.errors.ParserWarning, UnicodeDecodeError, ValueError):
        return _read_after_trouble(header, lines, -1)
    X, labels, suspect = _columns(frame, header)
    if suspect is not None:
        return _read_after_trouble(header, lines, suspect)
    return X, labels, _RowNumbers(header)


def _columns(frame, header: Header):
    """frame's feature columns -> X: (m, n_features), Fortran order, column by column
    as the frame is let go (its memory drains into X); labels: (m,); and the index of the
    first row that holds anything but finite numbers and a non-empty label, else None."""
    kinds = [dtype.kind for dtype in frame.dtypes]
    suspects = []  # per kind of problem, the first row that has it
    labels = frame[header.label]
    if labels.dtype.kind not in "iufb":  # text: names, or numbers mixed with something else
        empty = (labels.str.strip() == "").to_numpy()
        if empty.any():
            suspects.append(int(np.argmax(empty)))
    text_columns = [j for j in header.features if kinds[j] not in "iuf"]
    if text_columns:  # text (or True/False) among the numbers: which row is the first bad?
        bad = [~np.isfinite(to_numbers(frame[j].astype(str).to_numpy(object)))
               for j in text_columns]
        bad += [~np.isfinite(frame[j].to_numpy()) for j in header.features if kinds[j] == "f"]
        suspects += [int(np.argmax(rows)) for rows in bad if rows.any()]
        return None, None, min(suspects, default=0)
    if labels.dtype.kind not in "iufb":
        labels = labels.astype(str).to_numpy(dtype=object)
    else:
        labels = labels.to_numpy()
    columns = [frame[j].to_numpy() for j in header.features]
    del frame
    X = scratch_array((len(labels), len(columns)), order="F", dtype=_exact_dtype(columns))
    for j in range(len(columns)):
        X[:, j] = columns[j]
        columns[j] = None  # the last reference to pandas' array: freed now, not at the end
    if any(kinds[j] == "f" for j in header.features):  # "inf" and "1e999" parse as ±inf
        bad = first_non_finite(X)
        if bad is not None:
            suspects.append(bad[0])
    return X, labels, min(suspects) if suspects else None


def _exact_dtype(columns: list[np.ndarray]) -> np.dtype:
    """The most compact dtype that holds every value of these parsed columns exactly: uint8
    for pixels 0..255 (an MNIST CSV's copy is then 47 MB, not 376), float32 for integers
    within ±2^24, else float64 (text numbers have float64 precision)."""
    if not len(columns[0]) or any(column.dtype.kind not in "iu" for column in columns):
        return np.dtype(np.float64)
    low = min(int(column.min()) for column in columns)
    high = max(int(column.max()) for column in columns)
    if 0 <= low and high <= 255:
        return np.dtype(np.uint8)
    if -(2**24) <= low and high <= 2**24:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _read_after_trouble(header: Header, lines: int, suspect: int):
    """pandas saw a problem at record ``suspect`` (-1: couldn't say where): name it exactly."""
    for index, (line, cells) in enumerate(data_records(header)):  # ragged rows raise here
        if index == suspect:
            convert_block(header, np.array([cells], dtype=object), [line])
    # The csv module finds nothing wrong where pandas did: its reading is the reference.
    return read_by_row(header, lines)


class _RowNumbers:
    """record index -> row number, by walking the file on the first request (messages only)."""

    def __init__(self, header: Header):
        self._header = header
        self._found: dict[int, int] = {}

    def __call__(self, index: int) -> int:
        if index not in self._found:
            for i, (line, _) in enumerate(data_records(self._header)):
                if i == index:
                    self._found[index] = line
                    break
        return self._found.get(index, index + 2)


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def labels_from_text(texts: np.ndarray, place, file_name: str) -> np.ndarray:
    """texts: (m,) label cells -> (m,) float64 if every one is a number, else (m,) str names.

    A column that mixes numbers and names is refused at the first cell of the rarer kind.
    """
    import pandas as pd

    stripped = pd.Series(texts, dtype=object).str.strip().to_numpy(dtype=object)
    values = to_numbers(stripped)
    numeric = ~np.isnan(values) | np.isin(
        pd.Series(stripped, dtype=object).str.lower().to_numpy(dtype=object),
        list(NAN_SPELLINGS),
    )
    if numeric.all():
        return values
    if not numeric.any():
        return stripped.astype(str)
    odd = int(np.argmin(numeric)) if numeric.mean() >= 0.5 else int(np.argmax(numeric))
    usual = int(np.argmax(numeric != numeric[odd]))
    if numeric[odd]:
        what = f"{short(stripped[odd])!r} is a number, but the other labels are names"
    else:
        what = (
            f"{short(stripped[odd])!r} is not an integer class label, and the other labels "
            "are numbers"
        )
    raise ValueError(
        f"{file_name}: {place(odd)}: {what} (e.g. {short(stripped[usual])!r} in "
        f"{place(usual)}); use numbers for every label, or names for every label"
    )
