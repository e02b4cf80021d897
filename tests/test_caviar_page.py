"""AppTest of the Caviar page: with Ray missing, the form and its messages, and a real
(small) search on local Ray whose best trial is babysat as a branch and as a new run."""

from __future__ import annotations

import sys
import time

import pytest

from dlcore.caviar import Study
from tests.test_caviar_ray import ray_session  # noqa: F401  (the session's one ray.init)

CAVIAR = "pages/4_Caviar.py"


def caviar_page(panda):
    return panda.run(CAVIAR)


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_the_page_renders_without_ray_and_says_how_to_install_it(panda, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails from here on
    monkeypatch.setitem(sys.modules, "optuna", None)
    at = caviar_page(panda)
    notice = next(i.value for i in at.info if "requirements-caviar.txt" in i.value)
    assert "ray[tune] and optuna" in notice and "pip install -r requirements-caviar.txt" \
        in notice
    assert at.button(key="cv_start").disabled
    assert any("never touched by a search" in " ".join(m.value.split()) for m in at.markdown)


def test_the_space_is_prefilled_in_the_order_of_importance(panda):
    at = caviar_page(panda)
    rows = [c for c in at.checkbox if c.key.startswith("cv_")]
    assert [c.key for c in rows] == ["cv_lr_on", "cv_beta_on", "cv_hidden_units_on",
                                     "cv_batch_size_on", "cv_layers_on", "cv_decay_rate_on",
                                     "cv_l2_on"]
    assert [c.value for c in rows] == [True] * 4 + [False] * 3
    assert "tier 1" in rows[0].label and "tier 3" in rows[-1].label
    assert at.slider(key="cv_lr_range").value == (-4.0, -1.0)
    assert at.number_input(key="cv_beta_range_low").value == 0.9
    assert at.select_slider(key="cv_hidden_units_range").value == (16, 256)
    assert any("Tune first: it matters most" in c.value for c in at.caption)


@pytest.mark.parametrize(("edit", "says"), [
    (lambda at: at.number_input(key="cv_trials").set_value(0),
     "A search needs at least one trial"),
    (lambda at: at.number_input(key="cv_beta_range_low").set_value(0.999),
     "β (momentum, Adam's β₁): low must be < high"),
    (lambda at: [at.checkbox(key=f"cv_{n}_on").uncheck()
                 for n in ("lr", "beta", "hidden_units", "batch_size")],
     "Choose at least one hyperparameter to search"),
])
def test_a_bad_search_says_what_is_wrong_and_starts_nothing(panda, edit, says):
    at = caviar_page(panda)
    edit(at)
    at.button(key="cv_start").click().run()
    assert any(says in e for e in errors(at)), errors(at)
    assert not (panda.trainer().run_dir / "caviar").exists()


def settle(panda, at, ready, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while not ready(at):
        assert time.monotonic() < deadline, [m.value for m in at.markdown][-5:]
        time.sleep(0.5)
        at.run()
    return at


def test_a_search_from_the_page_then_babysit_its_best(panda, ray_session):  # noqa: F811
    at = caviar_page(panda)
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
