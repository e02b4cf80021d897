"""Data files: which formats Panda reads, one entry point for all of them, a folder listing.

Formats, by suffix (case-insensitive): .csv and .tsv (dlcore.csvfile), .parquet
(dlcore.parquetfile), .npz (dlcore.npzfile). There is no fixed size limit: a file is refused
only if loading it would not fit in memory (dlcore.memory), or if it is larger than an
explicit ``max_bytes``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dlcore import memory
from dlcore.arguments import require_int
from dlcore.tables import RawFile

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".npz": "npz"}
FILE_SUFFIXES = tuple(FILE_FORMATS)
# What a reader calls once it knows, from the file's headers, how big the data will be:
# (file name, bytes the reader will hold, number of feature values it yields, what they are).
MemoryCheck = Callable[[str, int, int, str], None]


def read_file(path, max_bytes: int | None = None, out_itemsize: int = 8) -> RawFile:
    """Read a data file of any supported format.

    out_itemsize: bytes per value of the array the features will be turned into (4 for a
    float32 run), for the memory check. Raises ValueError naming the file for anything
    malformed, and before anything large is allocated for a file that would not fit.
    """

    def check_memory(name: str, held_bytes: int, values: int, what: str) -> None:
        advice = "train in float32" if out_itemsize > 4 else ""
        memory.require(name, held_bytes + values * out_itemsize, what, advice)

    return _read(Path(path), max_bytes, check_memory)


def _read(path: Path, max_bytes, check_memory: MemoryCheck) -> RawFile:
    if max_bytes is not None:
        max_bytes = require_int("max_bytes", max_bytes, minimum=1)
    file_format = FILE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise ValueError(
            f"{path.name}: unknown file type {path.suffix or '(no extension)'!r}; "
            f"use a {', '.join(FILE_SUFFIXES[:-1])} or {FILE_SUFFIXES[-1]} file"
        )
    size = _regular_file_size(path)
    if size == 0:
        raise ValueError(f"{path.name}: the file is empty")
    if max_bytes is not None and size > max_bytes:
        raise ValueError(
            f"{path.name}: the file is {memory.format_size(size)}, "
            f"larger than the {memory.format_size(max_bytes)} limit"
        )
    if file_format in ("csv", "tsv"):
        from dlcore.csvfile import read_csv

        return read_csv(path, check_memory)
    if file_format == "parquet":
        from dlcore.parquetfile import read_parquet

        return read_parquet(path, max_bytes, check_memory)
    from dlcore.npzfile import read_npz

    return read_npz(path, max_bytes, check_memory)


def _regular_file_size(path: Path) -> int:
    try:
        status = path.stat()
    except (OSError, ValueError):  # ValueError: a NUL in the name
        raise ValueError(f"{path}: no such file") from None
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(
            f"{path}: not a regular file (a folder, pipe or device); choose a data file"
        )
    return status.st_size


@dataclass(frozen=True)
class DataFile:
    """A data file in a folder. size_bytes: on disk; format: "csv", "tsv", "parquet", "npz"."""

    name: str
    path: Path
    size_bytes: int
    format: str


def list_data_files(folder) -> list[DataFile]:
    """The data files directly in folder, sorted by name; [] if folder is missing or unreadable.

    Only regular files with a supported suffix, whose name can be shown as it is (printable,
    valid UTF-8), and not hidden (a leading "."). Skipped, never raised for: folders, FIFOs,
    devices, sockets, broken symlinks and symlinks that resolve outside folder.
    """
    folder = Path(folder)
    try:
        root = folder.resolve(strict=True)
        entries = list(os.scandir(folder))
    except (OSError, ValueError):
        return []
    found = []
    for entry in entries:
        data_file = _data_file(entry, root)
        if data_file is not None:
            found.append(data_file)
    return sorted(found, key=lambda data_file: data_file.name)


def _data_file(entry: os.DirEntry, root: Path) -> DataFile | None:
    name = entry.name
    file_format = FILE_FORMATS.get(Path(name).suffix.lower())
    if file_format is None or name.startswith(".") or not _showable(name):
        return None
    try:
        if entry.is_symlink() and not Path(entry.path).resolve(strict=True).is_relative_to(root):
            return None
        status = entry.stat()  # follows a symlink
    except (OSError, RuntimeError):  # broken or looping symlinks
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    return DataFile(name=name, path=Path(entry.path), size_bytes=status.st_size,
                    format=file_format)


def _showable(name: str) -> bool:
    try:
        name.encode("utf-8")  # file names that are not UTF-8 arrive as lone surrogates
    except UnicodeEncodeError:
        return False
    return name.isprintable()


def loaded_size(path, dtype: str = "float32") -> int | None:
    """Bytes of memory that loading path into a ``dtype`` Dataset needs at its peak, or None
    if the file cannot be read (prepare_dataset would then say why).

    Cheap: taken from the file's headers (NPZ, Parquet) or a count of its lines (CSV, at disk
    speed); nothing is parsed or allocated.
    """
    import numpy as np

    out_itemsize = np.dtype(dtype).itemsize

    def measure(name: str, held_bytes: int, values: int, what: str) -> None:
        raise _Measured(held_bytes + values * out_itemsize)

    try:
        _read(Path(path), None, measure)
    except _Measured as measured:
        return measured.needed
    except ValueError:
        return None
    return None


class _Measured(Exception):
    """Stops a reader at its memory check: loaded_size has what it wanted."""

    def __init__(self, needed: int):
        super().__init__(needed)
        self.needed = needed
