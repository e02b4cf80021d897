"""States that must never happen: a snapshot that raises, a half-applied command, a file
outside the run folder touched, a checkpoint whose parts disagree restored.

Each test is one class of problem an adversarial tester found (docs/RELIABILITY.md):

1. torn reads: ``snapshot()`` while rollbacks are applied sees a whole state;
2. checkpoints whose parts disagree are listed as damaged, each with its reason;
3. α driven to 0 by a schedule is held at a floor, and a live fix brings the run back;
4. validation cannot race the queue: a call that raises nothing was applied; the
   queue is bounded;
5. not-a-file files (FIFOs) are never opened for reading;
6. symbolic links never lead a read, write or delete outside the run folder.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dlcore import checkpoint as ckptio
from dlcore.state import ALPHA_FLOOR
from dlcore.trainer import CHECKPOINT_FORMAT, RunConfig, Trainer
from tests.test_reliability import SMALL, npz_bytes, report, run_steps
from tests.test_reliability_damaged import meta_array


def tree_digest(folder: Path) -> dict:
    """name -> sha256 of every file under ``folder`` (links not followed)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# -- 1) torn reads ----------------------------------------------------------------------------


def test_snapshots_during_rollbacks_always_see_a_whole_state(tmp_path):
    """A reader thread calls snapshot() while 60 rollbacks (with new schedules that count
    epochs from other starts) are applied: zero exceptions, every snapshot consistent."""
    config = RunConfig(**{**SMALL, "batch_size": 32, "checkpoint_every": 20})
    with Trainer(config, tmp_path) as trainer:
        run_steps(trainer, 60)
        trainer.update(schedule="staircase", schedule_params={"factor": 0.5, "every": 2})
        run_steps(trainer, 60)
        targets = [c["id"] for c in trainer.snapshot().checkpoints]
        stop, errors, seen = threading.Event(), [], [0]

        def read():
            while not stop.is_set():
                try:
                    snap = trainer.snapshot()
                    steps = snap.history["step"]
                    assert not len(steps) or steps[-1] == snap.step, (steps[-1], snap.step)
                    assert snap.branch in snap.branches
                    assert np.isfinite(snap.alpha) and snap.alpha > 0
                    seen[0] += 1
                except Exception as error:  # noqa: BLE001 - every failure counts
                    errors.append(repr(error))

        reader = threading.Thread(target=read)
        reader.start()
        rng = np.random.default_rng(1)
        for i in range(60):
            target = str(rng.choice(targets))
            if i % 3 == 0:
                trainer.rollback(target, schedule="exponential", schedule_params={"base": 0.9})
            else:
                trainer.rollback(target)
            trainer.step(int(rng.integers(1, 15)))
        stop.set()
        reader.join()
        report("torn reads", snapshots=seen[0], rollbacks=60, exceptions=len(errors))
        assert errors == [] and seen[0] > 100


# -- 2) checkpoints whose parts disagree ------------------------------------------------------

# name -> change(arrays, meta) making one part of a good checkpoint disagree with the rest
INCONSISTENT = {
    "schedule counts from after its epoch": lambda a, m: m["schedule"].update(start_epoch=10**6),
    "a negative running variance": lambda a, m: a["buffers/bn1.running_var"].__setitem__(0, -1),
    "a zero running variance": lambda a, m: a["buffers/bn1.running_var"].__setitem__(0, 0.0),
    "weights near 1e308": lambda a, m: a["params/fc1.W"].__setitem__((0, 0), 1e308),
    "a moment near 1e308": lambda a, m: a["optim/fc1.W/v"].__setitem__((0, 0), -1e308),
    "optimizer t = 10**400": lambda a, m: m["optimizer"].update(t=10**400),
    "optimizer t past the step": lambda a, m: m["optimizer"].update(t=m["info"]["step"] + 1),
    "iterator batch size 10**9": lambda a, m: m["iterator"].update(batch_size=10**9),
    "iterator batch size not the hyperparameter's":
        lambda a, m: m["iterator"].update(batch_size=m["iterator"]["batch_size"] + 1),
    "iterator epoch not the checkpoint's":
        lambda a, m: m["iterator"].update(epoch=m["iterator"]["epoch"] + 3),
    "step 10**15": lambda a, m: m["info"].update(step=10**15),
    "a note of 20 MB": lambda a, m: m["info"].update(note="x" * 20_000_000),
    "a note with control characters": lambda a, m: m["info"].update(note="a\x1b[31mb"),
    "metrics that are strings": lambda a, m: m["info"].update(metrics={"dev_accuracy": "90%"}),
    "metrics of unknown names": lambda a, m: m["info"].update(metrics={"evil": 1.0}),
    "an unknown kind": lambda a, m: m["info"].update(kind="surprise"),
    "a seq that is not its number": lambda a, m: m["info"].update(seq=3),
    "a negative α": lambda a, m: m["info"].update(alpha=-1.0),
    "a schedule other than its hyperparameters'":
        lambda a, m: m["schedule"].update(name="exponential", params={"base": 0.5}),
    "an optimizer other than its hyperparameters'":
        lambda a, m: m["optimizer"].update(name="rmsprop"),
    "a missing hyperparameter": lambda a, m: m["info"]["hparams"].pop("batch_size"),
    "a parent that is a path": lambda a, m: m["info"].update(parent="../../x"),
}


