"""AppTest of the Look-ahead page: look-ahead runs, commits, and the LR range test."""

from __future__ import annotations

import pytest

LOOK_AHEAD = "pages/3_Look-ahead.py"


def look_ahead_page(panda, steps: int = 50):
    """The Look-ahead page of the default run after ``steps`` live steps."""
    panda.run()
    panda.trainer().step(steps)
    panda.wait_for(lambda s: s.step == steps and s.status == "paused")
    return panda.run(LOOK_AHEAD)


def run_look_ahead(panda, at, k: int = 20):
    at.number_input(key="la_steps").set_value(k)
    at.button(key="la_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def legend_traces(spec: dict) -> list[dict]:
    """One per candidate: the raw-cost and diverged-marker traces stay out of the legend."""
    return [t for t in spec["data"] if t.get("showlegend") is not False]


def test_page_runs_and_says_sandboxes_never_touch_the_run(panda):
    at = look_ahead_page(panda, 10)
    assert any("never touch the live run" in m.value for m in at.markdown)
    assert at.number_input(key="la_steps").value == 200
    assert at.multiselect(key="la_presets").value == ["α × ⅓", "α × 1 (unchanged)", "α × 3"]
    assert at.number_input(key="rt_low").value == -6.0
    assert at.number_input(key="rt_high").value == 1.0
    assert not panda.charts(at)  # nothing run yet


def test_look_ahead_overlays_one_curve_per_candidate_from_the_start_step(panda):
    at = look_ahead_page(panda)
    before = panda.trainer().snapshot()
    run_look_ahead(panda, at)
    charts = panda.charts(at)
    labels = ["α × ⅓", "α × 1 (unchanged)", "α × 3"]
    cost, dev = legend_traces(charts["la_cost"]), legend_traces(charts["la_dev"])
    assert [t["name"] for t in cost] == labels and [t["name"] for t in dev] == labels
    for trace in cost:
        assert panda.values(trace["x"]) == list(range(51, 71))  # aligned at the start step
    for trace in dev:
        assert panda.values(trace["x"])[0] == 50  # evaluated at the common start
    summary = next(df.value for df in at.dataframe if "final dev accuracy" in df.value.columns)
    assert list(summary["candidate"]) == labels
    assert list(summary["diverged?"]) == ["no"] * 3
    after = panda.trainer().snapshot()  # the live run did not move
    assert after.step == before.step and after.events == before.events


def test_look_ahead_with_optimizers_and_own_alphas(panda):
    at = look_ahead_page(panda, 20)
    at.multiselect(key="la_presets").set_value(["α × 1 (unchanged)", "Momentum", "Adam"])
    at.text_input(key="la_custom_alphas").input("1e-2, 1e-2")
    run_look_ahead(panda, at)
    names = [t["name"] for t in legend_traces(panda.charts(at)["la_dev"])]
    assert names == ["α × 1 (unchanged)", "Momentum", "α = 0.01"]  # Adam is the run's own


def test_a_bad_alpha_list_says_what_is_wrong(panda):
    at = look_ahead_page(panda, 5)
    at.text_input(key="la_custom_alphas").input("1e-3, fast")
    at.button(key="la_run").click().run()
    assert any("'fast' is not a number" in e.value for e in at.error)
    assert "la_cost" not in panda.charts(at)


def test_commit_settings_only_changes_alpha(panda):
    at = run_look_ahead(panda, look_ahead_page(panda))
    at.radio(key="la_commit_choice").set_value(2)  # α × 3
    assert at.radio(key="la_commit_mode").value == "settings"
    at.button(key="la_commit").click().run()
    snapshot = panda.wait_for(lambda s: s.hparams["lr"] != 1e-3)
    assert snapshot.hparams["lr"] == pytest.approx(3e-3)
    assert snapshot.branch == 0 and snapshot.step == 50
    assert any("Committed the settings of α × 3" in s.value for s in at.success)


def test_commit_as_a_new_branch_twice_forks_twice_from_the_start(panda):
    at = run_look_ahead(panda, look_ahead_page(panda))
    at.radio(key="la_commit_choice").set_value(0)  # α × ⅓
    at.radio(key="la_commit_mode").set_value("branch")
    at.button(key="la_commit").click().run()
    snapshot = panda.trainer().snapshot()
    assert snapshot.branch == 1 and snapshot.step == 70
    assert snapshot.hparams["lr"] == pytest.approx(1e-3 / 3)
    assert any("as branch 1" in s.value for s in at.success)
    at.button(key="la_commit").click().run()  # the run is on branch 1 now
    assert any("forks a new branch from branch 0" in i.value for i in at.info)
    snapshot = panda.trainer().snapshot()
    assert snapshot.branch == 2 and snapshot.branches[2]["parent_branch"] == 0
    assert snapshot.branches[2]["fork_step"] == 50


def test_range_test_marks_both_suggestions_and_applies_one(panda):
    at = look_ahead_page(panda, 20)
    at.number_input(key="rt_steps").set_value(100)
    at.button(key="rt_run").click().run()
    assert not at.exception
    spec = panda.charts(at)["rt_chart"]
    assert spec["layout"]["xaxis"]["type"] == "log"
    markers = {t["meta"]["suggestion"]: t for t in spec["data"] if t.get("meta")}
    assert set(markers) == {"steepest", "min_tenth"}
    steepest = panda.values(markers["steepest"]["x"])[0]
    assert len(set(panda.values(markers["steepest"]["x"]))) == 1  # a vertical line
    assert "steepest descent" in markers["steepest"]["text"][-1]
    alphas = panda.values(next(t for t in spec["data"] if t["name"] == "J (raw)")["x"])
    assert alphas[0] == pytest.approx(1e-6) and alphas == sorted(alphas)
    button = at.button(key="rt_apply_steepest")
    assert button.label.startswith(f"Apply α = {steepest:.2e}")
    button.click().run()
    snapshot = panda.wait_for(lambda s: s.hparams["lr"] != 1e-3)
    assert snapshot.hparams["lr"] == pytest.approx(steepest)
    assert snapshot.step == 20  # the sandbox's steps never reached the run
