"""Property-based: update(**hparams) with any keys and values applies whole or not at all.

For arbitrary keys (known, unknown, odd) and values (floats with nan/inf/negative/huge,
huge ints, text, None, bools, dicts, lists, numpy scalars), ``update`` either raises
ValueError with a message, and then nothing changed (hyperparameters, events,
checkpoints), or it is accepted, and once the worker has drained its queue every given
key holds its new value, all recorded by one change event after one pre-change checkpoint.
One Trainer per test function keeps this fast.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlcore.hparams import OPTIMIZER_HPARAMS
from dlcore.schedules import SCHEDULES
from dlcore.trainer import RunConfig, Trainer
from tests.test_reliability import SMALL, drain, report, run_steps

TALLY = {"tried": 0, "applied": 0, "refused": 0, "crashes": 0}
FLOAT_KEYS = ("lr", "beta", "beta1", "beta2", "eps", "l2", "keep_prob", "bn_momentum")
INT_KEYS = ("batch_size", "eval_every")
KNOWN = (*FLOAT_KEYS, *INT_KEYS, "optimizer", "schedule", "schedule_params", "speed_limit",
         "autopilot", "carry_moments")
SETTINGS = ("speed_limit", "autopilot")  # run settings: no checkpoint, no event

anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    | st.binary(max_size=4) | st.sampled_from([np.float32(0.5), np.int64(3), np.nan, -0.0]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=6)
plausible = {
    **{key: st.floats(1e-9, 10) for key in ("lr", "eps", "l2")},
    **{key: st.floats(0, 1, exclude_max=True) for key in ("beta", "beta1", "beta2",
                                                            "bn_momentum")},
    "keep_prob": st.floats(0, 1, exclude_min=True),
    "batch_size": st.integers(1, 400) | st.integers(1, 400).map(float),
    "eval_every": st.integers(1, 10**6),
    "optimizer": st.sampled_from(sorted(OPTIMIZER_HPARAMS)),
    "schedule": st.sampled_from(SCHEDULES),
    "schedule_params": st.dictionaries(
        st.sampled_from(["decay_rate", "interval", "base", "k", "factor", "every", "end",
                         "total", "power", "x"]),
        st.floats(0, 2) | st.integers(-1, 10**400) | st.just(float("inf")), max_size=3),
    "speed_limit": st.none() | st.floats(1e-30, 1e6) | st.just(0),
    "autopilot": st.booleans(),
    "carry_moments": st.booleans(),
}


@st.composite
def updates(draw) -> dict:
    odd_keys = ("colour", "", "LR", "lr ", "__class__", "speed-limit", "β1")
    keys = draw(st.lists(st.sampled_from(KNOWN + odd_keys), min_size=1, max_size=4, unique=True))
    values = {}
    for key in keys:  # mostly values of the right kind, so that many updates apply
        wild = draw(st.integers(0, 4)) == 0
        values[key] = draw(anything if wild or key not in plausible else plausible[key])
    return values


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    report("hypothesis update(**hparams)", tried=TALLY["tried"], applied=TALLY["applied"],
           refused_with_message=TALLY["refused"], crashes=TALLY["crashes"])


def expected_value(key, value):
    if key in INT_KEYS:
        return int(value)
    if key in FLOAT_KEYS:
        return float(value)
    if key == "schedule_params":
        return dict(value)
    return value


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def check_update(trainer: Trainer, changes: dict) -> None:
    TALLY["tried"] += 1
    before = trainer.snapshot()
    try:
        trainer.update(**changes)
    except ValueError as error:
        TALLY["refused"] += 1
        assert str(error).strip(), f"ValueError without a message for {changes!r}"
        drain(trainer)
        after = trainer.snapshot()
        assert dict(after.hparams) == dict(before.hparams)
        assert (after.speed_limit, after.autopilot) == (before.speed_limit, before.autopilot)
        assert after.events == before.events and after.checkpoints == before.checkpoints
        return
    except Exception as error:
        TALLY["crashes"] += 1
        raise AssertionError(f"update({changes!r}) raised {error!r}") from error
    TALLY["applied"] += 1
    drain(trainer)
    after = trainer.snapshot()
    assert after.status in ("idle", "paused") and after.error is None, (changes, after.error)
    for key, value in changes.items():
        if key == "speed_limit":
            assert after.speed_limit == (None if value in (None, 0) else float(value))
        elif key == "autopilot":
            assert after.autopilot is bool(value)
        elif key != "carry_moments":
            assert same(after.hparams[key], expected_value(key, value)), (key, value)
    new_events = after.events[len(before.events):]
    new_checkpoints = after.checkpoints[len(before.checkpoints):]
    model_keys = set(changes) - {*SETTINGS, "carry_moments"}
    changed = {k for k in model_keys
               if k == "lr" or not same(before.hparams.get(k), after.hparams.get(k))}
    if changed:
        # one pre-change checkpoint, then one event holding every change together
        assert [c["kind"] for c in new_checkpoints] == ["pre-change"], new_checkpoints
        assert [e["kind"] for e in new_events] == ["change"], new_events
        assert changed <= set(new_events[0]["changes"]), (changed, new_events[0]["changes"])
        assert dict(new_checkpoints[0]["hparams"]) == dict(before.hparams)  # the old values
    else:
        assert new_events == () and new_checkpoints == (), (changes, new_events)


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    trainer = Trainer(RunConfig(**SMALL), tmp_path_factory.mktemp("hypothesis"))
    run_steps(trainer, 2)
    yield trainer
    trainer.stop()


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=updates())
def test_update_applies_whole_or_raises_value_error(trainer, changes):
    check_update(trainer, changes)


@settings(max_examples=60, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(value=anything | st.floats() | st.integers())
def test_every_single_hyperparameter_takes_any_value_safely(trainer, value):
    for key in KNOWN:
        check_update(trainer, {key: value})


def test_the_run_still_trains_after_all_that(trainer):
    """Reset to sane settings: the run trains on, and a reopen gives back the same state."""
    trainer.update(optimizer="adam", lr=1e-3, keep_prob=1.0, batch_size=32, schedule="constant",
                   l2=0.0, bn_momentum=0.9, eval_every=5, speed_limit=None, autopilot=False)
    snap = run_steps(trainer, 5)
    assert snap.status == "paused" and snap.error is None
    assert np.all(np.isfinite(snap.history["cost"][-5:]))


def test_a_tiny_speed_limit_does_not_kill_the_worker(tmp_path):
    """1e-300 steps/s means a wait of 1e300 s: longer than any timeout the OS takes."""
    with Trainer(RunConfig(**SMALL), tmp_path) as trainer:
        run_steps(trainer, 2)
        trainer.update(speed_limit=1e-300)
        trainer.start()
        time.sleep(0.3)
        trainer.pause()
        drain(trainer)
        snap = trainer.snapshot()
        assert snap.status == "paused" and snap.error is None
        trainer.update(speed_limit=None)
        assert run_steps(trainer, 3).step == snap.step + 3