def test_checkpoints_whose_parts_disagree_are_listed_as_damaged(tmp_path):
    with Trainer(RunConfig(**SMALL), tmp_path) as trainer:
        run_steps(trainer, 12)
        good = trainer.checkpoint("good")
        run_dir = trainer.run_dir
    arrays, meta = ckptio.read(run_dir / f"{good}.npz", CHECKPOINT_FORMAT)
    names = {}
    for seq, (what, change) in enumerate(INCONSISTENT.items(), start=100):
        a, m = {k: v.copy() for k, v in arrays.items()}, copy.deepcopy(meta)
        m["info"].update(id=f"ckpt-{seq:06d}", seq=seq)
        change(a, m)
        path = run_dir / f"ckpt-{seq:06d}.npz"
        path.write_bytes(npz_bytes({**a, ckptio.META_KEY: meta_array(m)}))
        names[path.name] = what
    with Trainer.open(tmp_path) as reopened:
        snap = reopened.snapshot()
        damaged = {d["file"]: d["reason"] for d in snap.damaged}
        missed = sorted(what for name, what in names.items() if name not in damaged)
        assert missed == [], f"restored as if fine: {missed}"
        for name in names:
            assert name in damaged[name] and len(damaged[name]) < 400, damaged[name]
        assert snap.last_good_checkpoint == good and snap.step == 12
        assert run_steps(reopened, 3).step == 15
        for name in names:
            with pytest.raises(ValueError):
                reopened.rollback(name.removesuffix(".npz"))
    report("inconsistent checkpoints", tried=len(names), listed_as_damaged=len(damaged),
           restored=0)


# -- 3) α driven to 0 -------------------------------------------------------------------------


@pytest.mark.parametrize("schedule, params", [
    ("polynomial", {"end": 0.0, "total": 3}),
    ("exponential", {"base": 1e-300}),
    ("staircase", {"factor": 1e-200, "every": 1}),
])
def test_a_schedule_that_reaches_zero_holds_alpha_at_the_floor_and_a_live_fix_works(
        tmp_path, schedule, params):
    config = RunConfig(**{**SMALL, "batch_size": 240, "schedule": schedule,
                          "schedule_params": params})  # 480 training examples: 2 steps/epoch
    with Trainer(config, tmp_path) as trainer:
        snap = run_steps(trainer, 20)
        assert snap.status == "paused" and snap.error is None
        assert snap.alpha == ALPHA_FLOOR and snap.history["lr"][-1] == ALPHA_FLOOR
        trainer.update(schedule="constant")  # continues from α now: the floor
        snap = run_steps(trainer, 3)
        assert snap.status == "paused" and snap.alpha == ALPHA_FLOOR
        trainer.update(lr=1e-3)  # the live fix
        snap = run_steps(trainer, 3)
        assert snap.status == "paused" and snap.alpha == 1e-3
        assert list(snap.history["lr"][-3:]) == [1e-3] * 3


# -- 4) validation cannot race the queue --------------------------------------------------------


