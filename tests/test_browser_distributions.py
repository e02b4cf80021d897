"""In Chromium: the Distributions page while training, then comparing with another run."""

from __future__ import annotations

import re

import pytest

from dlcore.trainer import RunConfig, Trainer
from tests.browser import button, chromium_page, require_browser, screenshot, streamlit_server
from tests.test_browser import choose, step_count, wait_for
from tests.test_trainer import run_steps

pytestmark = pytest.mark.browser


def test_weights_and_gradients_over_time_then_another_runs_curves(tmp_path):
    require_browser()
    checkpoints = tmp_path / "checkpoints"
    earlier = Trainer(RunConfig(hidden=(32,), lr=0.01, eval_every=20), checkpoints)
    run_steps(earlier, 200)
    earlier.stop()  # an older run of the folder, to compare with
    Trainer(RunConfig(hidden=(64, 32), eval_every=20), checkpoints).stop()  # the newest: opened
    with (streamlit_server(checkpoints, tmp_path / "server.log") as (url, _),
          chromium_page(1400, 1000) as page):
        page.goto(url)
        wait_for(lambda: step_count(page) == 0, what="a new run")
        button(page, "start").click()
        wait_for(lambda: step_count(page) > 300, what="training")
        page.get_by_role("link", name="Distributions").click()
        wait_for(lambda: page.locator(".stPlotlyChart").count() == 6,
                 what="two charts for each of three layers")
        # plotly draws a chart's title after the chart appears: wait for the text
        wait_for(lambda: "fc3: gradients dW" in page.inner_text("body"),
                 what="the charts' titles")
        body = page.inner_text("body")
        assert re.search(r"fc1: weights W ±1σ band \S+ wide", body), body[:2000]
        screenshot(page, "distributions")

        page.get_by_role("link", name="Checkpoints").click()
        wait_for(lambda: "Compare with another run" in page.inner_text("body"),
                 what="the comparison of runs")
        choose(page, "Another run of this folder (newest first)", earlier.run_id)
        wait_for(lambda: "Where they differ" in page.inner_text("body"),
                 what="the other run's curves")
        chart = page.locator(".stPlotlyChart").filter(has_text="Cost J, smoothed")
        wait_for(lambda: chart.count() == 1 and earlier.run_id in chart.inner_text(),
                 what="the comparison's cost chart and its legend")
        legend = chart.inner_text()
        assert "this run" in legend and earlier.run_id in legend
        page.get_by_text("Where they differ").scroll_into_view_if_needed()
        screenshot(page, "compare-runs")
