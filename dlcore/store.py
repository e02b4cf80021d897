"""A run's folder on disk: its layout, ids, atomic writes and safe reads.

::

    <checkpoint_dir>/<run_id>/run.json            the RunConfig, written last at creation
    <checkpoint_dir>/<run_id>/dataset.<suffix>    a copy of a user's data file, if any
    <checkpoint_dir>/<run_id>/ckpt-000012.npz     complete state + JSON metadata
    <checkpoint_dir>/<run_id>/journal/000012.npz  history rows and events since the last one

A checkpoint and its journal chunk share a sequence number and are written as a pair,
journal first (:class:`CheckpointJob`), each to a temporary name, fsynced and renamed.
Nothing is read, written or deleted outside the run's own folder: files are opened
without following symbolic links, only regular files are read (a FIFO would block a
reader forever), and a ``journal/`` that is a link refuses the run.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import stat
import threading
import time
from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dlcore import checkpoint as ckptio
from dlcore.checkpoint import CheckpointError, whole
from dlcore.data import BUILTIN_DATASETS, FILE_SUFFIXES, prepare_dataset
from dlcore.history import EVAL_COLUMNS

CHECKPOINT_FORMAT = "panda-checkpoint-v1"
CHECKPOINT_KINDS = ("initial", "manual", "periodic", "pre-change", "rollback", "final")
MAX_NOTE_LENGTH = 500


class RunStore:
    """The folder of one run. ``RunStore.create`` makes a new one; ``RunStore(dir, id)``
    is an existing one (checked by :meth:`check_layout`)."""

    def __init__(self, checkpoint_dir, run_id: str):
        if not isinstance(run_id, str) or not ckptio.RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} may only hold letters, digits, '_', '.', '-'")
        self.run_id = run_id
        self.dir = Path(checkpoint_dir) / run_id
        self.journal_dir = self.dir / "journal"
        self._seq = 0
        self._seq_lock = threading.Lock()

    @classmethod
    def create(cls, checkpoint_dir, run_id: str | None = None) -> RunStore:
        """A new, empty run folder (with its journal folder); FileExistsError if taken."""
        store = cls(checkpoint_dir, run_id or _new_run_id(Path(checkpoint_dir)))
        store.dir.mkdir(parents=True, exist_ok=False)
        store.journal_dir.mkdir()
        return store

    def remove(self) -> None:
        """Delete a run folder whose creation failed."""
        shutil.rmtree(self.dir, ignore_errors=True)

    def check_layout(self) -> None:
        """Refuse a folder whose journal/ is not a real folder inside it (a link would make
        every write and clean-up happen elsewhere)."""
        try:
            mode = os.lstat(self.journal_dir).st_mode
        except FileNotFoundError:
            self.journal_dir.mkdir()
            return
        if not stat.S_ISDIR(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
            raise ValueError(f"run {self.run_id!r}: journal/ is {what}; Panda reads and writes "
                             "nothing outside a run's folder, so it does not open this run")

    # -- the config and the data ------------------------------------------------------

    def write_config(self, config) -> None:
        write_json_atomic(self.dir / "run.json", {"config": config.to_dict()})

    def read_config(self) -> dict:
        """run.json's config as a dict; ValueError if it is missing or unreadable."""
        try:
            with ckptio.open_regular(self.dir / "run.json") as file:
                return json.loads(file.read(1 << 20).decode())["config"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"run {self.run_id!r} has no readable run.json: {error}") from None

    def write_settings(self, settings: dict) -> None:
        """The run settings that outlive a restart (the retention policy), atomically."""
        write_json_atomic(self.dir / "settings.json", settings)

    def read_settings(self) -> dict:
        """settings.json, or {} if there is none or it is unreadable (defaults apply)."""
        try:
            with ckptio.open_regular(self.dir / "settings.json") as file:
                settings = json.loads(file.read(1 << 16).decode())
        except (OSError, ValueError):
            return {}
        return settings if isinstance(settings, dict) else {}

    def adopt_dataset(self, config):
        """``(config, data)`` of a new run: its data set prepared once (a bad file is
        refused before anything is copied), and a user's file copied into the run folder
        (or, with ``copy_data=False``, fingerprinted where it is); the config names it."""
        if config.dataset in BUILTIN_DATASETS:
            return config, prepare(config.dataset, config)
        source = Path(config.dataset)
        suffix = source.suffix.lower()
        if suffix not in FILE_SUFFIXES:
            raise ValueError(f"data file must be one of {', '.join(FILE_SUFFIXES)}, "
                             f"got {source.name!r}")
        if not source.is_file():
            raise ValueError(f"data file {str(source)!r} does not exist")
        data = prepare(str(source), config)
        fields = {"dataset_name": config.dataset_name or source.name}
        if config.copy_data:
            target = self.dir / f"dataset{suffix}"
            shutil.copyfile(source, target)
            fields["dataset"] = target.name
        else:
            fields["dataset"] = str(source.resolve())
            fields["dataset_fingerprint"] = fingerprint(source)
        return type(config).from_dict({**config.to_dict(), **fields}), data

    def dataset_source(self, config) -> str:
        """What prepare_dataset reads: a built-in name, the run's own copy of a file, or a
        file read where it is (refused if it is not the one the run was made from)."""
        if config.dataset in BUILTIN_DATASETS:
            return config.dataset
        if not config.copy_data:
            path = Path(config.dataset)
            if not path.is_file() or fingerprint(path) != config.dataset_fingerprint:
                raise ValueError(
                    f"run {self.run_id!r} trains on {str(path)!r}, which is gone or has "
                    "changed since the run was created; put the original file back, or "
                    "start a new run on the new one")
            return str(path)
        path = self.dir / Path(config.dataset).name
        if path.is_symlink():
            raise ValueError(f"run {self.run_id!r}: its data file {path.name} is a symbolic "
                             "link; Panda reads nothing outside a run's folder")
        return str(path)

    # -- checkpoints and journal chunks -----------------------------------------------

    def start_seq_after(self, seq: int) -> None:
        self._seq = seq + 1

    def take_seq(self) -> int:
        """The next sequence number: a checkpoint and its journal chunk share it."""
        with self._seq_lock:
            seq, self._seq = self._seq, self._seq + 1
        return seq

    def checkpoint_path(self, checkpoint_id) -> Path:
        """The file of an existing checkpoint; ValueError for a bad or unknown id."""
        if not isinstance(checkpoint_id, str) or not ckptio.CHECKPOINT_ID.match(checkpoint_id):
            raise ValueError(f"{checkpoint_id!r} is not a checkpoint id (ckpt-NNNNNN)")
        path = self.dir / f"{checkpoint_id}.npz"
        if not _is_regular(path):
            raise ValueError(f"no checkpoint {checkpoint_id} in run {self.run_id}")
        return path

    def checkpoint_files(self) -> list[Path]:
        """Every ``ckpt-*.npz`` entry, sorted; reading says which are not checkpoints."""
        return sorted(self.dir.glob("ckpt-*.npz"))

    def journal_files(self) -> list[Path]:
        return sorted(self.journal_dir.glob("*.npz"))

    def highest_seq(self) -> int:
        """The highest sequence number used by any file name here (-1 if none)."""
        numbers = [-1]
        for path in [*self.dir.glob("ckpt-*"), *self.journal_dir.glob("*")]:
            digits = path.name.split(".")[0].removeprefix("ckpt-")
            if digits.isascii() and digits.isdigit():  # not '²': int() refuses it
                numbers.append(int(digits))
        return max(numbers)

    def read_checkpoint(self, path: Path, meta_only: bool = False) -> tuple[dict, dict]:
        """A checkpoint file, its metadata's own fields checked (not yet against the run:
        see ``TrainingState.from_checkpoint``). CheckpointError naming the file.
        ``meta_only``: no arrays read (they come back empty)."""
        if not ckptio.CHECKPOINT_ID.match(path.stem):
            raise CheckpointError(f"{path.name}: not a checkpoint name (ckpt-NNNNNN.npz)")
        arrays, meta = ckptio.read(path, CHECKPOINT_FORMAT, meta_only=meta_only)
        try:
            check_info(meta["info"], path.stem)
        except CheckpointError as error:
            raise CheckpointError(f"{path.name}: {error}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path.name}: incompatible or incomplete ({error})") from None
        return arrays, meta

    def read_journal(self, path: Path, expected_format: str,
                     nan_ok: Container[str] = ()) -> tuple[dict, dict]:
        """A journal file's ``(arrays, meta)``; NaN is allowed in the arrays ``nan_ok``
        names (see :meth:`dlcore.history.Schemas.journal_nan_keys`)."""
        return ckptio.read(path, expected_format, nan_ok=nan_ok)

    def drop_journals_after(self, seq: int) -> None:
        """Remove journal chunks newer than the checkpoint a run resumes from.

        A crash between a chunk and its checkpoint leaves rows and events the run is about
        to redo; kept, they would resurface as phantom events once a later checkpoint
        exists.
        """
        for path in self.journal_files():
            if path.stem.isascii() and path.stem.isdigit() and int(path.stem) > seq:
                path.unlink(missing_ok=True)

    def delete(self, path: Path, missing_ok: bool = False) -> None:
        path.unlink(missing_ok=missing_ok)

    def clean_temporaries(self) -> None:
        """Remove the temporary files a crash left behind; they are never checkpoints."""
        for folder in (self.dir, self.journal_dir):
            for path in folder.glob(f".*{ckptio.TEMP_MARK}*"):
                try:
                    path.unlink()  # a link is removed itself, never its target
                except OSError:
                    pass

    def write_journal(self, seq: int, arrays: dict, meta: dict) -> None:
        """A journal chunk on its own (the history of a branch whose state can't be saved)."""
        ckptio.write_atomic(self.journal_dir / f"{seq:06d}.npz", arrays, meta)

    def job(self, seq: int, arrays: dict, meta: dict, journal: tuple[dict, dict]):
        """The two files of checkpoint ``seq``, to be written by :meth:`CheckpointJob.run`."""
        return CheckpointJob(self.dir / f"ckpt-{seq:06d}.npz", arrays, meta,
                             self.journal_dir / f"{seq:06d}.npz", *journal)


