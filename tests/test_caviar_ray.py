"""Caviar on a real (local) Ray: two rounds of coarse to fine on digits, ASHA stopping the
bad trials, the rounds reopened by a new Study, a trial babysat as a branch, cancel.

One ``ray.init`` for the module (:func:`ray_session`; the page's AppTest with a real
search is here too), shut down at its end so the rest of the suite runs without Ray;
small budgets, so the module takes well under a minute after Ray is up.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import pytest

from dlcore.caviar import Study, ray_missing
from dlcore.caviar_trial import Plan
from dlcore.sandbox import Sandbox
from dlcore.search_space import Dimension, SearchSpace
from dlcore.trainer import RunConfig, Trainer
from tests.test_trainer import run_steps

#: α down to 1e-6: with seed 0, trials 3 and 4 draw α ≈ 1e-6 and learn nothing in 50
#: steps. Two trials run at once, so 3 and 4 start after 1 or 2 has reported at ASHA's
#: first rung (step 50 ≥ grace 200/9): each is below that cutoff and is stopped.
SPACE = SearchSpace((Dimension("lr", 1e-6, 1e-1), Dimension("beta", 0.9, 0.999)))
PLAN = Plan(SPACE, trials=4, budget=200, evaluations=4, seed=0, max_concurrent=2)


def require_ray():
    """Skip without Ray locally; fail in CI, which installs requirements-caviar.txt."""
    reason = ray_missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def ray_session():
    """Ray started once for every test here, shut down after them; started the way the
    server starts it, from a search's thread that ends before the next round begins."""
    require_ray()
    from dlcore import caviar_ray

    started = {}
    thread = threading.Thread(target=lambda: started.update(session=caviar_ray.connect()))
    thread.start()
    thread.join()
    session = started["session"]
    yield session
    import ray

    ray.shutdown()
    caviar_ray._session = None


@pytest.fixture(scope="module")
def searched(ray_session, tmp_path_factory):
    """A digits run and two rounds: random with ASHA, then TPE on the narrowed space."""
    folder = tmp_path_factory.mktemp("caviar-ray")
    trainer = Trainer(RunConfig(hidden=(32, 16), eval_every=25), folder)
    study = Study(trainer.run_dir)
    began = time.monotonic()
    study.start(PLAN, trainer.config, trainer.data)
    study.wait(180)
    narrowed = study.narrowed_plan(1, best=2)
    study.start(dataclasses.replace(narrowed, algorithm="tpe"), trainer.config,
                trainer.data, origin={"round": 1, "best": 2})
    study.wait(180)
    yield trainer, study, time.monotonic() - began
    study.close()
    trainer.stop()


def test_two_rounds_of_coarse_to_fine_run_on_ray(searched):
    trainer, study, seconds = searched
    first, second = study.views()
    assert (first.status, second.status) == ("finished", "finished"), (first.message,
                                                                        second.message)
    assert first.session["address"] == "local" and first.session["cpus"] >= 1
    assert [t["point"]["lr"] for t in first.trials] == [p["lr"] for p in SPACE.sample(4, 0)]
    assert second.plan.algorithm == "tpe" and second.origin == {"round": 1, "best": 2}
    lr, old = second.plan.space["lr"], first.plan.space["lr"]
    assert old.low < lr.low and lr.high <= old.high  # narrowed around the best two
    assert all(lr.low <= t["point"]["lr"] <= lr.high for t in second.trials)
    assert all(t["status"] in ("finished", "stopped") for t in first.trials + second.trials)
    assert seconds < 120


def test_asha_stops_the_trials_that_learn_nothing(searched):
    _, study, _ = searched
    first = study.views()[0]
    stopped = [t for t in first.trials if t["status"] == "stopped"]
    assert stopped, [(t["trial"], t["status"], t["best_dev_accuracy"]) for t in first.trials]
    assert all(t["step"] < PLAN.budget for t in stopped)
    assert all(t["point"]["lr"] < 1e-4 for t in stopped)
    best = first.ranked()[0]
    assert best["status"] == "finished" and best["step"] == 200
    assert best["best_dev_accuracy"] > 0.8


def test_the_rounds_reopen_after_a_restart(searched):
    trainer, study, _ = searched
    reopened = Study(trainer.run_dir)
    assert [v.trials for v in reopened.views()] == [v.trials for v in study.views()]
    assert [v.plan for v in reopened.views()] == [v.plan for v in study.views()]


