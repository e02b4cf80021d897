"""Hours-long sessions: periodic checkpoints thinned by the retention policy, paced by
time, the best kept; a rollback to any kept checkpoint still replays exactly."""

from __future__ import annotations

import time

import numpy as np

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
        trainer.start()
        time.sleep(2.0)
        trainer.pause()
        snap = trainer.snapshot()
    times = [c["time"] for c in snap.checkpoints if c["kind"] == "periodic"]
    assert snap.step > 150 and 3 <= len(times) <= 10, (snap.step, len(times))
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
