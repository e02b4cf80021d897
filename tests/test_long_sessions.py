"""Hours-long sessions: periodic checkpoints thinned by the retention policy, paced by
time, the best kept; a rollback to any kept checkpoint still replays exactly."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dlcore.trainer import RunConfig, Trainer
from tests.test_reliability import SMALL, report, run_steps

THINNED = {"keep_last": 10, "min_seconds": 0, "save_best": True}


def test_a_20000_step_run_keeps_at_most_30_periodic_checkpoints_and_every_other(tmp_path):
    config = RunConfig(hidden=(32,), eval_every=100, checkpoint_every=100, retention=THINNED)
    with Trainer(config, tmp_path) as trainer:
        manual, changes = [], 0
        for block in range(20):
            run_steps(trainer, 1000)
            if block % 5 == 2:
                manual.append(trainer.checkpoint(f"by hand at block {block}"))
            if block % 7 == 3:
                trainer.update(l2=1e-4 * (block + 1))
                changes += 1
        snap = trainer.snapshot()
        kinds = [c["kind"] for c in snap.checkpoints]
        periodic = [c for c in snap.checkpoints if c["kind"] == "periodic"]
        on_disk = sorted(p.stem for p in trainer.run_dir.glob("ckpt-*.npz"))
        removed = [i for e in snap.events if e["kind"] == "retention" for i in e["removed"]]
        report("retention", steps=snap.step, periodic_kept=len(periodic),
               periodic_removed=len(removed), manual=kinds.count("manual"),
               pre_change=kinds.count("pre-change"))
        assert snap.step == 20_000 and len(periodic) <= 30
        assert [c["id"] for c in snap.checkpoints if c["kind"] == "manual"] == manual
        assert kinds.count("pre-change") == changes and kinds.count("initial") == 1
        assert sorted(c["id"] for c in snap.checkpoints) == on_disk  # listed = on disk
        assert removed and not set(removed) & set(on_disk)
        best = max(periodic, key=lambda c: c["metrics"].get("dev_accuracy", -1))
        evaluated = [c for c in periodic if "dev_accuracy" in c["metrics"]]
        assert best["metrics"]["dev_accuracy"] >= max(
            float(np.max(snap.history["dev_accuracy"][:-1])) - 1e-9,
            max(c["metrics"]["dev_accuracy"] for c in evaluated))


def test_a_rollback_to_every_kept_checkpoint_replays_bit_for_bit_and_reopens_the_same(tmp_path):
    config = RunConfig(**{**SMALL, "checkpoint_every": 20, "retention": {
        "keep_last": 3, "min_seconds": 0, "save_best": False}})
    with Trainer(config, tmp_path) as trainer:
        original = run_steps(trainer, 600)
        kept = [c for c in original.checkpoints if c["kind"] == "periodic"]
        assert 3 < len(kept) < 30
        costs = dict(zip(original.history["step"].tolist(), original.history["cost"].tolist(),
                         strict=True))
        for checkpoint in kept[:-1]:
            trainer.rollback(checkpoint["id"])
            replay = run_steps(trainer, 5).history
            expected = [costs[checkpoint["step"] + k] for k in range(1, 6)]
            assert replay["cost"][-5:].tolist() == expected, checkpoint["id"]
    before = trainer.snapshot()  # stopped: its final checkpoint listed
    with Trainer.open(tmp_path) as reopened:
        after = reopened.snapshot()
        assert after.checkpoints == before.checkpoints and after.damaged == ()
        for number, branch in before.branches.items():
            np.testing.assert_array_equal(after.branches[number]["history"]["cost"],
                                          branch["history"]["cost"])


def test_periodic_checkpoints_are_paced_by_time(tmp_path):
    config = RunConfig(**{**SMALL, "checkpoint_every": 5, "retention": {
        "keep_last": None, "min_seconds": 0.25, "save_best": False}})
    with Trainer(config, tmp_path) as trainer:
        trainer.update(speed_limit=200)
        began = time.monotonic()
        trainer.start()
        time.sleep(2.0)
        trainer.pause()
        seconds = time.monotonic() - began
        snap = trainer.snapshot()
    times = [c["time"] for c in snap.checkpoints if c["kind"] == "periodic"]
    due = snap.step // 5  # without the pace, one every 5 steps
    assert len(times) >= 2 and len(times) <= seconds / 0.25 + 1 < due, (snap.step, len(times))
    assert min(np.diff(times)) >= 0.25


def test_the_retention_policy_is_a_live_setting_kept_across_restarts(tmp_path):
    with Trainer(RunConfig(**{**SMALL, "checkpoint_every": 10, "retention": {
            "keep_last": None, "min_seconds": 0, "save_best": False}}), tmp_path) as trainer:
        run_steps(trainer, 200)
        assert len([c for c in trainer.snapshot().checkpoints if c["kind"] == "periodic"]) == 20
        trainer.update(retention={"keep_last": 2, "keep_log_spaced": False, "keep_best": 0,
                                  "min_seconds": 0, "save_best": False})
        snap = trainer.snapshot()
        assert len([c for c in snap.checkpoints if c["kind"] == "periodic"]) == 2
        assert snap.retention["keep_last"] == 2
        assert snap.events[-1]["kind"] == "retention" and len(snap.events[-1]["removed"]) == 18
    with Trainer.open(tmp_path) as reopened:
        assert reopened.snapshot().retention["keep_last"] == 2


def _curve_summary(history) -> tuple:
    """What a chart of the whole curve shows: steps covered, the overall mean, the lowest
    and highest cost, and the exact newest rows."""
    counts = np.asarray(history["buckets/count"])
    covered = int(counts.sum()) + len(history["step"])
    mean = (float(np.sum(history["buckets/cost"] * counts)) + float(np.sum(history["cost"])))
    low = min([*history["buckets/cost/min"], *history["cost"]])
    high = max([*history["buckets/cost/max"], *history["cost"]])
    return covered, mean / covered, low, high, tuple(history["step"]), tuple(history["cost"])


def test_long_histories_are_bucketed_journals_compacted_and_reopen_the_same(
        tmp_path, monkeypatch):
    """The limits scaled down 500×: exact rows for the newest 200 steps, at most 50 buckets,
    journal files merged above 6 per branch; a run of 3,500 steps on two branches."""
    from dlcore import branches, history, run

    monkeypatch.setattr(history, "EXACT_STEPS", 200)
    monkeypatch.setattr(history, "BUCKET_BLOCK", 100)
    monkeypatch.setattr(history, "MAX_BUCKETS", 50)
    monkeypatch.setattr(branches, "COMPACT_ABOVE", 6)
    monkeypatch.setattr(branches, "COMPACT_KEEP", 2)
    monkeypatch.setattr(run, "MAX_UNJOURNALLED_STEPS", 100)
    config = RunConfig(**{**SMALL, "checkpoint_every": 50, "retention": {
        "keep_last": 3, "min_seconds": 0, "save_best": False}})
    with Trainer(config, tmp_path) as trainer:
        snap = run_steps(trainer, 2000)
        assert len(snap.history["step"]) <= 300 and 0 < len(snap.history["buckets/step"]) <= 50
        assert int(snap.history["buckets/count"].sum()) + len(snap.history["step"]) == 2000
        fork = [c["id"] for c in snap.checkpoints if c["kind"] == "periodic"][-2]
        trainer.rollback(fork)
        run_steps(trainer, 1500)
        journal_files = len(list(trainer.run_dir.glob("journal/*.npz")))
    before = trainer.snapshot()
    assert journal_files <= 2 * (branches.COMPACT_ABOVE + 1)
    # spikes stay visible: every bucket's max is at least its mean
    buckets = before.history
    assert np.all(buckets["buckets/cost/max"] >= buckets["buckets/cost"] - 1e-12)
    with Trainer.open(tmp_path) as reopened:
        after = reopened.snapshot()
        assert after.damaged == () and after.step == before.step
        for number, branch in before.branches.items():
            again = after.branches[number]["history"]
            assert _curve_summary(again)[:4] == pytest.approx(
                _curve_summary(branch["history"])[:4], rel=1e-9)
            assert _curve_summary(again)[4:] == _curve_summary(branch["history"])[4:]
            np.testing.assert_array_equal(again["dev_accuracy"],
                                          branch["history"]["dev_accuracy"])
        assert [e["kind"] for e in after.events] == [e["kind"] for e in before.events]
        assert run_steps(reopened, 10).step == before.step + 10
