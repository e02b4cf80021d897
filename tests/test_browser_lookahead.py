"""The Look-ahead page in a real browser: run a look-ahead from the live run, commit a
candidate as a new branch, run an LR range test. Its two screenshots land in
tests/artifacts/ (lookahead.png, range_test.png); docs/ holds copies of them.
"""

from __future__ import annotations

import re

import pytest

from tests.browser import button, chromium_page, require_browser, screenshot, streamlit_server
from tests.test_browser import step_count, wait_for

pytestmark = pytest.mark.browser

def plot_count(page) -> int:
    return page.locator(".js-plotly-plot").count()


def open_page(page, link: str, ready) -> None:
    """Follow a sidebar link until ``ready`` shows (a click during a rerun can be lost)."""
    for attempt in range(3):
        page.get_by_role("link", name=link).click()
        try:
            ready.wait_for(timeout=15_000)
            return
        except Exception:
            screenshot(page, f"debug_open_{link}_{attempt}")
    raise AssertionError(f"the {link} page did not open; see tests/artifacts/debug_open_*")


def test_look_ahead_commit_and_range_test_in_the_browser(tmp_path):
    require_browser()
    with streamlit_server(tmp_path / "checkpoints", tmp_path / "server.log") as (url, _), \
            chromium_page(height=1650) as page:
        # 1) 100 live steps
        page.goto(url)
        wait_for(lambda: step_count(page) == 0, what="the step tile at 0")
        button(page, "step_100").click()
        wait_for(lambda: step_count(page) == 100, what="100 steps")

        # 2) a look-ahead of 50 steps from the run now: α × {⅓, 1, 3}
        open_page(page, "Look-ahead", page.get_by_role("button", name="Run look-ahead"))
        steps = page.get_by_role("spinbutton", name="Steps k")
        steps.fill("50")
        steps.press("Enter")
        wait_for(lambda: steps.input_value() == "50", what="k = 50")
        page.get_by_role("button", name="Run look-ahead").click()
        wait_for(lambda: plot_count(page) >= 2 and page.get_by_text("Commit one candidate")
                 .count() > 0, what="the comparison charts")
        page.wait_for_timeout(1000)  # let plotly finish drawing
        traces = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot'))
            .map(plot => (plot.data || []).filter(t => t.showlegend !== false).map(t => t.name))""")
        assert ["α × ⅓", "α × 1 (unchanged)", "α × 3"] in traces
        screenshot(page, "lookahead")

        # 3) commit α × 3 with its state, as a new branch
        page.get_by_text("α × 3", exact=True).last.click()
        page.get_by_text("settings and the sandbox's state as a new branch").click()
        page.get_by_role("button", name="Commit", exact=True).click()
        wait_for(lambda: page.get_by_text(re.compile(r"Committed α × 3 as branch 1")).count() > 0,
                 what="the commit's result")

        # 4) the range test on the same page (a shorter window: the tab is shorter)
        page.set_viewport_size({"width": 1500, "height": 1050})
        page.get_by_role("tab", name="LR range test").click()
        page.get_by_role("button", name="Run range test").click()
        wait_for(lambda: page.get_by_role("button", name=re.compile(r"^Apply α = .*steepest"))
                 .count() > 0, what="the range test's suggestions")
        page.wait_for_timeout(1000)
        suggestions = page.evaluate("""() => Array.from(
            document.querySelectorAll('.js-plotly-plot'))
            .flatMap(plot => (plot.data || []).filter(t => t.meta && t.meta.suggestion)
                                            .map(t => t.meta.suggestion))""")
        assert sorted(suggestions) == ["min_tenth", "steepest"]
        screenshot(page, "range_test")

        # 5) the live page and the Checkpoints page show branch 1
        open_page(page, "app", button(page, "step_100"))
        wait_for(lambda: step_count(page) == 150, what="the committed state's step")
        assert page.get_by_text(re.compile(r"branch 1\b")).count() > 0
        open_page(page, "Checkpoints", page.get_by_role("button", name="Prepare export"))
        wait_for(lambda: page.get_by_text(re.compile(r"branch 1\b")).count() > 0,
                 what="branch 1 in the tree")