@dataclass
class CheckpointJob:
    """One checkpoint's files on their way to disk: its journal chunk, then itself.

    Prepared from copies, so :meth:`run` only does file I/O and may run in another
    thread; ``done`` is set when it has finished, ``error`` holds what failed.
    """

    path: Path
    arrays: dict
    meta: dict
    journal_path: Path
    journal_arrays: dict
    journal_meta: dict
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    @property
    def info(self) -> dict:
        return self.meta["info"]

    def run(self) -> None:
        try:
            ckptio.write_atomic(self.journal_path, self.journal_arrays, self.journal_meta)
            ckptio.write_atomic(self.path, self.arrays, self.meta)
        except BaseException as error:
            # A failed write (disk full, I/O error) takes its journal chunk back too: the
            # chunk announces a checkpoint that doesn't exist.
            try:
                self.journal_path.unlink(missing_ok=True)
            except OSError:
                pass
            self.error = error
        finally:
            self.done.set()


# ---------------------------------------------------------------------------
# Checks of a checkpoint's own metadata
# ---------------------------------------------------------------------------


def check_info(info, checkpoint_id: str) -> None:
    """Every field of a checkpoint's ``info``: type, range, and its id and seq agreeing
    with the file's name. Raises CheckpointError (without the file name)."""
    if not isinstance(info, Mapping):
        raise CheckpointError("its info is not a mapping")
    if info["id"] != checkpoint_id:
        raise CheckpointError(f"names itself {info['id']!r}")
    if whole("info 'seq'", info["seq"]) != int(checkpoint_id.removeprefix("ckpt-")):
        raise CheckpointError(f"info 'seq' {info['seq']} is not its number")
    for key in ("step", "branch", "epoch"):
        whole(f"info {key!r}", info[key])
    if info["kind"] not in CHECKPOINT_KINDS:
        raise CheckpointError(f"kind {info['kind']!r:.40} is not one of {CHECKPOINT_KINDS}")
    note = info["note"]
    if not isinstance(note, str) or len(note) > MAX_NOTE_LENGTH or clean_note(note) != note:
        raise CheckpointError(f"its note is not printable text of ≤ {MAX_NOTE_LENGTH} "
                              "characters")
    parent = info["parent"]
    if parent is not None and not (isinstance(parent, str) and ckptio.CHECKPOINT_ID.match(parent)):
        raise CheckpointError(f"parent {parent!r:.40} is not a checkpoint id")
    for key in ("alpha", "time"):
        if not _finite(info[key]) or info[key] < 0:
            raise CheckpointError(f"info {key!r} is {info[key]!r:.40}, not a number ≥ 0")
    metrics = info["metrics"]
    if not isinstance(metrics, Mapping) or not all(
            isinstance(key, str) and (key in EVAL_COLUMNS or key.startswith("sparsity/"))
            and _finite(value) for key, value in metrics.items()):
        raise CheckpointError(f"metrics {metrics!r:.80} are not evaluation numbers")
    if "event_count" in info:
        whole("info 'event_count'", info["event_count"])


