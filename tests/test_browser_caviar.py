"""The Caviar page in a real browser: a small random search on local Ray (started by the
server itself), then its best trial babysat as a branch, seen on the training page.
Screenshots land in tests/artifacts/ (caviar.png, caviar_babysat.png).
"""

from __future__ import annotations

import re

import pytest

from tests.browser import button, chromium_page, require_browser, screenshot, streamlit_server
from tests.test_browser import step_count, wait_for
from tests.test_browser_lookahead import open_page
from tests.test_caviar_ray import require_ray

pytestmark = pytest.mark.browser


def fill(page, label: str, value: str) -> None:
    """Type a number and commit it with Enter, until the field holds it (a keystroke
    during a rerun can be lost)."""
    field = page.get_by_role("spinbutton", name=label)
    for _ in range(3):
        field.fill(value)
        field.press("Enter")
        try:
            wait_for(lambda: field.input_value() == value, timeout=5, what=label)
            return
        except AssertionError:
            continue
    raise AssertionError(f"{label} did not take {value}")


def test_a_search_in_the_browser_and_babysitting_its_best_trial(tmp_path):
    require_browser()
    require_ray()
    with streamlit_server(tmp_path / "checkpoints", tmp_path / "server.log") as (url, _), \
            chromium_page(height=2000) as page:
        page.goto(url)
        wait_for(lambda: step_count(page) == 0, what="the step tile at 0")

        # 1) the space: α, β and the mini-batch size (the run's architecture, so a branch)
        open_page(page, "Caviar", page.get_by_role("button", name="Start search"))
        units = page.get_by_role("checkbox", name=re.compile(r"hidden units \(per layer\)"))
        units.uncheck(force=True)  # the run's own 64 → 32 then: a branch
        wait_for(lambda: not units.is_checked(), what="hidden units unticked")
        fill(page, "Trials", "4")
        fill(page, "Budget per trial", "100")
        fill(page, "Evaluations per trial", "2")
        page.get_by_role("button", name="Start search").click()
        wait_for(lambda: page.get_by_text(re.compile(r"Round 1 started: 4 trial")).count(),
                 what="the round's start")

        # 2) live, then done: the table, dev accuracy against α, parallel coordinates
        wait_for(lambda: page.get_by_text("Babysit a trial (panda)").count(), timeout=240,
                 interval=1, what="the round's end")
        page.wait_for_timeout(1500)  # let plotly draw
        kinds = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
            .map(plot => (plot.data || []).map(t => t.type || 'scatter')).flat()""")
        assert "parcoords" in kinds and "scatter" in kinds
        assert page.get_by_text("finished").count() > 0
        screenshot(page, "caviar")

        # 3) babysit the best trial (first in the list) as a branch
        page.get_by_role("button", name="Babysit this trial").click()
        message = wait_for(lambda: page.get_by_text(
            re.compile(r"is now branch 1 of this run, paused at step (\d+)")).first
            .inner_text(), what="the hand-off")
        step = int(re.search(r"paused at step (\d+)", message).group(1))
        assert step == 100

        # 4) the training page continues it: branch 1, at the trial's step
        open_page(page, "app", button(page, "step_100"))
        wait_for(lambda: step_count(page) == step, what="the trial's step on the run")
        assert page.get_by_text(re.compile(r"branch 1\b")).count() > 0
        screenshot(page, "caviar_babysat")
