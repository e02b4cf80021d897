"""The run's checkpoints as they are on disk, followed live by a watchdog observer.

The Trainer's snapshot lists the checkpoints it wrote itself; another process may add
or remove files too. A checkpoint appears on disk in one atomic rename from a hidden
temporary name (``.ckpt-000007.npz.tmp-<pid>``), so the observer reacts to created,
moved and deleted ``*.npz`` names that don't start with "." and never sees a
half-written file. Only the metadata is read (``meta_only``), once per file version.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import streamlit as st
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from dlcore import checkpoint as ckptio
from dlcore.trainer import CHECKPOINT_FORMAT, Snapshot

#: Even with the observer running, rescan at least this often (a missed event heals).
RESCAN_SECONDS = 10.0
#: What the pages read from a checkpoint's metadata.
REQUIRED_INFO = {"id", "step", "branch", "kind", "hparams"}


def _is_checkpoint_name(path: str) -> bool:
    name = Path(path).name
    return name.endswith(".npz") and not name.startswith(".")


class _Handler(FileSystemEventHandler):
    def __init__(self, folder: CheckpointFolder):
        self.folder = folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in ("created", "moved", "deleted"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "") or ""]
        if any(_is_checkpoint_name(str(p)) for p in paths if p):
            self.folder.bump()


class CheckpointFolder:
    """One run folder: its checkpoint list (metadata only) and unreadable files."""

    def __init__(self, folder: str):
        self.folder = Path(folder)
        self.version = 0
        self.watch_error: str | None = None
        self._lock = threading.Lock()
        self._meta: dict[str, tuple] = {}  # name -> ((mtime_ns, size), info or None, reason)
        self._listing: tuple[list, list] | None = None
        self._listed = (-1, 0.0)  # (version, time) of the listing
        self._observer = Observer()
        try:
            self._observer.schedule(_Handler(self), str(self.folder), recursive=False)
            self._observer.daemon = True
            self._observer.start()
        except OSError as error:  # e.g. out of inotify watches: fall back to rescanning
            self.watch_error = str(error)
            self._observer = None

    def bump(self) -> None:
        with self._lock:
            self.version += 1

    @property
    def watching(self) -> bool:
        return self._observer is not None and self._observer.is_alive()

    def listing(self) -> tuple[list[dict], list[dict]]:
        """(checkpoint infos sorted by id, damaged files as {"file", "reason"})."""
        with self._lock:
            version = self.version
            fresh = (self._listing is not None and self._listed[0] == version and self.watching
                     and time.monotonic() - self._listed[1] < RESCAN_SECONDS)
            if fresh:
                return self._listing
            infos, damaged = [], []
            for path in sorted(self.folder.glob("ckpt-*.npz")):
                entry = self._read(path)
                if entry is None:
                    continue
                info, reason = entry
                if info is not None:
                    infos.append(info)
                else:
                    damaged.append({"file": path.name, "reason": reason})
            self._listing = (infos, damaged)
            self._listed = (version, time.monotonic())
            return self._listing

    def _read(self, path: Path):
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        signature = (stat.st_mtime_ns, stat.st_size)
        cached = self._meta.get(path.name)
        if cached and cached[0] == signature:
            return cached[1], cached[2]
        info, reason = None, ""
        try:
            _, meta = ckptio.read(path, CHECKPOINT_FORMAT, meta_only=True)
            info = meta.get("info")
            if not isinstance(info, dict) or info.get("id") != path.stem:
                info, reason = None, f"{path.name}: its metadata doesn't name it {path.stem}"
            elif missing := sorted(REQUIRED_INFO - info.keys()):
                info, reason = None, f"{path.name}: its metadata lacks {', '.join(missing)}"
        except ckptio.CheckpointError as error:
            if not path.exists():  # removed while we looked
                return None
            reason = str(error)
        self._meta[path.name] = (signature, info, reason)
        return info, reason

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)


@st.cache_resource(show_spinner=False, on_release=CheckpointFolder.stop, max_entries=8)
def checkpoint_folder(folder: str) -> CheckpointFolder:
    return CheckpointFolder(folder)


def checkpoints_on_disk(snapshot: Snapshot) -> tuple[list[dict], list[dict]]:
    """The run's checkpoints as on disk, merged with the snapshot's by id; damaged files.

    A checkpoint the Trainer wrote but that is gone from disk is left out; one written
    by another process is listed from its own metadata.
    """
    infos, damaged_on_disk = checkpoint_folder(snapshot.checkpoint_dir).listing()
    known = {c["id"]: c for c in snapshot.checkpoints}
    rows = [known.get(info["id"], info) for info in infos]
    damaged = {d["file"]: d for d in snapshot.damaged}
    damaged.update({d["file"]: d for d in damaged_on_disk})
    return rows, sorted(damaged.values(), key=lambda d: d["file"])
