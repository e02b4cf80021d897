"""A disk that fails mid-write: the run says so, changes nothing by halves, loses nothing.

Tests run as root, where a read-only folder does not stop writes, so failures are injected
where the engine writes: the checkpoint or journal file (``ckptio.write_atomic``), a temp
file that dies part-written (``np.savez``), the rename (``os.replace``) and ``os.fsync``.
The documented behaviour (docs/RELIABILITY.md, Trainer docstring):

- a periodic checkpoint that fails stops training: status "error", the message shown
  (it is written in the background, so a few more steps may have been trained by then);
- a manual ``checkpoint()`` raises the OSError to its caller; the run carries on;
- ``update()``: its pre-change checkpoint failing means none of the change applies;
- ``rollback()``: saving the branch being left fails -> OSError, nothing changed; the new
  branch's first checkpoint fails -> the rollback stands, status "error";
- ``stop()``: the final checkpoint fails -> "stopped" with the error; reopening resumes
  from the last checkpoint written;
- creating a run fails -> the error is raised and no run folder is left behind.

In every case each earlier checkpoint stays byte for byte as it was.
"""

from __future__ import annotations

import errno
import os
import time

import numpy as np
import pytest

from dlcore import checkpoint as ckptio
from dlcore.trainer import CHECKPOINT_FORMAT, RunConfig, Trainer, list_runs
from tests.test_reliability import (
    EVERY_PERIODIC,
    SMALL,
    digest,
    drain,
    folder_state,
    report,
    run_steps,
)

FAILURES = {"tried": 0, "checkpoints_lost_or_changed": 0}


def disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


class FailingDisk:
    """Makes one kind of write fail while ``on``; ``mode`` says where it breaks."""

    MODES = ("checkpoint-file", "journal-file", "part-written-temp", "rename", "fsync")

    def __init__(self, monkeypatch, mode: str):
        self.mode, self.on, self.failures = mode, False, 0
        real_write, real_savez = ckptio.write_atomic, np.savez
        real_replace, real_fsync = os.replace, os.fsync

        def write_atomic(path, arrays, meta):
            is_journal = meta.get("format") != CHECKPOINT_FORMAT
            if self.on and (self.mode == "checkpoint-file" and not is_journal
                            or self.mode == "journal-file" and is_journal):
                self._fail()
            return real_write(path, arrays, meta)

        def savez(file, *args, **kwargs):
            if self.on and self.mode == "part-written-temp" and hasattr(file, "write"):
                file.write(b"PK\x03\x04" + bytes(2000))  # the start of a zip, then the disk fills
                self._fail()
            return real_savez(file, *args, **kwargs)

        def replace(source, target):
            if self.on and self.mode == "rename" and ckptio.TEMP_MARK in str(source):
                self._fail()
            return real_replace(source, target)

        def fsync(fd):
            if self.on and self.mode == "fsync":
                self._fail(errno.EIO, "Input/output error")
            return real_fsync(fd)

        monkeypatch.setattr(ckptio, "write_atomic", write_atomic)
        monkeypatch.setattr(np, "savez", savez)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(os, "fsync", fsync)

    def _fail(self, code=errno.ENOSPC, message="No space left on device"):
        self.failures += 1
        FAILURES["tried"] += 1
        raise OSError(code, message)


class Disk:
    """The run's files: every checkpoint written so far must stay exactly as it was."""

    def __init__(self, trainer: Trainer):
        self.run_dir = trainer.run_dir
        self.digests: dict[str, str] = {}
        self.record()

    def record(self) -> None:
        for path in self.run_dir.glob("ckpt-*.npz"):
            self.digests.setdefault(path.name, digest(path))

    def check(self, trainer: Trainer | None = None) -> None:
        for name, expected in self.digests.items():
            path = self.run_dir / name
            if not path.exists() or digest(path) != expected:
                FAILURES["checkpoints_lost_or_changed"] += 1
                pytest.fail(f"{name} was lost or changed")
            ckptio.read(path, CHECKPOINT_FORMAT)
        temporaries = [p.name for p in self.run_dir.rglob("*") if ckptio.is_temporary(p)]
        assert temporaries == [], f"temporary files left behind: {temporaries}"
        on_disk = sorted(p.stem for p in self.run_dir.glob("ckpt-*.npz"))
        if trainer is not None:
            snap = trainer.snapshot()
            assert sorted(c["id"] for c in snap.checkpoints) == on_disk
            for event in snap.events:
                if event["kind"] == "checkpoint":
                    assert event["checkpoint"] in on_disk, f"event for a missing file: {event}"
        self.record()