def _finite(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def clean_note(note) -> str:
    """A note as kept: printable characters only, at most MAX_NOTE_LENGTH of them."""
    if not isinstance(note, str):
        raise ValueError(f"a note must be text, got {type(note).__name__}")
    note = "".join(ch for ch in note if ch.isprintable() or ch == " ")
    if len(note) > MAX_NOTE_LENGTH:
        raise ValueError(f"a note may hold at most {MAX_NOTE_LENGTH} characters, got {len(note)}")
    return note


# ---------------------------------------------------------------------------
# Folders of runs
# ---------------------------------------------------------------------------


def prepare(source: str, config):
    """The run's data set from ``source`` as its config says to split and hold it."""
    return prepare_dataset(source, seed=config.seed, dev_fraction=config.dev_fraction,
                           dtype=config.dtype, **config.dataset_params)


def fingerprint(path: Path) -> dict:
    """A data file's size and the SHA-256 of its first and last MiB: cheap for a 1 GB
    file, and a changed or replaced file shows."""
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        digest.update(file.read(1 << 20))
        if size > 2 << 20:
            file.seek(-(1 << 20), os.SEEK_END)
            digest.update(file.read(1 << 20))
    return {"size": size, "sha256_ends": digest.hexdigest()}


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return False
        raise


def write_json_atomic(path: Path, obj) -> None:
    temp = path.with_name(f".{path.name}{ckptio.TEMP_MARK}{os.getpid()}")
    try:
        with open(temp, "w") as f:
            json.dump(obj, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def _new_run_id(checkpoint_dir: Path) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id, n = f"run-{stamp}", 1
    while (checkpoint_dir / run_id).exists():
        n += 1
        run_id = f"run-{stamp}-{n}"
    return run_id


def list_runs(checkpoint_dir) -> list[str]:
    """Run ids in ``checkpoint_dir``, oldest first (by the time run.json was written)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return []
    runs = [p for p in folder.iterdir()
            if p.is_dir() and ckptio.RUN_ID.match(p.name) and _is_regular(p / "run.json")]
    return [p.name for p in sorted(runs, key=lambda p: ((p / "run.json").stat().st_mtime,
                                                        p.name))]