def test_the_best_trial_babysat_as_a_branch_continues_bit_for_bit(searched):
    trainer, study, _ = searched
    best = study.views()[0].ranked()[0]
    handoff = study.handoff(1, best["trial"], trainer.data)
    assert handoff.trained and handoff.fits_branch(trainer.config)
    continuation = Sandbox(handoff.config, trainer.data, handoff.state)
    continuation.run(1)
    trainer.adopt(handoff)
    run_steps(trainer, 1)
    history = trainer.snapshot().history
    assert history["step"][-1] == best["step"] + 1
    assert history["cost"][-1] == continuation.last("cost")


def test_cancel_stops_every_trial(ray_session, tmp_path):
    with Trainer(RunConfig(hidden=(16,)), tmp_path) as trainer:
        study = Study(trainer.run_dir)
        plan = Plan(SPACE, trials=6, budget=100_000, evaluations=1000, max_concurrent=2)
        study.start(plan, trainer.config, trainer.data)
        deadline = time.monotonic() + 120
        while not any(t["step"] for t in study.view(1).trials):
            assert time.monotonic() < deadline, study.view(1).message
            time.sleep(0.2)
        asked = time.monotonic()
        study.cancel()
        study.wait(60)
        view = study.view(1)
        assert view.status == "cancelled" and time.monotonic() - asked < 30
        assert {t["status"] for t in view.trials} == {"cancelled"}
        assert trainer.snapshot().step == 0


def test_an_unreachable_cluster_gets_a_message_that_says_what_to_do(ray_session,
                                                                      monkeypatch):
    from dlcore import caviar_ray

    def refuse(*args, **kwargs):
        raise ConnectionError("ray client connection timeout")

    monkeypatch.setattr(caviar_ray, "_session", None)
    monkeypatch.setattr(caviar_ray.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(caviar_ray.ray, "init", refuse)
    monkeypatch.setenv(caviar_ray.ADDRESS_VARIABLE, "ray://127.0.0.1:1")
    with pytest.raises(caviar_ray.CaviarUnavailable) as error:
        caviar_ray.connect()
    assert str(error.value) == (
        "Could not reach the Ray cluster at ray://127.0.0.1:1: ray client connection "
        "timeout. Check that the cluster runs and that PANDA_RAY_ADDRESS is right "
        "(ray://host:10001), or unset it to search on this machine.")


# ---------------------------------------------------------------------------
# The page (AppTest), on the same Ray
# ---------------------------------------------------------------------------

CAVIAR = "pages/4_Caviar.py"


def settle(panda, at, ready, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while not ready(at):
        assert time.monotonic() < deadline, [m.value for m in at.markdown][-5:]
        time.sleep(0.5)
        at.run()
    return at


def test_a_search_from_the_page_then_babysit_its_best(panda, ray_session):
    at = panda.run(CAVIAR)
    trainer = panda.trainer()
    at.checkbox(key="cv_hidden_units_on").uncheck()  # the run's architecture: a branch
    at.number_input(key="cv_trials").set_value(4)
    at.number_input(key="cv_budget").set_value(60)
    at.number_input(key="cv_evaluations").set_value(2)
    at.button(key="cv_start").click().run()
    assert any("Round 1 started: 4 trial(s)" in s.value for s in at.success)
    at = settle(panda, at, lambda at: any("Babysit a trial" in m.value for m in at.markdown))
    view = Study(trainer.run_dir).view(1)
    assert view.status == "finished", view.message
    table = next(df.value for df in at.dataframe if "best dev accuracy" in df.value.columns)
    assert list(table["trial"]) == [1, 2, 3, 4]
    assert {"cv_alpha_1", "cv_parallel_1"} <= set(panda.charts(at))
    best = view.ranked()[0]
    assert at.selectbox(key="cv_trial_1").value == best["trial"]

    at.button(key="cv_babysit_1").click().run()
    snapshot = trainer.snapshot()
    assert snapshot.branch == 1 and snapshot.step == best["step"]
    assert any(f"is now branch 1 of this run, paused at step {best['step']}" in s.value
               for s in at.success)

    at.radio(key="cv_as_1").set_value("run")
    at.button(key="cv_babysit_1").click().run()
    new = panda.trainer()
    assert new.run_id != trainer.run_id and new.snapshot().step == best["step"]
    assert new.snapshot().checkpoints[0]["note"] == f"from caviar round 1 trial {best['trial']}"
    assert any(f"is now run {new.run_id}" in s.value for s in at.success)
