"""The caviar search space: order of importance, scales, checks, coarse to fine."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from dlcore.hparams import RunConfig
from dlcore.search_space import (
    HYPERPARAMETERS,
    Dimension,
    SearchSpace,
    same_architecture,
)
from dlcore.state import TrainingState


class AskingTrial:
    """An Optuna-like trial that answers the middle of each range and records the asks."""

    def __init__(self):
        self.asked = []

    def suggest_float(self, name, low, high, log=False):
        self.asked.append((name, low, high, log))
        return math.sqrt(low * high) if log else (low + high) / 2

    def suggest_int(self, name, low, high):
        self.asked.append((name, low, high, False))
        return (low + high) // 2


def test_defaults_follow_the_course_order_of_importance():
    space = SearchSpace.for_run(RunConfig(), n_train=1437)
    names = [d.name for d in space.dimensions]
    assert names == ["lr", "beta", "hidden_units", "batch_size", "layers", "decay_rate", "l2"]
    assert [HYPERPARAMETERS[n].tier for n in names] == [1, 2, 2, 2, 3, 3, 3]
    assert [d.name for d in space.searched] == ["lr", "beta", "hidden_units", "batch_size"]
    assert space["lr"].describe() == "10^r, r ∈ [-4, -1]"
    assert space["beta"].describe() == "1 − 10^r, r ∈ [-3, -1]"
    assert space["batch_size"].describe() == "2^k, k ∈ {4, …, 8}"


def test_defaults_fit_the_run():
    gd = SearchSpace.for_run(RunConfig(optimizer="gd"), n_train=1437)
    assert "beta" not in [d.name for d in gd.dimensions]  # gradient descent has no β
    tiny = SearchSpace.for_run(RunConfig(), n_train=100)
    assert (tiny["batch_size"].low, tiny["batch_size"].high) == (16, 64)


@pytest.mark.parametrize(("name", "low", "high", "says"), [
    ("lr", 0.0, 1e-1, "α (learning rate): a log-scale range must be positive"),
    ("lr", 1e-2, 1e-3, "α (learning rate): low must be < high"),
    ("beta", 0.9, 1.0, "β (momentum, Adam's β₁): a beta range must lie in [0, 1)"),
    ("batch_size", 16, 100, "mini-batch size: low and high must be powers of two"),
    ("layers", 0, 3, "hidden layers: need whole numbers 1 ≤ low ≤ high"),
    ("lr", float("nan"), 1.0, "α (learning rate): low must be a finite number"),
    ("hidden_units", 16, 8192, "hidden units (per layer): at most 4096"),
])
def test_bad_ranges_say_which_hyperparameter_and_why(name, low, high, says):
    with pytest.raises(ValueError, match="^" + re.escape(says)):
        Dimension(name, low, high)


def test_a_space_needs_something_to_search_and_batches_that_fit():
    space = SearchSpace((Dimension("lr", 1e-4, 1e-1, searched=False),))
    with pytest.raises(ValueError, match="at least one hyperparameter"):
        space.check_for(RunConfig(), 1437)
    space = SearchSpace((Dimension("batch_size", 16, 2048),))
    with pytest.raises(ValueError, match="at most the 1437 training examples"):
        space.check_for(RunConfig(), 1437)


def test_random_points_are_reproducible_and_on_the_right_scales():
    space = SearchSpace((Dimension("lr", 1e-4, 1.0), Dimension("beta", 0.9, 0.999),
                         Dimension("hidden_units", 16, 256), Dimension("layers", 1, 3)))
    points = space.sample(4000, seed=7)
    assert space.sample(5, seed=7) == space.sample(5, seed=7)
    alphas = np.array([p["lr"] for p in points])
    # every decade of α gets about a quarter of the draws (uniform would put 90% in the top)
    shares = np.histogram(np.log10(alphas), bins=[-4, -3, -2, -1, 0])[0] / len(alphas)
    assert np.all(np.abs(shares - 0.25) < 0.03), shares
    betas = np.array([p["beta"] for p in points])
    assert abs(np.mean(betas < 0.99) - 0.5) < 0.03  # [0.9, 0.99] and [0.99, 0.999] halve
    assert {p["hidden_units"] for p in points} == {16, 32, 64, 128, 256}
    assert {p["layers"] for p in points} == {1, 2, 3}


def test_optuna_is_asked_on_the_same_scales():
    space = SearchSpace((Dimension("lr", 1e-4, 1e-2), Dimension("beta", 0.9, 0.999),
                         Dimension("batch_size", 16, 64), Dimension("layers", 1, 3)))
    trial = AskingTrial()
    point = space.suggest(trial)
    assert trial.asked == [("lr", 1e-4, 1e-2, True),
                           ("1 - beta", pytest.approx(1e-3), pytest.approx(0.1), True),
                           ("log2 batch_size", 4, 6, False), ("layers", 1, 3, False)]
    assert point == {"lr": pytest.approx(1e-3), "beta": pytest.approx(0.99),
                     "batch_size": 32, "layers": 2}


def test_coarse_to_fine_narrows_around_the_best_points():
    space = SearchSpace((Dimension("lr", 1e-5, 1.0), Dimension("beta", 0.9, 0.999),
                         Dimension("batch_size", 16, 256), Dimension("l2", 1e-5, 1e-1, False)))
    points = [{"lr": 1e-3, "beta": 0.95, "batch_size": 32},
              {"lr": 3e-3, "beta": 0.99, "batch_size": 64},
              {"lr": 1e-5, "beta": 0.9, "batch_size": 256},
              {"lr": 0.5, "beta": 0.999, "batch_size": 16}]
    narrowed = space.narrowed(points, [0.95, 0.96, 0.1, float("nan")], best=2)
    lr, beta, batch = narrowed["lr"], narrowed["beta"], narrowed["batch_size"]
    assert 1e-5 < lr.low <= 1e-3 and 3e-3 <= lr.high < 1.0
    assert 0.9 <= beta.low <= 0.95 and 0.99 <= beta.high < 0.999  # clipped at 0.9
    assert (batch.low, batch.high) == (16, 128)  # exponents 5..6 widened, rounded outward
    assert narrowed["l2"] == space["l2"]  # not searched: unchanged
    with pytest.raises(ValueError, match="no trial has a dev accuracy"):
        space.narrowed(points, [None, None, float("nan"), None], best=2)


def test_a_point_becomes_the_trials_config():
    base = RunConfig(hidden=(64, 32), optimizer="adam")
    space = SearchSpace.for_run(base, 1437)
    point = {"lr": 0.01, "beta": 0.95, "hidden_units": 128, "batch_size": 32,
             "decay_rate": 0.1, "l2": 1e-4}
    config = space.config_for(base, point)
    assert config.lr == 0.01 and config.optimizer_params == {"beta1": 0.95}
    assert config.hidden == (128, 128) and config.batch_size == 32 and config.l2 == 1e-4
    assert (config.schedule, config.schedule_params) == ("inverse_time", {"decay_rate": 0.1})
    assert not same_architecture(config, base)
    momentum = space.config_for(RunConfig(optimizer="momentum"), {"beta": 0.8})
    assert momentum.initial_hparams()["beta"] == 0.8
    deeper = space.config_for(base, {"layers": 3})
    assert deeper.hidden == (64, 32, 32)
    same = space.config_for(base, {"lr": 0.01, "beta": 0.95, "batch_size": 32})
    assert same_architecture(same, base)


def test_the_trials_config_trains(digits):
    space = SearchSpace.for_run(RunConfig(), len(digits.y_train))
    for point in space.sample(3, seed=0):
        TrainingState.fresh(space.config_for(RunConfig(), point), digits)


def test_a_space_round_trips_through_json():
    space = SearchSpace.for_run(RunConfig(), 1437)
    assert SearchSpace.from_dict(space.to_dict()) == space
    with pytest.raises(ValueError, match="not a search space"):
        SearchSpace.from_dict({"dimensions": [{"name": "lr"}]})


@pytest.fixture(scope="module")
def digits():
    from dlcore.data import prepare_dataset

    return prepare_dataset("digits")
