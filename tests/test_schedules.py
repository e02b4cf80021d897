"""dlcore.schedules against their formulas, written out by hand."""

import json
import math
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose

from dlcore.schedules import SCHEDULES, make_schedule, preview, schedule_formula

ALPHA0 = 0.2
EPOCHS = [0, 0.5, 1, 2, 3, 7.5, 10, 19.99, 20, 99, 100, 250]


@pytest.mark.parametrize(
    "name, params, formula",
    [
        ("constant", {}, lambda a, e: a),
        (
            "inverse_time",
            {"decay_rate": 0.5, "interval": 3},
            lambda a, e: a / (1 + 0.5 * math.floor(e / 3)),
        ),
        ("exponential", {"base": 0.9}, lambda a, e: a * 0.9**e),
        ("inverse_sqrt", {"k": 2.0}, lambda a, e: a * 2.0 / math.sqrt(max(e, 1))),
        ("staircase", {"factor": 0.1, "every": 5}, lambda a, e: a * 0.1 ** math.floor(e / 5)),
        (
            "polynomial",
            {"end": 0.01, "total": 50, "power": 2.0},
            lambda a, e: (a - 0.01) * (1 - min(e, 50) / 50) ** 2 + 0.01,
        ),
    ],
)
def test_schedule_matches_its_formula(name, params, formula):
    schedule = make_schedule(name, **params)
    for epoch in EPOCHS:
        assert_allclose(schedule(ALPHA0, epoch), formula(ALPHA0, epoch), rtol=1e-14)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("constant", {}),
        ("inverse_time", {"decay_rate": 1.0, "interval": 1}),
        ("exponential", {"base": 0.95}),
        ("inverse_sqrt", {"k": 1.0}),
        ("staircase", {"factor": 0.5, "every": 10}),
        ("polynomial", {"end": 0.0, "total": 100, "power": 1.0}),
    ],
)
def test_defaults(name, expected):
    assert make_schedule(name).params == expected


def test_default_values_by_hand():
    assert make_schedule("inverse_time")(1.0, 3) == 1 / 4
    assert make_schedule("exponential")(1.0, 2) == pytest.approx(0.95**2)
    assert make_schedule("inverse_sqrt")(1.0, 4) == 0.5
    assert make_schedule("staircase")(1.0, 25) == 0.25
    assert make_schedule("polynomial")(1.0, 25) == 0.75


def test_every_schedule_starts_at_alpha0():
    for name in SCHEDULES:
        assert make_schedule(name)(ALPHA0, 0) == pytest.approx(ALPHA0), name


def test_inverse_sqrt_holds_k_alpha0_before_epoch_one():
    schedule = make_schedule("inverse_sqrt", k=0.5)
    assert schedule(ALPHA0, 0) == schedule(ALPHA0, 0.3) == schedule(ALPHA0, 1) == 0.5 * ALPHA0


def test_polynomial_stays_at_end_after_total():
    schedule = make_schedule("polynomial", end=0.001, total=10)
    assert schedule(ALPHA0, 10) == schedule(ALPHA0, 1000) == 0.001


def test_fractional_interval_is_accepted():
    schedule = make_schedule("staircase", factor=0.5, every=0.5)
    assert schedule(1.0, 1.2) == 0.25


@pytest.mark.parametrize("name", SCHEDULES)
def test_params_round_trip_through_json(name):
    original = make_schedule(name)
    rebuilt = make_schedule(original.name, **json.loads(json.dumps(original.params)))
    assert rebuilt == original
    assert rebuilt.params == original.params
    for epoch in EPOCHS:
        assert rebuilt(ALPHA0, epoch) == original(ALPHA0, epoch)


def test_params_is_a_copy():
    schedule = make_schedule("staircase")
    schedule.params["factor"] = 0.9
    assert schedule.params["factor"] == 0.5


@pytest.mark.parametrize(
    "name, params, shown",
    [
        ("inverse_time", {"decay_rate": -0.1}, "-0.1"),
        ("inverse_time", {"interval": 0}, "interval must be > 0, got 0"),
        ("exponential", {"base": 1.5}, "1.5"),
        ("exponential", {"base": 0.0}, "0.0"),
        ("inverse_sqrt", {"k": 0.0}, "0.0"),
        ("staircase", {"factor": 2.0}, "2.0"),
        ("staircase", {"every": -5}, "-5"),
        ("polynomial", {"end": -0.01}, "-0.01"),
        ("polynomial", {"total": 0}, "0"),
        ("polynomial", {"power": 0.0}, "0.0"),
        ("polynomial", {"power": math.nan}, "nan"),
        ("exponential", {"base": math.inf}, "inf"),
        ("exponential", {"base": "0.9"}, "'0.9'"),
        ("exponential", {"rate": 0.9}, "rate"),
        ("constant", {"base": 0.9}, "base"),
        ("cosine", {}, "'cosine'"),
    ],
)
def test_invalid_parameters_raise_naming_the_value(name, params, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        make_schedule(name, **params)


@pytest.mark.parametrize(
    "alpha0, epoch, shown",
    [(ALPHA0, -1, "-1"), (ALPHA0, math.nan, "nan"), (0.0, 1, "0.0"), (-0.1, 1, "-0.1")],
)
def test_invalid_call_arguments_raise(alpha0, epoch, shown):
    with pytest.raises(ValueError, match=re.escape(shown)):
        make_schedule("exponential")(alpha0, epoch)


def test_schedule_formula_is_latex_for_every_schedule():
    for name in SCHEDULES:
        assert r"\alpha" in schedule_formula(name), name
    assert "decay" in schedule_formula("inverse_time")
    with pytest.raises(ValueError, match="cosine"):
        schedule_formula("cosine")


def test_preview_gives_alpha_at_each_epoch():
    schedule = make_schedule("staircase", factor=0.5, every=2)
    curve = preview(schedule, 1.0, 6)
    assert curve.shape == (6,)
    assert_allclose(curve, [1, 1, 0.5, 0.5, 0.25, 0.25])
    assert preview(schedule, 1.0, 0).shape == (0,)
    with pytest.raises(ValueError, match="-3"):
        preview(schedule, 1.0, -3)


def test_preview_of_decaying_schedules_never_increases():
    for name in SCHEDULES:
        curve = preview(make_schedule(name), ALPHA0, 200)
        assert np.all(np.diff(curve) <= 0), name
        assert np.all(curve >= 0), name
