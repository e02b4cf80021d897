"""A caviar trial without Ray: the plan's checks, the training (the live run's very step),
resuming, the trial file."""

from __future__ import annotations

import numpy as np
import pytest

from dlcore.caviar_trial import (
    Plan,
    fresh_state,
    read_trial_file,
    train_trial,
    write_trial_file,
)
from dlcore.checkpoint import CheckpointError
from dlcore.data import prepare_dataset
from dlcore.search_space import Dimension, SearchSpace
from dlcore.trainer import RunConfig, Trainer
from tests.test_trainer import run_steps

SPACE = SearchSpace((Dimension("lr", 1e-4, 1e-1), Dimension("batch_size", 16, 64)))
CONFIG = RunConfig(hidden=(32, 16), keep_prob=0.9, eval_every=1000)


@pytest.fixture(scope="module")
def digits():
    return prepare_dataset("digits", seed=CONFIG.seed)


@pytest.mark.parametrize(("changes", "says"), [
    ({"trials": 0}, "at least one trial"),
    ({"trials": 2.5}, "number of trials must be a whole number"),
    ({"budget": -1}, "budget per trial must be a number > 0"),
    ({"budget": 10.5}, "a budget in steps must be whole"),
    ({"unit": "minutes"}, "budget unit must be one of"),
    ({"algorithm": "grid"}, "algorithm must be one of"),
    ({"grace": 1000}, "grace period must be in"),
    ({"reduction_factor": 1}, "reduction factor η must be a whole number between 2 and 10"),
])
def test_a_bad_plan_says_what_is_wrong(changes, says):
    with pytest.raises(ValueError, match=says):
        Plan(SPACE, **{"trials": 4, "budget": 100, **changes})


def test_budget_rungs_and_epochs():
    plan = Plan(SPACE, trials=4, budget=900, evaluations=9, reduction_factor=3)
    assert plan.grace_period == 100 and plan.rungs() == [100, 300]
    assert plan.steps_for(batch_size=64, n_train=1437) == (900, 100)
    epochs = Plan(SPACE, trials=4, budget=2, unit="epochs", evaluations=4)
    assert epochs.steps_for(batch_size=64, n_train=1437) == (44, 11)  # 22 batches an epoch
    assert epochs.progress(22, 64, 1437) == 1.0
    assert Plan.from_dict(plan.to_dict()) == plan


def test_a_trial_trains_exactly_like_a_live_run(digits, tmp_path):
    plan = Plan(SPACE, trials=1, budget=60, evaluations=3)
    point = {"lr": 3e-3, "batch_size": 32}
    config = SPACE.config_for(CONFIG, point)
    reports = list(train_trial(config, digits, plan))
    assert [r.metrics["step"] for r in reports] == [20, 40, 60]
    assert all(r.metrics["diverged"] == "" for r in reports)
    assert 0 < reports[-1].metrics["dev_accuracy"] <= 1
    history = reports[-1].history
    assert list(history["eval_step"]) == [20, 40, 60] and len(history["step"]) == 60
    # the live run of the same config, 60 steps: the same state, bit for bit
    with Trainer(config, tmp_path) as trainer:
        run_steps(trainer, 60)
        live, _ = trainer.export_state()
    trial, _ = reports[-1].state
    assert live.keys() == trial.keys()
    for key in live:
        np.testing.assert_array_equal(trial[key], live[key], err_msg=key)


def test_a_resumed_trial_ends_where_an_uninterrupted_one_does(digits):
    plan = Plan(SPACE, trials=1, budget=40, evaluations=2)
    config = SPACE.config_for(CONFIG, {"lr": 3e-3, "batch_size": 32})
    whole = list(train_trial(config, digits, plan))
    first = whole[0]
    resumed = list(train_trial(config, digits, plan, resume=(*first.state, first.history)))
    assert [r.metrics["step"] for r in resumed] == [40]
    for key, value in whole[-1].state[0].items():
        np.testing.assert_array_equal(resumed[-1].state[0][key], value, err_msg=key)
    np.testing.assert_array_equal(resumed[-1].history["cost"], whole[-1].history["cost"])


def test_a_diverging_trial_says_so_and_keeps_no_state(digits):
    plan = Plan(SPACE, trials=1, budget=200, evaluations=2)
    config = SPACE.config_for(RunConfig(optimizer="gd", batchnorm=False), {"lr": 1e4})
    reports = list(train_trial(config, digits, plan))
    assert reports[-1].metrics["diverged"] and reports[-1].state is None
    assert reports[-1].metrics["step"] < 200


def test_the_trial_file_round_trips_and_refuses_damage(digits, tmp_path):
    state = fresh_state(CONFIG, digits)
    history = {"step": np.arange(3), "cost": np.ones(3)}
    path = tmp_path / "trial-0001.npz"
    write_trial_file(path, state, history, {"trial": 1, "point": {"lr": 0.01}})
    (arrays, meta), read_history, info = read_trial_file(path)
    assert arrays.keys() == state[0].keys() and meta == state[1]
    np.testing.assert_array_equal(read_history["cost"], history["cost"])
    assert info == {"trial": 1, "point": {"lr": 0.01}}
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="trial-0001.npz"):
        read_trial_file(path)
