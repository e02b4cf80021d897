"""Comparing runs: another run's curves read from its folder (``dlcore.reopen.read_curves``)
and the Checkpoints page's "Compare with another run" (AppTest)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from dlcore.reopen import read_curves
from dlcore.trainer import RunConfig, Trainer
from tests.test_pages import dataframe
from tests.test_trainer import SMALL, run_steps

CHECKPOINTS = "pages/2_Checkpoints.py"


def folder_state(run_dir):
    """Every file under a run folder with its size and modification time."""
    return {str(p.relative_to(run_dir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def assert_same_history(read, live):
    assert set(read) == set(live)
    for name, column in live.items():
        np.testing.assert_array_equal(read[name], column, err_msg=name)


def test_another_runs_curves_are_its_history_and_nothing_on_disk_changes(tmp_path):
    trainer = Trainer(RunConfig(**SMALL, checkpoint_every=30), tmp_path)
    run_steps(trainer, 70)
    trainer.update(lr=0.003)
    run_steps(trainer, 20)
    checkpoint = trainer.checkpoint("for comparison")
    before = folder_state(trainer.run_dir)
    curves = read_curves(tmp_path, trainer.run_id)
    snapshot = trainer.snapshot()
    assert folder_state(trainer.run_dir) == before  # read only: nothing written or removed
    assert curves.step == snapshot.step == 90 and curves.branch == snapshot.branch
    assert curves.hparams["lr"] == 0.003 and curves.config["hidden"] == (32, 16)
    assert_same_history(curves.history, snapshot.history)
    assert [e["kind"] for e in curves.events] == [e["kind"] for e in snapshot.events]
    assert not curves.damaged
    run_steps(trainer, 10)  # steps after the newest checkpoint are not on disk yet
    assert read_curves(tmp_path, trainer.run_id).step == 90
    trainer.stop()
    assert checkpoint


def test_another_runs_curves_follow_its_active_branch_after_a_rollback(tmp_path):
    trainer = Trainer(RunConfig(**SMALL), tmp_path)
    run_steps(trainer, 40)
    fork = trainer.checkpoint()
    run_steps(trainer, 40)
    trainer.rollback(fork, lr=0.01)
    run_steps(trainer, 20)
    trainer.stop()  # its final checkpoint: the new branch at step 60, just evaluated
    reopened = Trainer.open(tmp_path, trainer.run_id)
    curves = read_curves(tmp_path, trainer.run_id)
    assert curves.step == 60 and curves.branch == reopened.snapshot().branch == 1
    assert_same_history(curves.history, reopened.snapshot().history)
    reopened.stop()


def test_damaged_files_are_left_out_and_a_run_without_checkpoints_is_refused(tmp_path):
    trainer = Trainer(RunConfig(**SMALL), tmp_path)
    run_steps(trainer, 30)
    trainer.checkpoint()
    trainer.stop()
    newest = sorted(trainer.run_dir.glob("ckpt-*.npz"))[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # torn
    journal = sorted((trainer.run_dir / "journal").glob("*.npz"))[0]
    journal.write_bytes(b"not a zip")
    curves = read_curves(tmp_path, trainer.run_id)
    assert {d["file"] for d in curves.damaged} == {newest.name, f"journal/{journal.name}"}
    assert curves.step <= 30  # the newest readable checkpoint
    for path in trainer.run_dir.glob("ckpt-*.npz"):
        path.unlink()
    with pytest.raises(ValueError, match="no readable checkpoint"):
        read_curves(tmp_path, trainer.run_id)
    with pytest.raises(ValueError, match="may only hold"):
        read_curves(tmp_path, "../elsewhere")


def test_a_journal_newer_than_the_newest_checkpoint_is_ignored_and_kept(tmp_path):
    """What a crash between a journal chunk and its checkpoint leaves: reopening drops
    it, a reader of another run must not (that run may be writing its checkpoint)."""
    trainer = Trainer(RunConfig(**SMALL), tmp_path)
    run_steps(trainer, 30)
    trainer.checkpoint()
    trainer.stop()
    journals = sorted((trainer.run_dir / "journal").glob("*.npz"))
    ahead = journals[-1].with_name("999999.npz")
    shutil.copy(journals[-1], ahead)
    curves = read_curves(tmp_path, trainer.run_id)
    assert curves.step == 30 and not curves.damaged and ahead.exists()


def test_files_removed_while_reading_are_not_damage(tmp_path, monkeypatch):
    """The other run may be training: its retention and journal compaction remove files
    between the listing and the read. Those are gone, not damaged."""
    from dlcore.store import RunStore

    trainer = Trainer(RunConfig(**SMALL), tmp_path)
    run_steps(trainer, 30)
    trainer.checkpoint()
    trainer.stop()
    listed = {name: getattr(RunStore, name) for name in ("checkpoint_files", "journal_files")}
    for name, files in listed.items():
        monkeypatch.setattr(RunStore, name, lambda self, files=files: [
            self.dir / "gone" / "ckpt-000000.npz", *files(self)])
    curves = read_curves(tmp_path, trainer.run_id)
    assert curves.step == 30 and curves.damaged == ()


def test_another_runs_columns_are_known_without_building_its_network():
    """read_curves takes the history's layout from the architecture alone: a damaged or
    foreign checkpoint claiming 10^9 inputs allocates nothing."""
    from dlcore.history import Schemas
    from dlcore.network import Architecture, Network

    for kwargs in ({}, {"batchnorm": False}, {"bn_position": "after"}, {"hidden": (5,)}):
        arch = Architecture(**{"n_features": 7, "hidden": (6, 4), "n_classes": 3, **kwargs})
        built, known = Schemas.of(Network(arch)), Schemas.of_architecture(arch)
        assert (known.steps, known.evals, known.bn, known.optional) == (
            built.steps, built.evals, built.bn, built.optional)
    huge = Schemas.of_architecture(Architecture(n_features=10**9, hidden=(10**8,),
                                                n_classes=10))
    assert huge.bn["bn1/running_mean"][1] == (10**8,)


# -- the page ------------------------------------------------------------------------


def other_run(panda, **overrides):
    """A second run in the app's folder, trained 60 steps and stopped."""
    trainer = Trainer(RunConfig(**{**SMALL, **overrides}), panda.checkpoint_dir)
    run_steps(trainer, 60)
    trainer.stop()
    return trainer.run_id


