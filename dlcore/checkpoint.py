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

import json
import os
import re
import zipfile
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


def read(path: Path, expected_format: str, meta_only: bool = False) -> tuple[dict, dict]:
    """Load ``(arrays, meta)`` from a file written by :func:`write_atomic`.

    Raises :class:`CheckpointError` for anything else: not a zip, truncated,
    object arrays, missing or malformed metadata, a format other than
    ``expected_format``, NaN/inf in a float array.
    """
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array
            raise CheckpointError(f"{path.name}: a single array, not a Panda file (.npz archive)")
        with loaded as npz:
            if META_KEY not in npz.files:
                raise CheckpointError(f"{path.name}: no {META_KEY} inside (not a Panda file)")
            meta = _parse_meta(npz[META_KEY], path)
            if meta.get("format") != expected_format:
                raise CheckpointError(
                    f"{path.name}: format {meta.get('format')!r}, expected {expected_format!r}"
                )
            arrays = {}
            if not meta_only:
                for key in npz.files:
                    if key != META_KEY:
                        arrays[key] = _check_array(npz[key], key, path)
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


def _check_array(value: np.ndarray, key: str, path: Path) -> np.ndarray:
    if not isinstance(value, np.ndarray):  # numpy returns a non-.npy zip member as bytes
        raise CheckpointError(f"{path.name}: {key!r} is not an array in .npy format")
    if value.dtype.kind not in "biuf":
        raise CheckpointError(f"{path.name}: array {key!r} has dtype {value.dtype}, not numeric")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        raise CheckpointError(f"{path.name}: array {key!r} holds NaN or inf")
    return value


def clean_temporaries(folder: Path) -> list[Path]:
    """Remove temp files a crash left behind; they are never checkpoints."""
    removed = []
    for path in Path(folder).rglob(f".*{TEMP_MARK}*"):
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed
