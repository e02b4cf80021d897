"""A training process for tests/test_reliability.py to kill with SIGKILL.

    python tests/crash_worker.py CHECKPOINT_DIR SEED [KILL_AT]

Reopens the newest run in CHECKPOINT_DIR (``Trainer.open``), or creates a new
one if there is none, and prints one ``OPENED {json}`` line describing what
came back (the parent process checks it against the files on disk). Then it
trains 3 steps and prints ``CONTINUED <step>``, and trains on for ever with
random commands between steps: α changes (pre-change checkpoints), manual
checkpoints and rollbacks (new branches), so every kind of write is in flight
at some moment. It never deletes a checkpoint.

KILL_AT makes the process kill itself at one exact point of a checkpoint write,
where a random kill rarely lands:

    after-journal:KIND   the journal chunk is on disk, the checkpoint not yet
    mid-temp:KIND        half of the checkpoint's temporary file is written
    before-replace:KIND  the temporary file is complete, not yet renamed
    after-replace:KIND   the checkpoint is in place, the folder not yet synced
    journal-mid-temp     half of a journal chunk's temporary file is written

KIND is the checkpoint kind (initial, periodic, manual, pre-change, rollback).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from dlcore import checkpoint as ckptio  # noqa: E402
from dlcore.branches import JOURNAL_FORMAT  # noqa: E402
from dlcore.trainer import CHECKPOINT_FORMAT, RunConfig, Trainer, list_runs  # noqa: E402

CONFIG = RunConfig(dataset="blobs", hidden=(16,), eval_every=5, eval_share=1.0,
                   checkpoint_every=5,
                   retention={"keep_last": None, "min_seconds": 0, "save_best": False},
                   batch_size=32, lr=3e-3)
STEPS_PER_SECOND = 150  # bounds the number of checkpoints a life writes


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install_kill_point(kill_at: str) -> None:
    """Replace ckptio.write_atomic by one that dies at ``kill_at`` (see the module docstring)."""
    point, _, kind = kill_at.partition(":")
    real_write = ckptio.write_atomic

    def write_partly(path: Path, arrays, meta, fraction: float) -> None:
        buffer = io.BytesIO()
        payload = dict(arrays)
        payload[ckptio.META_KEY] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
        np.savez(buffer, **payload)
        data = buffer.getvalue()
        temp = path.with_name(f".{path.name}{ckptio.TEMP_MARK}{os.getpid()}")
        with open(temp, "wb") as f:
            f.write(data[: int(len(data) * fraction)])
            f.flush()
            os.fsync(f.fileno())

    def write_atomic(path, arrays, meta):
        path = Path(path)
        is_checkpoint = meta.get("format") == CHECKPOINT_FORMAT
        if point == "journal-mid-temp" and meta.get("format") == JOURNAL_FORMAT:
            write_partly(path, arrays, meta, 0.5)
            die()
        if is_checkpoint and meta["info"]["kind"] == kind:
            if point == "after-journal":
                die()
            if point == "mid-temp":
                write_partly(path, arrays, meta, 0.5)
                die()
            if point == "before-replace":
                write_partly(path, arrays, meta, 1.0)
                die()
            if point == "after-replace":
                real_write(path, arrays, meta)
                die()
        return real_write(path, arrays, meta)

    ckptio.write_atomic = write_atomic


def describe(trainer: Trainer) -> dict:
    """What came back after the restart, in plain JSON for the parent to check."""
    snap = trainer.snapshot()
    run_dir = Path(snap.checkpoint_dir)
    branches = {}
    for number, branch in snap.branches.items():
        steps = np.asarray(branch["history"]["step"])
        branches[str(number)] = {
            "n_steps": int(len(steps)),
            "contiguous": bool(np.array_equal(steps, np.arange(1, len(steps) + 1))),
            "events": [{"kind": e["kind"], "step": e["step"], "branch": e["branch"],
                        "checkpoint": e.get("checkpoint")} for e in branch["events"]],
        }
    own_changes = [e for e in snap.events
                   if e["kind"] == "change" and e["branch"] == snap.branch and "lr" in e["changes"]]
    return {
        "pid": os.getpid(),
        "step": snap.step,
        "branch": snap.branch,
        "status": snap.status,
        "last_good": snap.last_good_checkpoint,
        "lr": snap.hparams["lr"],
        "own_lr_changes": [[e["step"], e["changes"]["lr"][1]] for e in own_changes],
        "damaged": [dict(d) for d in snap.damaged],
        "checkpoints": [{"id": c["id"], "step": c["step"], "branch": c["branch"],
                         "seq": c["seq"]} for c in snap.checkpoints],
        "history_steps": np.asarray(snap.history["step"]).tolist(),
        "branches": branches,
        "temporaries": sorted(p.name for p in run_dir.rglob("*") if ckptio.is_temporary(p)),
    }


def train_steps(trainer: Trainer, n: int, timeout: float = 30.0) -> int:
    """Train exactly n steps and wait until they are done; returns the step reached."""
    target = trainer.snapshot().step + n
    trainer.step(n)
    deadline = time.monotonic() + timeout
    while True:
        snap = trainer.snapshot()
        if snap.step >= target and snap.status != "running":
            return snap.step
        if snap.status in ("diverged", "error") or time.monotonic() > deadline:
            raise RuntimeError(f"stuck at step {snap.step} ({snap.status}: {snap.error})")
        time.sleep(0.002)


def main() -> None:
    checkpoint_dir = Path(sys.argv[1])
    rng = random.Random(int(sys.argv[2]))
    if len(sys.argv) > 3:
        install_kill_point(sys.argv[3])
    if list_runs(checkpoint_dir):
        trainer = Trainer.open(checkpoint_dir)
    else:
        trainer = Trainer(CONFIG, checkpoint_dir)
    print("OPENED", json.dumps(describe(trainer)), flush=True)

    trainer.update(speed_limit=STEPS_PER_SECOND)
    print("CONTINUED", train_steps(trainer, 3), flush=True)

    trainer.start()
    while True:
        time.sleep(rng.uniform(0.01, 0.08))
        action = rng.random()
        if action < 0.08:
            ids = [c["id"] for c in trainer.snapshot().checkpoints]
            trainer.rollback(rng.choice(ids))
            trainer.start()
        elif action < 0.22:
            trainer.update(lr=10 ** rng.uniform(-3.5, -2.0))
        elif action < 0.30:
            trainer.checkpoint("by hand")
        snap = trainer.snapshot()
        if snap.status == "diverged":  # an α drawn too large: back to safety, as a user would
            trainer.rollback(snap.divergence["last_good_checkpoint"])
            trainer.start()
        elif snap.status not in ("running", "paused"):
            raise RuntimeError(f"the run is {snap.status}: {snap.error}")


if __name__ == "__main__":
    main()
