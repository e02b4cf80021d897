"""Caviar rounds on disk, the search thread and the hand-off, without Ray: a stand-in
backend trains the trials one after the other in the search's thread and posts the
events Ray Tune's callback would (tests/test_caviar_ray.py runs the real thing)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from dlcore import checkpoint as ckptio
from dlcore.caviar import Study
from dlcore.caviar_trial import TRIAL_FORMAT, Plan, train_trial, write_trial_file
from dlcore.sandbox import Sandbox
from dlcore.search_space import Dimension, SearchSpace
from dlcore.trainer import RunConfig, Trainer
from tests.test_trainer import run_steps

SPACE = SearchSpace((Dimension("lr", 1e-5, 3e-2), Dimension("beta", 0.9, 0.999)))
PLAN = Plan(SPACE, trials=4, budget=40, evaluations=2, seed=3)


def in_thread_backend(plan, base, data, name, on_events, cancelled, tmp=None):
    """What caviar_ray.run_search does, minus Ray: the same events, in the same order."""
    for number, point in enumerate(plan.space.sample(plan.trials, plan.seed), 1):
        if cancelled():
            break
        on_events([("start", number, point)])
        for report in train_trial(plan.space.config_for(base, point), data, plan):
            events = [("result", number, {**report.metrics, "seconds": 0.1})]
            if report.state is not None:
                path = tmp / f"{name}-{number}.npz"
                write_trial_file(path, report.state, report.history,
                                 {"trial": number, "point": point, "metrics": report.metrics})
                events.append(("state", number, *ckptio.read(path, TRIAL_FORMAT)))
            on_events(events)
        on_events([("complete", number)])
    on_events([("end",)])


@pytest.fixture
def trainer(tmp_path):
    with Trainer(RunConfig(hidden=(32, 16), eval_every=20), tmp_path / "runs") as t:
        yield t


@pytest.fixture
def study(trainer, tmp_path):
    def backend(*args):
        in_thread_backend(*args, tmp=tmp_path)

    study = Study(trainer.run_dir, backend=backend)
    yield study
    study.close()


def finished_round(study, trainer, plan=PLAN, origin=None):
    number = study.start(plan, trainer.config, trainer.data, origin)
    study.wait(60)
    return study.view(number)


def test_a_round_is_kept_in_the_run_folder_and_reopens(study, trainer):
    view = finished_round(study, trainer)
    assert view.status == "finished" and view.done == 4
    assert [t["status"] for t in view.trials] == ["finished"] * 4
    assert [dict(t["point"]) for t in view.trials] == SPACE.sample(4, 3)
    best = view.ranked()[0]
    assert best["best_dev_accuracy"] == max(t["best_dev_accuracy"] for t in view.trials)
    assert list(best["curve"]["step"]) == [20, 40]
    folder = trainer.run_dir / "caviar" / "round-1"
    assert sorted(p.name for p in folder.iterdir()) == [
        "round.json", "trial-0001.npz", "trial-0002.npz", "trial-0003.npz", "trial-0004.npz",
        "trials.json"]
    assert json.loads((folder / "round.json").read_text())["status"] == "finished"
    # a new Study (a restarted server) reads the same round back
    again = Study(trainer.run_dir).view(1)
    assert again.trials == view.trials and again.plan == view.plan


def test_only_the_best_trials_keep_their_state(study, trainer):
    view = finished_round(study, trainer, Plan(SPACE, trials=4, budget=40, evaluations=2,
                                               seed=3, keep_states=1))
    kept = [t["trial"] for t in view.trials if t["state"]]
    assert kept == [view.ranked()[0]["trial"]]
    files = sorted(p.name for p in (trainer.run_dir / "caviar" / "round-1").glob("*.npz"))
    assert files == [f"trial-{kept[0]:04d}.npz"]


def test_a_round_that_was_running_at_a_restart_is_interrupted(study, trainer):
    finished_round(study, trainer)
    folder = trainer.run_dir / "caviar" / "round-1"
    header = json.loads((folder / "round.json").read_text())
    trials = json.loads((folder / "trials.json").read_text())
    header["status"], trials["trials"][3]["status"] = "running", "running"
    (folder / "round.json").write_text(json.dumps(header))
    (folder / "trials.json").write_text(json.dumps(trials))
    view = Study(trainer.run_dir).view(1)
    assert view.status == "interrupted" and "server stopped" in view.message
    assert view.trials[3]["status"] == "interrupted"
    assert view.trials[0]["status"] == "finished"


def test_a_damaged_round_is_listed_and_the_others_still_open(study, trainer):
    finished_round(study, trainer)
    damaged = trainer.run_dir / "caviar" / "round-2"
    damaged.mkdir()
    (damaged / "round.json").write_text("{not json")
    reopened = Study(trainer.run_dir)
    assert [v.number for v in reopened.views()] == [1]
    assert reopened.damaged[0][0] == "round-2" and "unreadable" in reopened.damaged[0][1]


def test_coarse_to_fine_makes_the_next_round(study, trainer):
    first = finished_round(study, trainer)
    plan = study.narrowed_plan(1, best=2)
    assert plan.seed == PLAN.seed + 1 and plan.trials == PLAN.trials
    best_two = [t["point"]["lr"] for t in first.ranked()[:2]]
    lr = plan.space["lr"]
    assert lr.low <= min(best_two) and max(best_two) <= lr.high
    assert (lr.low, lr.high) != (SPACE["lr"].low, SPACE["lr"].high)
    second = finished_round(study, trainer, plan, origin={"round": 1, "best": 2})
    assert second.number == 2 and second.origin == {"round": 1, "best": 2}
    assert [v.number for v in study.views()] == [1, 2]


def test_narrowing_that_would_change_nothing_says_so(study, trainer):
    batches = SearchSpace((Dimension("batch_size", 16, 32),))  # two powers: no narrower
    finished_round(study, trainer, Plan(batches, trials=3, budget=10, evaluations=1))
    with pytest.raises(ValueError, match="narrowing around them changes none"):
        study.narrowed_plan(1, best=3)


def test_cancel_stops_the_search_and_leaves_the_run_alone(trainer, tmp_path):
    started = threading.Event()

    def waiting_backend(plan, base, data, name, on_events, cancelled):
        on_events([("start", 1, {"lr": 1e-3, "beta": 0.9})])
        started.set()
        while not cancelled():
            threading.Event().wait(0.01)

    before = trainer.snapshot()
    study = Study(trainer.run_dir, backend=waiting_backend)
    study.start(PLAN, trainer.config, trainer.data)
    assert started.wait(10) and study.running
    with pytest.raises(ValueError, match="A search is running"):
        study.start(PLAN, trainer.config, trainer.data)
    study.cancel()
    study.wait(10)
    view = study.view(1)
    assert view.status == "cancelled"
    assert {t["status"] for t in view.trials} == {"cancelled"}
    after = trainer.snapshot()
    assert (after.step, after.branch, after.events) == (before.step, before.branch,
                                                         before.events)


def test_ray_unreachable_fails_the_round_with_its_message(trainer):
    def unreachable(*args):
        raise RuntimeError("Could not reach the Ray cluster at ray://nowhere:10001: "
                           "connection timeout.")

    study = Study(trainer.run_dir, backend=unreachable)
    study.start(PLAN, trainer.config, trainer.data)
    study.wait(10)
    view = study.view(1)
    assert view.status == "failed"
    assert view.message == ("The search stopped: Could not reach the Ray cluster at "
                            "ray://nowhere:10001: connection timeout. The run was not touched.")
    assert trainer.snapshot().status == "idle"


def test_a_plan_that_does_not_fit_the_run_starts_nothing(study, trainer):
    plan = Plan(SearchSpace((Dimension("batch_size", 16, 4096),)), trials=2, budget=10)
    with pytest.raises(ValueError, match=r"at most the \d+ training examples, got 4096"):
        study.start(plan, trainer.config, trainer.data)
    assert not (trainer.run_dir / "caviar").exists()


def test_babysitting_a_trial_as_a_branch_continues_it_bit_for_bit(study, trainer):
    run_steps(trainer, 30)  # the run is elsewhere now; the branch forks at step 0
    view = finished_round(study, trainer)
    best = view.ranked()[0]
    handoff = study.handoff(1, best["trial"], trainer.data)
    assert handoff.trained and handoff.step == 40 and handoff.fits_branch(trainer.config)
    # the trial's own continuation, one step
    continuation = Sandbox(handoff.config, trainer.data, handoff.state)
    continuation.run(1)
    branch = trainer.adopt(handoff)
    snapshot = trainer.snapshot()
    assert snapshot.branch == branch and snapshot.step == 40
    run_steps(trainer, 1)
    history = trainer.snapshot().history
    assert history["step"][-1] == 41
    assert history["cost"][-1] == continuation.last("cost")  # bit for bit
    assert list(history["step"]) == list(range(1, 42))
    change = next(e for e in trainer.snapshot().events if e.get("source"))
    assert change["source"] == f"from caviar round 1 trial {best['trial']}"
    assert change["step"] == 0 and change["changes"]["lr"][1] == best["point"]["lr"]


def test_babysitting_another_architecture_is_a_new_run(study, trainer):
    space = SearchSpace((Dimension("lr", 1e-3, 1e-2), Dimension("hidden_units", 16, 32)))
    finished_round(study, trainer, Plan(space, trials=2, budget=20, evaluations=1))
    handoff = study.handoff(1, 1, trainer.data)
    assert not handoff.fits_branch(trainer.config)
    with pytest.raises(ValueError, match="another architecture"):
        trainer.adopt(handoff)
    config = handoff.config_for_new_run(trainer.run_dir)
    with Trainer(config, trainer.run_dir.parent, start_from=handoff.state,
                 note=handoff.note) as new_run:
        snapshot = new_run.snapshot()
        assert snapshot.step == 20 and snapshot.config["hidden"] == config.hidden
        assert snapshot.checkpoints[0]["note"] == "from caviar round 1 trial 1"
        arrays, _ = new_run.export_state()
        np.testing.assert_array_equal(arrays["params/fc1.W"], handoff.state[0]["params/fc1.W"])


def test_a_trial_without_its_state_starts_at_step_0_with_its_settings(study, trainer):
    view = finished_round(study, trainer, Plan(SPACE, trials=2, budget=20, evaluations=1,
                                               keep_states=0))
    handoff = study.handoff(1, 2, trainer.data)
    assert not handoff.trained and handoff.step == 0
    assert handoff.state[1]["info"]["hparams"]["lr"] == view.trials[1]["point"]["lr"]
    branch = trainer.adopt(handoff)
    assert trainer.snapshot().branch == branch and trainer.snapshot().step == 0