def test_two_threads_updating_at_once_never_see_an_accepted_change_fail(tmp_path):
    """Thread A switches schedules (each resets the parameters), thread B sends parameters
    of one schedule or another as fast as it can: every call either raises ValueError at
    once or is applied; none is accepted and then fails in the worker."""
    with Trainer(RunConfig(**SMALL), tmp_path) as trainer:
        trainer.start()
        accepted, refused, errors = [0], [0], []
        names = ("exponential", "staircase", "inverse_time")
        params = ({"base": 0.9}, {"factor": 0.7}, {"decay_rate": 0.5})

        switched = threading.Event()

        def switch_schedules():
            for i in range(100):
                trainer.update(schedule=names[i % 3])
            switched.set()

        def change_parameters():
            i = 0
            while not switched.is_set():
                i += 1
                try:
                    trainer.update(schedule_params=params[i % 3])
                    accepted[0] += 1
                except ValueError:
                    refused[0] += 1
                except Exception as error:  # noqa: BLE001
                    errors.append(repr(error))

        threads = [threading.Thread(target=switch_schedules),
                   threading.Thread(target=change_parameters)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        trainer.pause()
        snap = trainer.snapshot()
        failed = [e for e in snap.events if e["kind"] == "error"]
        report("concurrent updates", accepted=accepted[0], refused=refused[0],
               accepted_then_failed=len(failed))
        assert errors == [] and failed == [] and snap.error is None
        assert accepted[0] > 0 and refused[0] > 0


def test_a_flood_of_commands_is_paced_and_the_run_still_answers(tmp_path):
    with Trainer(RunConfig(**SMALL), tmp_path) as trainer:
        stop, sent = threading.Event(), [0]

        def flood():
            while not stop.is_set():
                trainer.pause()
                sent[0] += 1

        flooder = threading.Thread(target=flood)
        flooder.start()
        time.sleep(1.0)
        start = time.monotonic()
        arrays, _ = trainer.export_state()  # waits behind at most the bounded queue
        waited = time.monotonic() - start
        stop.set()
        flooder.join()
        report("command flood", commands=sent[0], export_wait_s=round(waited, 3))
        assert arrays and waited < 10
        assert trainer._commands.qsize() <= 1000


# -- 5) and 6) not-a-file files and links out of the run folder ----------------------------------


def test_a_fifo_named_like_a_checkpoint_or_journal_is_listed_as_damaged(tmp_path):
    with Trainer(RunConfig(**SMALL), tmp_path) as trainer:
        run_steps(trainer, 4)
        trainer.checkpoint()
        run_steps(trainer, 4)
        good = trainer.checkpoint()
        run_dir = trainer.run_dir
    os.mkfifo(run_dir / "ckpt-000099.npz")
    (run_dir / "journal" / "000001.npz").unlink()  # an older chunk, read on every open
    os.mkfifo(run_dir / "journal" / "000001.npz")
    done = threading.Event()
    result = {}

    def reopen():
        with Trainer.open(tmp_path) as reopened:
            result["snap"] = reopened.snapshot()
        done.set()

    threading.Thread(target=reopen, daemon=True).start()
    assert done.wait(30), "Trainer.open hung on a FIFO"
    damaged = {d["file"]: d["reason"] for d in result["snap"].damaged}
    assert "not a regular file" in damaged["ckpt-000099.npz"]
    assert "not a regular file" in damaged["journal/000001.npz"]
    assert result["snap"].last_good_checkpoint == good


def test_links_out_of_the_run_folder_are_never_followed(tmp_path):
    runs = tmp_path / "runs"
    with Trainer(RunConfig(**SMALL), runs, run_id="victim") as trainer:
        run_steps(trainer, 4)
        good = trainer.checkpoint()
    with Trainer(RunConfig(**SMALL), runs, run_id="other") as other:
        run_steps(other, 9)
        foreign = other.checkpoint()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "000999.npz").write_bytes(b"precious")
    shutil.copy(runs / "other" / f"{foreign}.npz", outside / "a-checkpoint.npz")
    before = tree_digest(outside)
    victim = runs / "victim"
    # a checkpoint that is a link to a file elsewhere, newer than every real one
    (victim / "ckpt-000500.npz").symlink_to(outside / "a-checkpoint.npz")
    with Trainer.open(runs, "victim") as reopened:
        snap = reopened.snapshot()
        assert "symbolic link" in {d["file"]: d["reason"] for d in snap.damaged}[
            "ckpt-000500.npz"]
        assert snap.last_good_checkpoint == good
        reopened.checkpoint("after")
    # journal/ a link to another folder: the run is refused, nothing there changes
    shutil.rmtree(victim / "journal")
    (victim / "journal").symlink_to(outside)
    with pytest.raises(ValueError, match="journal/ is a symbolic link"):
        Trainer.open(runs, "victim")
    assert tree_digest(outside) == before
    assert (outside / "000999.npz").read_bytes() == b"precious"


def test_a_fifo_as_run_json_is_refused_not_waited_on(tmp_path):
    with Trainer(RunConfig(**SMALL), tmp_path, run_id="r") as trainer:
        run_steps(trainer, 2)
    (tmp_path / "r" / "run.json").unlink()
    os.mkfifo(tmp_path / "r" / "run.json")
    with pytest.raises(ValueError, match="run.json"):
        Trainer.open(tmp_path, "r")