def event_log(snap) -> list[tuple]:
    return [(e["kind"], e["step"], e.get("checkpoint")) for e in snap.events]


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    report("failing disk", failed_writes_injected=FAILURES["tried"],
           checkpoints_lost_or_changed=FAILURES["checkpoints_lost_or_changed"])


@pytest.fixture
def trainer(tmp_path):
    trainer = Trainer(RunConfig(**SMALL, checkpoint_every=5, retention=EVERY_PERIODIC), tmp_path)
    yield trainer
    trainer.stop()


def wait_for_status(trainer: Trainer, status: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while (snap := trainer.snapshot()).status != status:
        assert time.monotonic() < deadline, f"status {snap.status}, expected {status}"
        time.sleep(0.005)
    return snap


@pytest.mark.parametrize("mode", FailingDisk.MODES)
def test_a_failing_periodic_checkpoint_stops_the_run_with_the_error_and_loses_nothing(
        trainer, tmp_path, monkeypatch, mode):
    disk = FailingDisk(monkeypatch, mode)
    files = Disk(trainer)
    run_steps(trainer, 12)
    files.check(trainer)
    # 1) the next periodic checkpoint (step 15) fails: training stops, the error is shown.
    #    It is written in the background, so the failure is seen a few steps later, at
    #    the latest when the next periodic checkpoint (step 20) waits for it.
    disk.on = True
    trainer.start()
    snap = wait_for_status(trainer, "error")
    assert disk.failures >= 1
    assert "No space left" in snap.error or "Input/output" in snap.error
    stopped_at = snap.step
    assert 15 <= stopped_at <= 20
    time.sleep(0.1)
    assert trainer.snapshot().step == stopped_at, "training went on after a failed checkpoint"
    assert trainer.snapshot().checkpoints[-1]["step"] == 10
    files.check(trainer)
    # 2) the disk comes back: resume, change α, and the next checkpoints hold everything
    disk.on = False
    run_steps(trainer, 7)
    trainer.update(lr=0.002)
    drain(trainer)
    files.check(trainer)
    trainer.stop()  # saves the α change with a final checkpoint
    before = trainer.snapshot()
    assert [c["kind"] for c in before.checkpoints][-2:] == ["pre-change", "final"]
    with Trainer.open(tmp_path) as reopened:
        after = reopened.snapshot()
        assert after.step == before.step == stopped_at + 7
        np.testing.assert_array_equal(after.history["step"], np.arange(1, stopped_at + 8))
        np.testing.assert_array_equal(after.history["cost"], before.history["cost"])
        assert event_log(after) == event_log(before)
        assert after.hparams["lr"] == 0.002
        files.check(reopened)


@pytest.mark.parametrize("mode", FailingDisk.MODES)
def test_a_failing_manual_checkpoint_raises_to_the_caller_and_changes_nothing(
        trainer, monkeypatch, mode):
    disk = FailingDisk(monkeypatch, mode)
    files = Disk(trainer)
    run_steps(trainer, 3)
    before = trainer.snapshot()
    disk.on = True
    with pytest.raises(OSError):
        trainer.checkpoint("by hand")
    after = trainer.snapshot()
    assert after.status == before.status and after.error is None
    assert after.checkpoints == before.checkpoints and event_log(after) == event_log(before)
    files.check(trainer)
    disk.on = False
    checkpoint_id = trainer.checkpoint("by hand, again")
    assert trainer.snapshot().checkpoints[-1]["id"] == checkpoint_id
    files.check(trainer)


@pytest.mark.parametrize("mode", FailingDisk.MODES)
def test_an_update_whose_pre_change_checkpoint_fails_applies_nothing(trainer, monkeypatch, mode):
    disk = FailingDisk(monkeypatch, mode)
    files = Disk(trainer)
    run_steps(trainer, 3)
    before = trainer.snapshot()
    disk.on = True
    with pytest.raises(OSError, match="No space|Input/output"):
        trainer.update(lr=0.01, batch_size=16, speed_limit=50)
    after = trainer.snapshot()
    assert after.status == before.status and after.error is None
    assert dict(after.hparams) == dict(before.hparams)
    assert after.speed_limit == before.speed_limit, "the speed limit applied without the rest"
    assert after.checkpoints == before.checkpoints
    assert [e for e in after.events if e["kind"] == "change"] == []
    files.check(trainer)
    disk.on = False
    trainer.update(lr=0.01, batch_size=16, speed_limit=50)
    drain(trainer)
    snap = trainer.snapshot()
    assert snap.hparams["lr"] == 0.01 and snap.hparams["batch_size"] == 16
    assert snap.speed_limit == 50
    files.check(trainer)


def test_a_rollback_whose_writes_fail(trainer, monkeypatch):
    disk = FailingDisk(monkeypatch, "checkpoint-file")
    files = Disk(trainer)
    run_steps(trainer, 7)
    fork = trainer.checkpoint("fork")
    run_steps(trainer, 6)
    before = trainer.snapshot()
    # 1) saving the branch being left fails: OSError, nothing changed
    disk.on = True
    with pytest.raises(OSError):
        trainer.rollback(fork)
    after = trainer.snapshot()
    assert (after.step, after.branch, dict(after.hparams)) == (13, 0, dict(before.hparams))
    assert after.checkpoints == before.checkpoints and event_log(after) == event_log(before)
    files.check(trainer)
    # 2) the branch being left is saved, the new branch's first checkpoint fails:
    #    the rollback stands (the run is at the fork, on branch 1) and the error is shown
    disk.on = False
    trainer.checkpoint("branch 0 saved")
    disk.on = True
    assert trainer.rollback(fork) == 1
    snap = trainer.snapshot()
    assert (snap.step, snap.branch, snap.status) == (7, 1, "error")
    assert "No space" in snap.error
    files.check(trainer)
    # 3) with the disk back, the new branch is saved with its next checkpoint
    disk.on = False
    snap = run_steps(trainer, 3)
    assert (snap.step, snap.branch, snap.status) == (10, 1, "paused")
    files.check(trainer)


def test_a_failing_final_checkpoint_on_stop(tmp_path, monkeypatch):
    trainer = Trainer(RunConfig(**SMALL), tmp_path)
    disk = FailingDisk(monkeypatch, "checkpoint-file")
    files = Disk(trainer)
    run_steps(trainer, 4)
    saved = trainer.checkpoint()
    run_steps(trainer, 3)
    disk.on = True
    trainer.stop()
    snap = trainer.snapshot()
    assert snap.status == "stopped" and "No space" in snap.error
    disk.on = False
    files.check()
    with Trainer.open(tmp_path) as reopened:
        snap = reopened.snapshot()
        assert (snap.step, snap.last_good_checkpoint, snap.damaged) == (4, saved, ())


@pytest.mark.parametrize("mode", FailingDisk.MODES)
def test_a_run_whose_creation_fails_leaves_no_folder(tmp_path, monkeypatch, mode):
    with Trainer(RunConfig(**SMALL), tmp_path, run_id="existing") as existing:
        run_steps(existing, 3)
    before = folder_state(tmp_path)
    disk = FailingDisk(monkeypatch, mode)
    disk.on = True
    with pytest.raises(OSError):
        Trainer(RunConfig(**SMALL), tmp_path, run_id="new")
    assert folder_state(tmp_path) == before
    disk.on = False
    assert list_runs(tmp_path) == ["existing"]
    with Trainer.open(tmp_path) as reopened:
        assert reopened.run_id == "existing" and reopened.snapshot().step == 3


