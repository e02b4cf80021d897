"""Real data at real size in the engine: evaluations on a sample and within a time budget,
data files read where they are (fingerprinted) or copied, under their own names."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dlcore import loop
from dlcore.trainer import RunConfig, Trainer
from tests.test_reliability import run_steps

BIG = dict(dataset="blobs", dataset_params={"n_samples": 30_000, "n_features": 4},
           hidden=(8,), eval_every=10, retention={"save_best": False})


def test_evaluations_of_a_large_set_use_a_sample_of_it(tmp_path):
    with Trainer(RunConfig(**BIG), tmp_path) as trainer:
        snap = run_steps(trainer, 10)
        assert snap.dataset["n_train"] == 24_000 and snap.dataset["n_dev"] == 6_000
        assert snap.dataset["train_evaluated"] == loop.EVAL_ROWS
        assert snap.dataset["dev_evaluated"] == 6_000
        X, y, X_dev, _ = loop.evaluation_sample(trainer.data)
        assert X.base is not None or X is trainer.data.X_train  # a view, not a copy
        assert np.bincount(y).min() > 0.2 * len(y) / trainer.data.n_classes  # a fair sample


def test_evaluations_take_at_most_a_tenth_of_the_training_time(tmp_path, monkeypatch):
    real = loop.evaluate

    def slow(state, data):  # an evaluation as costly as on a 60,000-row set
        time.sleep(0.1)
        return real(state, data)

    monkeypatch.setattr(loop, "evaluate", slow)
    config = RunConfig(dataset="blobs", hidden=(8,), eval_every=2,
                       retention={"save_best": False})
    with Trainer(config, tmp_path) as trainer:
        trainer.update(speed_limit=200)
        trainer.start()
        time.sleep(3.0)
        trainer.pause()
        snap = trainer.snapshot()
    evaluated = len(snap.history["eval_step"]) - 1  # the one at step 0 came before
    assert snap.step > 200
    assert 2 <= evaluated <= 0.15 * 3.0 / 0.1 + 1, evaluated  # ≤ ~10 % of 3 s
    assert all(s % 2 == 0 for s in snap.history["eval_step"])


def test_a_data_file_read_in_place_is_fingerprinted_and_a_changed_one_refused(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "data" / "iris-like.csv"
    data.parent.mkdir()
    rows = [f"{a:.3f},{b:.3f},{'setosa' if a > 0 else 'virginica'}"
            for a, b in rng.normal(size=(200, 2))]
    data.write_text("a,b,species\n" + "\n".join(rows) + "\n")
    config = RunConfig(dataset=str(data), copy_data=False, hidden=(4,), eval_every=5)
    with Trainer(config, tmp_path / "runs", run_id="in-place") as trainer:
        snap = run_steps(trainer, 5)
        assert snap.dataset["name"] == "iris-like.csv"
        assert snap.dataset["class_names"] == ("setosa", "virginica")
        assert not list(trainer.run_dir.glob("dataset*"))  # not copied
    with Trainer.open(tmp_path / "runs", "in-place") as reopened:
        assert reopened.snapshot().step == 5
    data.write_text(data.read_text().replace("setosa", "versicolor", 1))
    with pytest.raises(ValueError, match="has changed since the run was created"):
        Trainer.open(tmp_path / "runs", "in-place")


def test_an_uploaded_file_is_copied_and_keeps_its_own_name(tmp_path):
    path = tmp_path / "my measurements.csv"
    rng = np.random.default_rng(1)
    path.write_text("x,y,label\n" + "\n".join(
        f"{a:.3f},{b:.3f},{int(a > b)}" for a, b in rng.normal(size=(100, 2))) + "\n")
    with Trainer(RunConfig(dataset=str(path), hidden=(4,)), tmp_path / "runs") as trainer:
        assert trainer.snapshot().dataset["name"] == "my measurements.csv"
        assert (trainer.run_dir / "dataset.csv").read_bytes() == path.read_bytes()
    path.unlink()  # the run keeps its own copy
    with Trainer.open(tmp_path / "runs") as reopened:
        assert reopened.snapshot().dataset["name"] == "my measurements.csv"


def test_a_run_json_asking_for_more_data_than_memory_is_refused_with_sizes(tmp_path):
    with Trainer(RunConfig(dataset="blobs", hidden=(4,)), tmp_path, run_id="r"):
        pass
    run_json = tmp_path / "r" / "run.json"
    huge = '"dataset_params": {"n_samples": 1000000000000}'
    run_json.write_text(run_json.read_text().replace('"dataset_params": {}', huge))
    with pytest.raises(ValueError, match=r"needs about .* of memory .* only .* available"):
        Trainer.open(tmp_path, "r")