def test_the_checkpoints_page_compares_this_run_with_another(panda):
    at = panda.run(CHECKPOINTS)
    assert any("only run" in c.value for c in at.caption)
    panda.trainer().step(20)
    this = panda.wait_for(lambda s: s.step == 20 and s.status == "paused")
    other = other_run(panda, hidden=(24,), lr=0.004)
    at.run()
    choice = at.selectbox(key="compare_run")
    assert choice.options[0].startswith(other) and "hidden (24)" in choice.options[0]
    choice.select(other).run()
    assert not at.exception
    charts = panda.charts(at)
    names = [t["name"] for t in charts["compare_runs_cost"]["data"]]
    assert names == [f"this run ({this.run_id})", other]
    theirs = charts["compare_runs_accuracy"]["data"][1]
    assert panda.values(theirs["x"]) == list(range(0, 61, 10))  # evaluated every 10 steps
    settings = dataframe(at, "setting")
    differing = dict(zip(settings["setting"], settings[other], strict=True))
    assert differing["hidden"] == "(24)" and differing["α"] == "0.004"
    at.segmented_control(key="compare_run_axis").set_value("epoch").run()
    x = panda.values(panda.charts(at)["compare_runs_cost"]["data"][1]["x"])
    assert x[-1] < 60 and x == sorted(x)  # fractional epochs, not steps
    assert not at.exception


def test_a_run_that_cannot_be_read_is_reported_and_the_page_stays(panda):
    panda.run(CHECKPOINTS)
    other = other_run(panda)
    at = panda.run(CHECKPOINTS)
    for path in (panda.checkpoint_dir / other).glob("ckpt-*.npz"):
        path.write_bytes(b"torn")
    at.selectbox(key="compare_run").select(other).run()
    assert not at.exception
    assert any(f"{other} can't be read" in e.value and "no readable checkpoint" in e.value
               for e in at.error)
    assert at.dataframe  # the rest of the page is there


def test_a_run_of_one_step_is_drawn_on_every_axis():
    from pages.panels import compare_runs

    history = {"step": np.array([1]), "epoch": np.array([0], np.int32),
               "time": np.array([1.7e9])}
    for axis in compare_runs.AXES:
        x = compare_runs.on_axis(history, np.array([1]), axis)
        assert x is not None and len(x) == 1, axis


def test_a_run_with_no_checkpoint_on_disk_can_still_be_compared(panda):
    at = panda.run(CHECKPOINTS)
    other = other_run(panda)
    for path in panda.trainer().run_dir.glob("ckpt-*.npz"):
        path.unlink()  # this run's own checkpoints: gone
    at = panda.run(CHECKPOINTS)
    at.selectbox(key="compare_run").select(other).run()
    assert not at.exception
    assert other in [t["name"] for t in panda.charts(at)["compare_runs_cost"]["data"]]
