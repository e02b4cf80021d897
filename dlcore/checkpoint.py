"""The on-disk format: ``.npz`` files of named arrays with JSON metadata inside.

A file holds plain numeric arrays plus one ``meta.json`` member (the UTF-8
bytes of a JSON object as a uint8 array), so one file is one atomic unit.

- Written to a temporary name in the same folder, flushed and fsynced, then
  ``os.replace``d: a crash mid-write never leaves a half file under a real
  name, and a watcher sees the finished file appear in one rename.
- Read with ``allow_pickle=False``: an object array or pickled payload is
  refused, never executed. Every problem surfaces as :class:`CheckpointError`
  with a reason a person can act on.

Checkpoint arrays are namespaced like the model's dicts: ``params/fc1.W``,
``buffers/bn1.running_mean``, ``optim/fc1.W/v``, ``data/permutation``.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
import zipfile
from collections.abc import Container, Mapping
from pathlib import Path

import numpy as np

META_KEY = "meta.json"
TEMP_MARK = ".tmp-"
# \Z, not $: "$" also matches before a trailing newline.
# [0-9], not \d: \d takes the digits of every script.
CHECKPOINT_ID = re.compile(r"^ckpt-[0-9]{6,9}\Z")  # 6 digits, more after a million
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")


class CheckpointError(ValueError):
    """A file that can't be used as a checkpoint; the message says why."""


def json_safe(value):
    """Numbers and containers as plain JSON types (numpy scalars become Python)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def whole(what: str, value) -> int:
    """A counter read from metadata: an int in [0, 2^53), JSON's exact integers."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise CheckpointError(f"{what} is {value!r:.40}, not a whole number ≥ 0")
    return value


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and TEMP_MARK in path.name


def write_atomic(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write ``arrays`` and ``meta`` to ``path`` so it appears whole or not at all."""
    path = Path(path)
    payload = dict(arrays)
    payload[META_KEY] = np.frombuffer(json.dumps(meta, allow_nan=False).encode(), np.uint8)
    temp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        # A file object, not a name: np.savez would append ".npz" to a name.
        with open(temp, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read(path: Path, expected_format: str, meta_only: bool = False,
         nan_ok: Container[str] = ()) -> tuple[dict, dict]:
    """Load ``(arrays, meta)`` from a file written by :func:`write_atomic`.

    Raises :class:`CheckpointError` for anything else: not a regular file (a FIFO, a
    folder, a symbolic link: never opened for reading), not a zip, truncated, a member
    whose header claims more data than it holds, object arrays, missing or malformed
    metadata, a format other than ``expected_format``, NaN/inf in a float array (NaN is
    allowed in the arrays named in ``nan_ok``: a journal's "not recorded").
    """
    path = Path(path)
    try:
        with open_regular(path) as file:
            loaded = np.load(file, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
                raise CheckpointError(
                    f"{path.name}: a single array, not a Panda file (.npz archive)")
            with loaded as npz:
                if META_KEY not in npz.files:
                    raise CheckpointError(f"{path.name}: no {META_KEY} inside (not a Panda file)")
                _check_member_sizes(npz.zip, path)
                meta = _parse_meta(npz[META_KEY], path)
                if meta.get("format") != expected_format:
                    raise CheckpointError(
                        f"{path.name}: format {meta.get('format')!r}, expected {expected_format!r}"
                    )
                arrays = {}
                if not meta_only:
                    for key in npz.files:
                        if key != META_KEY:
                            arrays[key] = _check_array(npz[key], key, path,
                                                       key in nan_ok)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"{path.name}: file not found") from None
    except MemoryError:
        raise CheckpointError(
            f"{path.name}: an array header claims more memory than there is"
        ) from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError) as error:
        # allow_pickle=False makes numpy raise ValueError on object arrays.
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if "pickle" in reason.lower() or "object" in reason.lower():
            reason = "contains an object array / pickled data, which is never loaded"
        raise CheckpointError(f"{path.name}: unreadable ({reason})") from None
    return arrays, meta


def open_regular(path: Path):
    """``path`` opened for binary reading if it is a regular file, never through a link.

    O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
    Raises CheckpointError for a link, a FIFO, a folder or a device.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CheckpointError(f"{Path(path).name}: a symbolic link, never followed") from None
        raise
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise CheckpointError(f"{path.name}: not a regular file, never read")
    return os.fdopen(fd, "rb")


def _check_member_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Each .npy member's header must not claim more data than the member holds."""
    for member in archive.infolist():
        with archive.open(member) as file:
            try:
                major, _ = np.lib.format.read_magic(file)
                read_header = (np.lib.format.read_array_header_1_0 if major == 1
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(file)
            except (ValueError, OSError, EOFError):
                continue  # not .npy: refused as such when it is loaded
        claimed = math.prod(shape) * dtype.itemsize
        if claimed > member.file_size:
            raise CheckpointError(
                f"{path.name}: member {member.filename!r} claims {claimed} bytes "
                f"of data but holds {member.file_size}"
            )


def _parse_meta(raw: np.ndarray, path: Path) -> dict:
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8 or raw.ndim != 1:
        raise CheckpointError(f"{path.name}: {META_KEY} is not JSON bytes")
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path.name}: {META_KEY} is not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path.name}: {META_KEY} is not a JSON object")
    return meta


def _check_array(value: np.ndarray, key: str, path: Path, nan_ok: bool) -> np.ndarray:
    if not isinstance(value, np.ndarray):  # numpy returns a non-.npy zip member as bytes
        raise CheckpointError(f"{path.name}: {key!r} is not an array in .npy format")
    if value.dtype.kind not in "biuf":
        raise CheckpointError(f"{path.name}: array {key!r} has dtype {value.dtype}, not numeric")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        if not nan_ok or np.any(np.isinf(value)):
            raise CheckpointError(f"{path.name}: array {key!r} holds NaN or inf")
    return value
