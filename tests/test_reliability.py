"""Reliability: kill -9 the training process at random moments and at exact points of a write.

The other ``test_reliability_*.py`` files cover failing disks, damaged checkpoint files,
hostile names and data files, and property-based hyperparameter updates; they share the
helpers defined here. Every test prints one ``RELIABILITY <section>: ...`` line with its
figures (visible with ``pytest -s``); docs/RELIABILITY.md quotes them.

The crash tests run tests/crash_worker.py in a subprocess: it reopens the run with
``Trainer.open`` (or creates it), reports what came back, trains on with random commands
(α changes, manual checkpoints, rollbacks), and is killed with SIGKILL. After every kill
this process reads every file on disk and checks the next restart against them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dlcore import checkpoint as ckptio
from dlcore.branches import JOURNAL_FORMAT
from dlcore.history import Schemas
from dlcore.network import Architecture
from dlcore.trainer import CHECKPOINT_FORMAT, RunConfig, Trainer, list_runs

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("crash_worker.py")
SMALL = dict(dataset="blobs", hidden=(16,), eval_every=5, eval_share=1.0)
#: A retention policy that writes and keeps every periodic checkpoint that is due, and no
#: others: for tests that count on a checkpoint every ``checkpoint_every`` steps.
EVERY_PERIODIC = {"keep_last": None, "min_seconds": 0, "save_best": False}
N_RANDOM_KILLS = 20
# Exact points of a checkpoint write where a random kill rarely lands (see crash_worker.py).
KILL_POINTS = (
    "after-journal:periodic",
    "after-journal:pre-change",
    "after-journal:rollback",
    "after-journal:manual",
    "mid-temp:periodic",
    "before-replace:rollback",
    "after-replace:pre-change",
    "journal-mid-temp",
)


# -- helpers shared by every reliability test ------------------------------------------------


def report(section: str, **figures) -> None:
    """One summary line per test; docs/RELIABILITY.md quotes these (run with -s)."""
    print(f"\nRELIABILITY {section}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


def drain(trainer: Trainer) -> None:
    """Return once the worker has executed every command queued before this call.

    Commands run in order, and export_state() is one that changes nothing.
    """
    trainer.export_state()


def wait_until_idle(trainer: Trainer, timeout: float = 60.0):
    """Wait until every queued command ran and the worker is not training."""
    drain(trainer)
    deadline = time.monotonic() + timeout
    while (snap := trainer.snapshot()).status == "running":
        if time.monotonic() > deadline:
            raise TimeoutError(f"still running after {timeout}s")
        time.sleep(0.002)
    return snap


def run_steps(trainer: Trainer, n: int):
    """Train n steps (fewer if the run diverges or fails); the snapshot after."""
    trainer.step(n)
    return wait_until_idle(trainer)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Payload:
    """Unpickling this creates ``marker``: proof that a pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def npz_bytes(members: dict | None = None, /, **arrays) -> bytes:
    """A zip of .npy members, as np.savez writes it (object arrays pickled)."""
    buffer = io.BytesIO()
    np.savez(buffer, **(members or {}), **arrays)
    return buffer.getvalue()


