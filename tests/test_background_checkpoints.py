"""Periodic checkpoints are written in a background thread while training goes on.

The worker prepares a copy of the state, hands the two files (journal chunk, checkpoint)
to a short-lived thread and settles the write afterwards. These tests slow that write
down (``ckptio.write_atomic`` sleeps for periodic checkpoint files) and check that:

- training keeps stepping while the files are written, and the file holds the state of
  its own step (a reference run trained to that step and no further has the same arrays);
- a command issued meanwhile (checkpoint, rollback, update, stop) waits for the write:
  checkpoints, parent links and journal chunks agree with each other and with the disk,
  and a reopened run has the same history bit for bit;
- ``step(n)`` ending on a periodic checkpoint: "paused" is never shown before it is listed;
- a write that fails while training goes on stops the run and loses nothing.
"""

from __future__ import annotations

import errno
import threading
import time

import numpy as np
import pytest

from dlcore import checkpoint as ckptio
from dlcore.trainer import CHECKPOINT_FORMAT, RunConfig, Trainer
from tests.test_reliability import EVERY_PERIODIC, SMALL, run_steps, wait_until_idle
from tests.test_reliability_disk import Disk

EVERY = 20  # checkpoint_every of these runs


class SlowDisk:
    """Periodic checkpoint files take ``delay`` seconds to write, then (if ``fail``) fail.

    ``started`` is set when such a write begins, ``finished`` when it has ended.
    """

    def __init__(self, monkeypatch, delay: float = 0.3):
        self.delay, self.fail = delay, False
        self.started, self.finished = threading.Event(), threading.Event()
        self.steps_written: list[int] = []
        real_write = ckptio.write_atomic

        def write_atomic(path, arrays, meta):
            periodic = (
                meta.get("format") == CHECKPOINT_FORMAT and meta["info"]["kind"] == "periodic"
            )
            if not periodic:
                return real_write(path, arrays, meta)
            self.started.set()
            try:
                time.sleep(self.delay)
                if self.fail:
                    raise OSError(errno.ENOSPC, "No space left on device")
                real_write(path, arrays, meta)
                self.steps_written.append(meta["info"]["step"])
            finally:
                self.finished.set()

        monkeypatch.setattr(ckptio, "write_atomic", write_atomic)

    def rearm(self) -> None:
        self.started.clear()
        self.finished.clear()


@pytest.fixture
def trainers(tmp_path):
    made = []

    def make(folder="run", **overrides) -> Trainer:
        trainer = Trainer(RunConfig(**{**SMALL, "checkpoint_every": EVERY,
                                       "retention": EVERY_PERIODIC, **overrides}),
                          tmp_path / folder)
        made.append(trainer)
        return trainer

    yield make
    for trainer in made:
        trainer.stop()


def assert_consistent(trainer: Trainer) -> None:
    """Listed checkpoints = files on disk, one journal chunk each, parents in order."""
    snap = trainer.snapshot()
    Disk(trainer).check(trainer)  # listed = on disk, events name files that exist, no temps
    run_dir = trainer.run_dir
    checkpoints = sorted(snap.checkpoints, key=lambda c: c["seq"])
    assert [c["id"] for c in checkpoints] == [c["id"] for c in snap.checkpoints]
    chunks = sorted(int(p.stem) for p in (run_dir / "journal").glob("*.npz"))
    assert chunks == [c["seq"] for c in checkpoints], "a journal chunk without its checkpoint"
    for before, checkpoint in zip(checkpoints, checkpoints[1:], strict=False):
        if checkpoint["kind"] == "rollback":
            assert checkpoint["parent"] == snap.branches[checkpoint["branch"]]["from_checkpoint"]
        else:
            assert checkpoint["parent"] == before["id"], checkpoint
    for checkpoint in checkpoints:
        if checkpoint["kind"] == "periodic":
            assert checkpoint["step"] % EVERY == 0


def assert_reopens_the_same(trainer: Trainer, checkpoint_dir) -> None:
    """Stop, reopen from disk, and find every branch's history and events bit for bit."""
    trainer.stop()
    live = trainer.snapshot()
    with Trainer.open(checkpoint_dir) as reopened:
        snap = reopened.snapshot()
        assert snap.checkpoints == live.checkpoints
        assert (snap.step, snap.branch) == (live.step, live.branch)
        assert snap.branches.keys() == live.branches.keys()
        for number, branch in live.branches.items():
            again = snap.branches[number]
            assert again["history"].keys() == branch["history"].keys()
            evals = len(branch["history"]["eval_step"])
            for name, column in branch["history"].items():
                reopened_column = again["history"][name]
                if number == snap.branch and len(column) == evals == len(reopened_column) - 1:
                    # Reopening evaluates the step it stands on if no evaluation was there.
                    assert again["history"]["eval_step"][-1] == snap.step
                    reopened_column = reopened_column[:-1]
                np.testing.assert_array_equal(reopened_column, column, err_msg=name)
            assert again["events"] == branch["events"]


