"""The one Trainer of this server, shared by every page and every browser tab.

``st.cache_resource`` keeps a :class:`RunHolder` per checkpoint folder; "New run" swaps
the Trainer inside it, so every tab sees the new run on its next rerun. Clearing the
cache (or the server shutting down the entry) stops the Trainer's thread.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import streamlit as st
from threadpoolctl import threadpool_limits

from dlcore.trainer import RunConfig, Trainer, list_runs

# One BLAS thread for the whole dashboard process. With two, OpenBLAS's threads wait on
# each other whenever the server does Python work on the other core (building a live
# refresh once a second), and a watched MNIST-like run fell from ≈350 to ≈65 steps/s;
# with one it keeps ≈150–240 while watched (bench/dashboard.py, bench/RESULTS.md).
# A babysat run is a watched run, so the dashboard trades the unwatched peak for that.
threadpool_limits(limits=1, user_api="blas")

APP_DIR = Path(__file__).resolve().parents[2]

#: The run a fresh machine starts with: 5,000 real MNIST digits, 784 → 128 → 64 → 10, ReLU,
#: BatchNorm, Adam, α = 1e-3, float32, and a periodic checkpoint every 1,000 steps (at most
#: one per 30 s), so a crash loses little. Why MNIST and not digits: README, "First start".
DEFAULT_RUN = {"dataset": "mnist", "hidden": (128, 64), "dtype": "float32",
               "checkpoint_every": 1000}


def checkpoint_dir() -> str:
    """Where runs live: ``$PANDA_CHECKPOINT_DIR``, else ``checkpoints/`` next to app.py."""
    return os.environ.get("PANDA_CHECKPOINT_DIR") or str(APP_DIR / "checkpoints")


def data_dir() -> str:
    """Where data files are picked from: ``$PANDA_DATA_DIR``, else ``data/`` next to app.py
    (big files go there instead of through the browser)."""
    return os.environ.get("PANDA_DATA_DIR") or str(APP_DIR / "data")


class RunHolder:
    """The current Trainer, replaced as a whole (under a lock) by a new or reopened run."""

    def __init__(self, folder: str):
        self.checkpoint_dir = folder
        self.lock = threading.Lock()
        #: Why the newest run on disk could not be reopened, if it could not.
        self.notice: str | None = None
        self.trainer = self._open_newest_or_create()

    def _open_newest_or_create(self) -> Trainer:
        # 1) the newest run that opens; a folder left half-made by a crash is skipped
        skipped = []
        for run_id in reversed(list_runs(self.checkpoint_dir)):
            try:
                trainer = Trainer.open(self.checkpoint_dir, run_id)
            except (ValueError, OSError) as error:
                skipped.append(f"{run_id} ({error})")
                continue
            if skipped:
                self.notice = "Skipped runs that could not be reopened: " + "; ".join(skipped)
            return trainer
        # 2) none: a default run, paused at step 0
        if skipped:
            self.notice = ("No saved run could be reopened, so a new one was started. "
                           "Skipped: " + "; ".join(skipped))
        return Trainer(RunConfig(**DEFAULT_RUN), self.checkpoint_dir)

    def new_run(self, config: RunConfig, start_from: tuple[dict, dict] | None = None,
                note: str = "") -> Trainer:
        """Create a run (from ``start_from``'s state if given, ``note`` on its initial
        checkpoint) and make it the current one; ValueError leaves the current run as it
        was."""
        return self._replace(lambda: Trainer(config, self.checkpoint_dir,
                                             start_from=start_from, note=note))

    def open_run(self, run_id: str) -> Trainer:
        """Reopen a saved run and make it the current one."""
        return self._replace(lambda: Trainer.open(self.checkpoint_dir, run_id))

    def _replace(self, make) -> Trainer:
        with self.lock:
            new = make()  # raises before anything is swapped
            old, self.trainer = self.trainer, new
            self.notice = None
        old.stop()
        return new

    def stop(self) -> None:
        with self.lock:
            self.trainer.stop()


@st.cache_resource(show_spinner="Opening the newest run…", on_release=RunHolder.stop)
def run_holder(folder: str) -> RunHolder:
    return RunHolder(folder)


def holder() -> RunHolder:
    return run_holder(checkpoint_dir())


def current_trainer() -> Trainer:
    return holder().trainer