def folder_state(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder``: relative path -> content digest ('dir')."""
    state = {}
    for path in sorted(Path(folder).rglob("*")):
        state[str(path.relative_to(folder))] = "dir" if path.is_dir() else digest(path)
    return state


# -- the crash worker ------------------------------------------------------------------------


class Worker:
    """tests/crash_worker.py in a subprocess, its stdout read line by line."""

    def __init__(self, checkpoint_dir: Path, seed: int, kill_at: str | None = None):
        self.stderr_path = checkpoint_dir.parent / f"worker-{seed}.stderr"
        command = [sys.executable, str(WORKER), str(checkpoint_dir), str(seed)]
        with open(self.stderr_path, "w") as stderr:
            self.process = subprocess.Popen(command + ([kill_at] if kill_at else []), cwd=ROOT,
                                            stdout=subprocess.PIPE, stderr=stderr, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float = 60.0) -> str:
        """The rest of the next stdout line starting with ``prefix``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                pytest.fail(f"no {prefix!r} line from the worker in {timeout}s")
            if line is None:
                self.process.wait()
                pytest.fail(f"worker exited ({self.process.returncode}) before {prefix!r}:\n"
                            f"{self.stderr_path.read_text()}")
            if line.startswith(prefix + " "):
                return line[len(prefix) + 1:]

    def printed(self, prefix: str) -> str | None:
        """After the worker died: the rest of its line starting with ``prefix``, if any."""
        self.reader.join(timeout=10)
        while not self.lines.empty():
            line = self.lines.get()
            if line is not None and line.startswith(prefix + " "):
                return line[len(prefix) + 1:]
        return None

    def kill(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"the worker had already exited ({self.process.returncode}):\n"
                        f"{self.stderr_path.read_text()}")
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def wait_for_self_kill(self, timeout: float = 60.0) -> None:
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the worker never reached its kill point in {timeout}s")
        self.reader.join(timeout=10)
        assert returncode == -signal.SIGKILL, (
            f"worker exited with {returncode}, not by SIGKILL:\n{self.stderr_path.read_text()}")


class Ledger:
    """What is on disk after each kill, and every checkpoint ever seen there (never lost)."""

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir
        self.seen: dict[str, str] = {}  # checkpoint id -> digest of its file
        self.temporaries_left = 0
        self.lost: set[str] = set()

    def run_dir(self) -> Path:
        runs = list_runs(self.checkpoint_dir)
        assert len(runs) == 1, runs
        return self.checkpoint_dir / runs[0]

    def check_disk(self) -> dict:
        """Every file under a real name loads; returns the newest checkpoint's info."""
        run_dir = self.run_dir()
        files = sorted(run_dir.glob("ckpt-*.npz"))
        infos = {}
        for path in files:
            assert ckptio.CHECKPOINT_ID.match(path.stem), path.name
            _, meta = ckptio.read(path, CHECKPOINT_FORMAT)  # raises if damaged
            infos[path.stem] = meta["info"]
            file_digest = digest(path)
            assert self.seen.setdefault(path.stem, file_digest) == file_digest, (
                f"{path.name} changed after it was written")
        # journals keep NaN where a column was not recorded (see Schemas.journal_nan_keys)
        schemas = Schemas.of_architecture(Architecture.from_dict(meta["architecture"]))
        for path in sorted((run_dir / "journal").glob("*.npz")):
            ckptio.read(path, JOURNAL_FORMAT, nan_ok=schemas.journal_nan_keys)
        self.lost |= {cid for cid in self.seen if cid not in infos}
        assert not self.lost, f"checkpoints lost: {sorted(self.lost)}"
        temporaries = [p.name for p in run_dir.rglob("*") if ckptio.is_temporary(p)]
        self.temporaries_left += len(temporaries)
        newest = infos[files[-1].stem]
        return {"infos": infos, "newest": newest, "temporaries": temporaries}

    def check_restart(self, opened: dict, disk: dict) -> None:
        """The reopened run (as the worker reported it) against the files on disk."""
        infos, newest = disk["infos"], disk["newest"]
        # 1) every checkpoint loads, none is damaged, no temporary is taken for one
        assert opened["damaged"] == [], opened["damaged"]
        assert opened["temporaries"] == [], "leftover temporaries were not cleaned on open"
        assert sorted(c["id"] for c in opened["checkpoints"]) == sorted(infos)
        # 2) restored at the newest checkpoint
        assert opened["last_good"] == newest["id"]
        assert (opened["step"], opened["branch"]) == (newest["step"], newest["branch"])
        assert opened["status"] == "paused"
        # 3) history back up to it: steps 1..N, N = the restored step
        assert opened["history_steps"] == list(range(1, newest["step"] + 1))
        # 4) every branch back up to its newest checkpoint; no branch without one
        newest_step = {}
        for info in infos.values():
            newest_step[info["branch"]] = max(newest_step.get(info["branch"], -1), info["step"])
        assert sorted(opened["branches"], key=int) == sorted(map(str, newest_step), key=int)
        referenced = set()
        for number, branch in opened["branches"].items():
            assert branch["contiguous"], f"branch {number}: steps are not 1..n"
            assert branch["n_steps"] == newest_step[int(number)], f"branch {number}"
            for event in branch["events"]:
                if event["kind"] in ("checkpoint", "rollback"):
                    assert event["checkpoint"] in infos, f"event for a missing checkpoint: {event}"
                if event["kind"] == "checkpoint":
                    referenced.add(event["checkpoint"])
        # 5) no event lost: every checkpoint but a pre-change one has its event
        unreferenced = {cid for cid, info in infos.items() if info["kind"] != "pre-change"}
        assert unreferenced <= referenced, sorted(unreferenced - referenced)
        # 6) no change event that the restored state does not hold
        if opened["own_lr_changes"]:
            assert opened["lr"] == opened["own_lr_changes"][-1][1]


def test_kill_9_at_random_moments_loses_nothing(tmp_path):
    """20 SIGKILLs at random moments; after each, the restart is checked against the disk."""
    seed = int(os.environ.get("PANDA_CRASH_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    checkpoint_dir = tmp_path / "checkpoints"
    ledger = Ledger(checkpoint_dir)
    restarts_checked = early_kills = survived = 0
    disk = None  # what the previous kill left on disk
    for life in range(N_RANDOM_KILLS):
        worker = Worker(checkpoint_dir, seed=rng.randrange(10**6))
        if life % 5 == 4:
            # Some kills land while the process starts up and reopens the run.
            time.sleep(rng.uniform(0.0, 0.8))
            early_kills += 1
            worker.kill()
            opened = worker.printed("OPENED")
            if opened is not None:  # it got as far as reopening the run: check that too
                ledger.check_restart(json.loads(opened), disk)
                restarts_checked += 1
        else:
            opened = json.loads(worker.expect("OPENED"))
            if life > 0:
                ledger.check_restart(opened, disk)
                restarts_checked += 1
            assert int(worker.expect("CONTINUED")) == opened["step"] + 3
            time.sleep(rng.uniform(0.0, 0.8))
            worker.kill()
        disk = ledger.check_disk()  # every checkpoint on disk loads, none lost or changed
        survived += 1

    # The last restart, in this process: checked, then trained on.
    trainer = Trainer.open(checkpoint_dir)
    try:
        snap = trainer.snapshot()
        assert snap.damaged == () and snap.last_good_checkpoint == disk["newest"]["id"]
        np.testing.assert_array_equal(snap.history["step"], np.arange(1, snap.step + 1))
        assert not [p for p in ledger.run_dir().rglob("*") if ckptio.is_temporary(p)]
        assert run_steps(trainer, 5).step == snap.step + 5
        branches = len(snap.branches)
    finally:
        trainer.stop()
    ledger.check_disk()
    # Every kill is followed by a restart that reopens the run; each reopened state the
    # worker reported before its own kill, and the final one here, was checked in full.
    report("random kills", seed=seed, crashes_injected=N_RANDOM_KILLS, survived=survived,
           restarts_checked=restarts_checked + 1, kills_during_startup=early_kills,
           checkpoints_written=len(ledger.seen), checkpoints_lost=len(ledger.lost),
           temporaries_left_by_kills=ledger.temporaries_left, branches=branches)


def test_kill_9_at_exact_points_of_a_checkpoint_write(tmp_path):
    """A kill between the journal and the checkpoint, mid-temp-file, before and after the rename."""
    checkpoint_dir = tmp_path / "checkpoints"
    ledger = Ledger(checkpoint_dir)
    worker = Worker(checkpoint_dir, seed=1)
    worker.expect("CONTINUED")
    time.sleep(0.5)
    worker.kill()
    disk = ledger.check_disk()
    temporaries_seen = 0
    for seed, point in enumerate(KILL_POINTS, start=2):
        worker = Worker(checkpoint_dir, seed=seed, kill_at=point)
        ledger.check_restart(json.loads(worker.expect("OPENED")), disk)
        worker.wait_for_self_kill()
        disk = ledger.check_disk()
        if point.startswith(("mid-temp", "before-replace", "journal-mid-temp")):
            assert disk["temporaries"], f"{point}: the kill should have left a temporary file"
            temporaries_seen += len(disk["temporaries"])
    worker = Worker(checkpoint_dir, seed=99)
    ledger.check_restart(json.loads(worker.expect("OPENED")), disk)
    worker.expect("CONTINUED")
    worker.kill()
    ledger.check_disk()
    report("kills at exact write points", crashes_injected=len(KILL_POINTS) + 2,
           survived=len(KILL_POINTS) + 2, temporaries_left_and_cleaned=temporaries_seen,
           checkpoints_lost=len(ledger.lost))


@pytest.mark.parametrize("point", ["after-journal:initial", "before-replace:initial"])
def test_kill_9_while_creating_a_run_leaves_no_broken_run(tmp_path, point):
    """A run killed before its first checkpoint is no run: open() finds none; a new one starts."""
    checkpoint_dir = tmp_path / "checkpoints"
    Worker(checkpoint_dir, seed=1, kill_at=point).wait_for_self_kill()
    assert list_runs(checkpoint_dir) == []
    with pytest.raises(FileNotFoundError):
        Trainer.open(checkpoint_dir)
    worker = Worker(checkpoint_dir, seed=2)  # creates a fresh run and trains
    opened = json.loads(worker.expect("OPENED"))
    assert opened["step"] == 0 and opened["damaged"] == []
    assert int(worker.expect("CONTINUED")) == 3
    worker.kill()
    ledger = Ledger(checkpoint_dir)
    disk = ledger.check_disk()
    worker = Worker(checkpoint_dir, seed=3)
    ledger.check_restart(json.loads(worker.expect("OPENED")), disk)
    worker.kill()
    report(f"kill while creating a run ({point})", crashes_injected=2, survived=2,
           broken_runs_left=0)


def test_stop_right_after_an_update_keeps_the_change(tmp_path):
    """A server stopped between an α change and the next step must not forget the change."""
    with Trainer(RunConfig(**SMALL), tmp_path) as trainer:
        run_steps(trainer, 3)
        trainer.update(lr=0.005, batch_size=16)
        drain(trainer)
        events = [(e["kind"], e["step"]) for e in trainer.snapshot().events]
    with Trainer.open(tmp_path) as reopened:
        snap = reopened.snapshot()
        assert (snap.step, snap.hparams["lr"], snap.hparams["batch_size"]) == (3, 0.005, 16)
        assert [(e["kind"], e["step"]) for e in snap.events][:len(events)] == events