def wait_while_in_flight_for_a_step_past(trainer: Trainer, disk: SlowDisk, step: int) -> int:
    """Return a step > ``step`` seen while the periodic write was still in flight."""
    assert disk.started.wait(10), "no periodic checkpoint write began"
    while True:
        seen = trainer.snapshot().step
        in_flight = not disk.finished.is_set()  # read after the step: seen during the write
        assert in_flight, "training did not go on while the checkpoint was written"
        if seen > step:
            return seen
        time.sleep(0.002)


def test_training_goes_on_while_a_periodic_checkpoint_is_written(trainers, monkeypatch):
    disk = SlowDisk(monkeypatch)
    trainer = trainers()
    trainer.start()
    wait_while_in_flight_for_a_step_past(trainer, disk, EVERY)
    assert EVERY not in [c["step"] for c in trainer.snapshot().checkpoints], (
        "listed before its file is on disk"
    )
    trainer.pause()
    snap = wait_until_idle(trainer)
    periodic = [c for c in snap.checkpoints if c["kind"] == "periodic"]
    assert periodic and periodic[0]["step"] == EVERY and periodic[0]["parent"] == "ckpt-000000"
    assert_consistent(trainer)
    # The file holds the state of step 20, though training changed it during the write:
    # the same as a run trained to step 20 and no further.
    disk.delay = 0
    reference = trainers("reference")
    run_steps(reference, EVERY)
    expected, _ = reference.export_state()
    written, meta = trainer.export_state(periodic[0]["id"])
    assert written.keys() == expected.keys()
    for key in expected:
        np.testing.assert_array_equal(written[key], expected[key], err_msg=key)
    assert meta["optimizer"]["t"] == EVERY


@pytest.mark.parametrize("command", ["checkpoint", "rollback", "update", "stop"])
def test_a_command_issued_during_a_periodic_write_waits_for_it(
        trainers, tmp_path, monkeypatch, command):
    disk = SlowDisk(monkeypatch)
    trainer = trainers()
    run_steps(trainer, 10)
    fork = trainer.checkpoint("fork")
    trainer.start()
    wait_while_in_flight_for_a_step_past(trainer, disk, EVERY)
    if command == "checkpoint":
        trainer.checkpoint("during a write")
    elif command == "rollback":
        assert trainer.rollback(fork) == 1
    elif command == "update":
        trainer.update(lr=0.002)
    else:
        trainer.stop()
    if command != "stop":
        trainer.pause()
        wait_until_idle(trainer)
    # The write in flight was settled first: listed before what the command wrote.
    assert EVERY in disk.steps_written
    snap = trainer.snapshot()
    checkpoints = [(c["kind"], c["step"]) for c in snap.checkpoints]
    written = {"checkpoint": "manual", "rollback": "rollback", "update": "pre-change",
               "stop": "final"}[command]
    if command == "stop" and checkpoints[-1] == ("periodic", snap.step):
        written = "periodic"  # it stopped on a periodic checkpoint: nothing left to save
    last_written = max(i for i, (kind, _) in enumerate(checkpoints) if kind == written)
    assert checkpoints.index(("periodic", EVERY)) < last_written
    assert_consistent(trainer)
    assert_reopens_the_same(trainer, tmp_path / "run")


def test_step_n_ending_on_a_periodic_checkpoint_pauses_with_it_listed(trainers, monkeypatch):
    disk = SlowDisk(monkeypatch, delay=0.2)
    trainer = trainers()
    trainer.step(EVERY)  # status: idle -> running -> paused
    while (snap := trainer.snapshot()).status != "paused":
        time.sleep(0.001)
    assert snap.step == EVERY
    assert snap.checkpoints[-1]["kind"] == "periodic" and snap.checkpoints[-1]["step"] == EVERY
    assert snap.last_good_checkpoint == snap.checkpoints[-1]["id"]
    assert disk.steps_written == [EVERY]


def test_a_background_write_that_fails_stops_the_run_and_loses_nothing(
        trainers, tmp_path, monkeypatch):
    # 50 steps/s: the write (30 ms) fails while training goes on, a few steps later.
    disk = SlowDisk(monkeypatch, delay=0.03)
    trainer = trainers(checkpoint_every=10)
    trainer.update(speed_limit=50)
    disk.fail = True
    trainer.start()
    deadline = time.monotonic() + 30
    while (snap := trainer.snapshot()).status != "error":
        assert time.monotonic() < deadline, f"status {snap.status}, expected error"
        time.sleep(0.002)
    assert "No space left" in snap.error
    stopped_at = snap.step
    assert 10 < stopped_at < 20, "the failure should be seen before the next checkpoint"
    assert [c["step"] for c in snap.checkpoints] == [0]
    assert [e["kind"] for e in snap.events if e["kind"] == "checkpoint"] == ["checkpoint"]
    assert_consistent(trainer)
    time.sleep(0.1)
    assert trainer.snapshot().step == stopped_at, "training went on after a failed checkpoint"
    # The disk comes back: the next checkpoint holds every row the failed one should have.
    disk.fail = False
    disk.rearm()
    run_steps(trainer, 3)
    trainer.checkpoint("after the failure")
    assert_consistent(trainer)
    assert_reopens_the_same(trainer, tmp_path / "run")
    with Trainer.open(tmp_path / "run") as reopened:
        steps = reopened.snapshot().history["step"]
        np.testing.assert_array_equal(steps, np.arange(1, stopped_at + 4))
