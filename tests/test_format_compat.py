"""Runs written by earlier versions of Panda still reopen and continue exactly.

``tests/fixtures/run-fixture-v1`` was written by the engine as it was before the
redesign (``panda-checkpoint-v1``, ``panda-journal-v1``): blobs, a staircase schedule,
periodic checkpoints, an optimizer switch that carries its moments, a manual checkpoint
and a rollback with a changed λ (two branches). ``run-fixture-v1-expected.json`` holds
what that engine showed after reopening it, and the costs of the 10 steps it trained
next, as exact float hex strings.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dlcore.trainer import Trainer
from tests.test_trainer import run_steps

FIXTURES = Path(__file__).parent / "fixtures"


def _open_copy(tmp_path):
    shutil.copytree(FIXTURES / "run-fixture-v1", tmp_path / "run-fixture-v1")
    return Trainer.open(tmp_path, "run-fixture-v1")


def test_a_run_written_before_the_redesign_reopens_as_it_was(tmp_path):
    expected = json.loads((FIXTURES / "run-fixture-v1-expected.json").read_text())["reopened"]
    trainer = _open_copy(tmp_path)
    try:
        snap = trainer.snapshot()
        assert snap.damaged == ()
        assert (snap.step, snap.branch, snap.epoch) == (
            expected["step"], expected["branch"], expected["epoch"])
        assert snap.alpha == expected["alpha"]
        assert [c["id"] for c in snap.checkpoints] == expected["checkpoints"]
        branch_steps = {
            str(n): [int(b["history"]["step"][0]), int(b["history"]["step"][-1]),
                     len(b["history"]["step"])]
            for n, b in snap.branches.items()
        }
        assert branch_steps == expected["branch_steps"]
        assert [[e["kind"], e["step"], e["branch"]] for e in snap.events] == expected["events"]
        for key, value in expected["hparams"].items():
            assert snap.hparams[key] == value, key
    finally:
        trainer.stop()


def test_a_run_written_before_the_redesign_continues_bit_for_bit(tmp_path):
    expected = json.loads((FIXTURES / "run-fixture-v1-expected.json").read_text())
    trainer = _open_copy(tmp_path)
    try:
        history = run_steps(trainer, 10).history
        assert [float(c).hex() for c in history["cost"][-10:]] == expected["continuation_costs"]
        assert [float(a).hex() for a in history["lr"][-10:]] == expected["continuation_lr"]
    finally:
        trainer.stop()


def test_what_an_older_run_did_not_record_stays_unrecorded_through_compaction(
        tmp_path, monkeypatch):
    """The fixture has no step times and no weight distributions: those read NaN ("not
    recorded"), and must still after its journals are merged with newer ones on disk, not
    0 (the year 1970, a flat band at 0)."""
    import numpy as np

    from dlcore import branches, run

    monkeypatch.setattr(branches, "COMPACT_ABOVE", 2)
    monkeypatch.setattr(branches, "COMPACT_KEEP", 1)
    monkeypatch.setattr(run, "MAX_UNJOURNALLED_STEPS", 20)
    trainer = _open_copy(tmp_path)
    try:
        start = trainer.snapshot().step
        before = run_steps(trainer, 200).history
        assert before["step"][-1] == start + 200
    finally:
        trainer.stop()
    journals = sorted((tmp_path / "run-fixture-v1" / "journal").glob("*.npz"))
    assert any(b"compacted" in path.read_bytes() for path in journals)  # merged on disk
    reopened = Trainer.open(tmp_path, "run-fixture-v1")
    try:
        snap = reopened.snapshot()
        assert snap.damaged == ()
        history = snap.history
        old, new = history["step"] <= start, history["step"] > start
        assert np.isnan(history["time"][old]).all() and np.isfinite(history["time"][new]).all()
        weights = history["weights/fc1"]
        evaluated_before = history["eval_step"] < start  # the reopened run evaluates at start
        assert np.isnan(weights[evaluated_before]).all()
        assert np.isfinite(weights[~evaluated_before]).all() and (~evaluated_before).any()
        np.testing.assert_array_equal(history["time"], before["time"])
    finally:
        reopened.stop()
