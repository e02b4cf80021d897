"""dlcore.schedules against their formulas, written out by hand."""

import json
import math
import re

import numpy as np
import pytest
from numpy.testing import assert_allclose

from dlcore.schedules import SCHEDULES, make_schedule, preview, schedule_formula
from tests.latex_width import line_widths

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
        (
            "piecewise",
            {"boundaries": (3, 7.5, 20), "factors": (1.0, 0.5, 0.2, 0.05)},
            lambda a, e: a * (1.0 if e < 3 else 0.5 if e < 7.5 else 0.2 if e < 20 else 0.05),
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
        ("piecewise", {"boundaries": [10.0, 20.0], "factors": [1.0, 0.1, 0.01]}),
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
    assert make_schedule("piecewise")(1.0, 15) == 0.1


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
    assert original.params == json.loads(json.dumps(original.params))  # JSON-native
    rebuilt = make_schedule(original.name, **json.loads(json.dumps(original.params)))
    assert rebuilt == original
    assert hash(rebuilt) == hash(original)
    assert rebuilt.params == original.params
    for epoch in EPOCHS:
        assert rebuilt(ALPHA0, epoch) == original(ALPHA0, epoch)


def test_params_is_a_copy():
    schedule = make_schedule("staircase")
    schedule.params["factor"] = 0.9
    assert schedule.params["factor"] == 0.5
    piecewise = make_schedule("piecewise")
    piecewise.params["factors"][0] = 0.5
    assert piecewise.params["factors"][0] == 1.0 and piecewise(1.0, 0) == 1.0


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_is_affine_in_alpha0(name):
    """The trainer re-anchors a schedule from its values at α0 = 1 and 2."""
    schedule = make_schedule(name)
    for epoch in EPOCHS:
        at_one, at_two = schedule(1.0, epoch), schedule(2.0, epoch)
        for alpha0 in (0.003, 0.5, 7.0):
            expected = at_one + (alpha0 - 1.0) * (at_two - at_one)
            assert schedule(alpha0, epoch) == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_piecewise_intervals_are_closed_on_the_left():
    schedule = make_schedule("piecewise", boundaries=[10, 20], factors=[1.0, 0.1, 0.01])
    assert [schedule(2.0, e) for e in (0, 9.999, 10, 10.5, 19.999, 20, 1e6)] == [
        2.0, 2.0, 0.2, 0.2, 0.2, 0.02, 0.02]
    assert make_schedule("piecewise", boundaries=[0.5], factors=[1.0, 0.5])(1.0, 0.5) == 0.5


def test_piecewise_accepts_any_sequence_and_stores_floats():
    expected = make_schedule("piecewise", boundaries=[10.0, 20.0], factors=[1.0, 0.1, 0.01])
    for boundaries in ((10, 20), [10, 20], np.array([10, 20]), (np.int64(10), np.float32(20))):
        schedule = make_schedule("piecewise", boundaries=boundaries, factors=(1, 0.1, 0.01))
        assert schedule == expected and hash(schedule) == hash(expected)
        assert all(type(b) is float for b in schedule.params["boundaries"])
    assert len({expected, make_schedule("piecewise"), make_schedule("staircase")}) == 2
    assert eval(repr(expected), {"make_schedule": make_schedule}) == expected
    longest = list(range(1, 101))
    assert make_schedule("piecewise", boundaries=longest, factors=[1.0] * 101)(1.0, 50) == 1.0


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
        ("piecewise", {"boundaries": [10, 5], "factors": [1, 0.1, 0.01]}, "[10.0, 5.0]"),
        ("piecewise", {"boundaries": [10, 10], "factors": [1, 0.1, 0.01]}, "increasing"),
        ("piecewise", {"boundaries": [0, 10], "factors": [1, 0.1, 0.01]},
         "boundaries[0] must be > 0, got 0.0"),
        ("piecewise", {"boundaries": [-5], "factors": [1, 0.1]}, "-5"),
        ("piecewise", {"boundaries": [10, math.inf], "factors": [1, 0.1, 0.01]}, "inf"),
        ("piecewise", {"boundaries": [10, math.nan], "factors": [1, 0.1, 0.01]}, "nan"),
        ("piecewise", {"boundaries": [], "factors": [1.0]}, "got 0: []"),
        ("piecewise", {"boundaries": list(range(1, 102)), "factors": [1.0] * 102}, "101"),
        ("piecewise", {"boundaries": [10, 20], "factors": [1, 0.1]}, "= 3 values, got 2"),
        ("piecewise", {"boundaries": [10], "factors": [1, 0.1, 0.01]}, "= 2 values, got 3"),
        ("piecewise", {"factors": [1.0, 1.5, 0.1]}, "factors[1] must be in (0, 1], got 1.5"),
        ("piecewise", {"factors": [1.0, 0.0, 0.1]}, "factors[1] must be in (0, 1], got 0.0"),
        ("piecewise", {"boundaries": 10}, "boundaries must be a list of numbers, got 10"),
        ("piecewise", {"boundaries": "10, 20"}, "'10, 20'"),
        ("piecewise", {"boundaries": [10, "20"]}, "boundaries[1] must be a number, got '20'"),
        ("piecewise", {"boundaries": [[10, 20]], "factors": [1, 0.1]}, "[10, 20]"),
        ("piecewise", {"boundaries": [10, True]}, "True"),
        ("piecewise", {"every": 10}, "every"),
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
    assert r"\text{factors}" in schedule_formula("piecewise")
    assert max(line_widths(schedule_formula("piecewise"))) <= 45  # a narrow sidebar
    with pytest.raises(ValueError, match="cosine"):
        schedule_formula("cosine")


def test_preview_of_piecewise_steps_down_at_each_boundary():
    curve = preview(make_schedule("piecewise", boundaries=(2, 4), factors=(1, 0.5, 0.25)), 2.0, 6)
    assert_allclose(curve, [2, 2, 1, 1, 0.5, 0.5], rtol=0)


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


@pytest.mark.parametrize("name", ["inverse_time", "exponential", "staircase", "polynomial",
                                  "piecewise"])
@pytest.mark.parametrize("half_life", [1, 7, 1200.0, 3e5])
def test_half_life_params_halve_alpha_after_the_half_life(name, half_life):
    from dlcore.schedules import half_life_params

    schedule = make_schedule(name, **half_life_params(name, half_life))
    assert schedule(1.0, 0) == pytest.approx(1.0)
    assert schedule(1.0, half_life) == pytest.approx(0.5, rel=1e-9)
    assert schedule(1.0, 0.5 * half_life) > 0.5 - 1e-12


def test_preview_over_a_horizon_and_bad_half_lives():
    from dlcore.schedules import half_life_params, preview_over

    t, alpha = preview_over(make_schedule("exponential", base=0.5), 1.0, 4, points=5)
    np.testing.assert_allclose(t, [0, 1, 2, 3, 4])
    np.testing.assert_allclose(alpha, [1, 0.5, 0.25, 0.125, 0.0625])
    for bad in (0, -1, float("nan"), "10"):
        with pytest.raises(ValueError):
            half_life_params("exponential", bad)
    assert half_life_params("constant", 10) == {}
