"""AppTest of the Distributions page: each layer's weights and gradients over time."""

from __future__ import annotations

import numpy as np

from dlcore.history import PERCENTILES
from tests.test_pages import page_module, trained

DISTRIBUTIONS = "pages/5_Distributions.py"


def distributions_page():
    return page_module(DISTRIBUTIONS)


def test_each_layer_gets_its_weights_and_gradients_as_percentile_bands(panda):
    snapshot = trained(panda, 100)
    at = panda.run(DISTRIBUTIONS)
    keys = [c.key for c in at.get("plotly_chart")]
    assert keys == [f"distribution_{layer}_{kind}" for layer in snapshot.layers
                    for kind in ("weights", "grads")]
    charts = panda.charts(at)
    for kind in ("weights", "grads"):
        figure = charts[f"distribution_fc1_{kind}"]
        recorded = snapshot.history[f"{kind}/fc1"]
        steps = snapshot.history["eval_step"]
        if kind == "grads":  # before the first step there is no gradient: not recorded
            assert np.isnan(recorded[0]).all() and steps[0] == 0
            recorded, steps = recorded[1:], steps[1:]
        traces = {t["name"]: t for t in figure["data"]}
        # one per evaluation (every 50 steps, unless the evaluation budget put one off)
        assert panda.values(traces["median"]["x"]) == steps.tolist()
        np.testing.assert_allclose(panda.values(traces["median"]["y"]), recorded[:, 4],
                                   rtol=1e-6)
        band = traces["±1σ"]  # the band's top; its bottom is customdata
        np.testing.assert_allclose(panda.values(band["y"]), recorded[:, 6], rtol=1e-6)
        np.testing.assert_allclose(band["customdata"], recorded[:, 2], rtol=1e-6)
        assert band["fill"] == "tonexty"
    grads = snapshot.history["grads/fc1"]
    assert grads[-1, 8] > grads[-1, 0]
    summaries = [c.value for c in at.caption if c.value.startswith("**fc1**")]
    # the gradients' band too is compared with its first recorded width (step 50)
    assert summaries and summaries[0].count("since step 50") == 1, summaries


def test_the_window_and_the_layer_choice_narrow_the_charts(panda):
    snapshot = trained(panda, 1000)
    at = panda.run(DISTRIBUTIONS)
    at.segmented_control(key="distribution_window").set_value("Last 500").run()
    median = next(t for t in panda.charts(at)["distribution_fc2_weights"]["data"]
                  if t["name"] == "median")
    assert panda.values(median["x"]) == [s for s in snapshot.history["eval_step"] if s > 500]
    at.multiselect(key="distribution_layers").set_value(["fc2"]).run()
    assert [c.key for c in at.get("plotly_chart")] == ["distribution_fc2_weights",
                                                       "distribution_fc2_grads"]
    at.multiselect(key="distribution_layers").set_value([]).run()
    assert not at.get("plotly_chart")
    assert "Choose one or more layers" in at.info[0].value
    assert not at.exception


def test_a_hyperparameter_change_is_marked_on_the_distributions(panda):
    trained(panda, 50)
    panda.trainer().update(lr=0.005)
    panda.trainer().step(50)
    panda.wait_for(lambda s: s.step == 100 and s.status == "paused")
    at = panda.run(DISTRIBUTIONS)
    names = [t.get("name", "") for t in panda.charts(at)["distribution_fc1_grads"]["data"]]
    assert any("hyperparameter change" in name for name in names), names


def test_long_histories_are_thinned_to_the_newest_and_every_kth_back():
    page = distributions_page()
    steps = np.arange(0, 50 * 1000, 50)
    values = np.tile(np.arange(len(PERCENTILES), dtype=np.float32), (len(steps), 1))
    shown, kept = page.evaluations_shown({"eval_step": steps, "weights/fc1": values},
                                         "weights/fc1", None)
    assert len(shown) <= page.MAX_COLUMNS and shown[-1] == steps[-1]
    assert len(set(np.diff(shown))) == 1 and len(kept) == len(shown)


def test_evaluations_from_before_distributions_were_recorded_are_left_out():
    """A run written by an older Panda reads NaN there (an optional column)."""
    page = distributions_page()
    steps = np.arange(0, 500, 50)
    values = np.full((len(steps), len(PERCENTILES)), np.nan)
    values[6:] = np.linspace(-1, 1, len(PERCENTILES))
    history = {"eval_step": steps, "weights/fc1": values, "grads/fc1": values}
    shown, _ = page.evaluations_shown(history, "weights/fc1", None)
    assert shown.tolist() == [300, 350, 400, 450]
    assert "since step 300" in page.layer_summary(history, "fc1")
    old = {"eval_step": steps, "weights/fc1": np.full_like(values, np.nan)}
    figure = page.distribution_figure(old, "fc1", "weights", (), None)
    assert not figure.data
    assert figure.layout.annotations[0].text == "No evaluation in this window yet"
    assert page.layer_summary(old, "fc1") == "**fc1**: no evaluation recorded yet"
