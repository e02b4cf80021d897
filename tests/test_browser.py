"""A person's session in a real browser: `streamlit run app.py` driven through Chromium.

Start, watch the step count rise, change α and Apply, see the new α in the
tiles and a change marker on every chart, Pause, go to Checkpoints, roll back
and see a second branch, open the BatchNorm page. Screenshots land in
tests/artifacts/ (the README's screenshot is one of them, copied to docs/).
"""

from __future__ import annotations

import re
import time

import pytest

from tests.browser import button, chromium_page, require_browser, screenshot, streamlit_server

pytestmark = pytest.mark.browser

CHANGE_MARKERS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
    plot => (plot.data || []).filter(t => t.meta && t.meta.events === 'change')
                             .flatMap(t => t.hovertext || []))"""


def metric(page, label: str) -> str:
    """The value shown in the st.metric tile with this label."""
    for tile in page.locator('[data-testid="stMetric"]').all():
        shown = tile.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        if shown.splitlines()[0].strip() == label:
            return tile.locator('[data-testid="stMetricValue"]').inner_text().strip()
    raise LookupError(f"no tile labelled {label!r}")


def wait_for(condition, timeout=60.0, interval=0.25, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
            if last:
                return last
        except Exception as error:  # the page may be mid-rerun
            last = error
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def set_alpha(page, value: str, pending: str) -> None:
    """Type α and commit it with Enter, as a person would, until the panel lists it as
    pending. A keystroke that lands while the page is mid-rerun can be dropped by the
    browser (the person would type it again); so does this helper, up to three times."""
    for _ in range(3):
        alpha = page.get_by_role("spinbutton", name="Learning rate α")
        alpha.fill(value)
        alpha.press("Enter")
        try:
            page.get_by_text(pending).first.wait_for(timeout=10_000)
            return
        except Exception:  # noqa: BLE001 - Playwright's timeout; retried below
            continue
    raise AssertionError(f"the α field never showed {pending!r}")


def choose(page, label: str, text: str) -> None:
    """Pick the first option of a selectbox containing ``text`` by typing, as a person can.

    Typing filters the list and Enter picks the first match; clicking an option instead
    races the page's once-a-second refresh, which re-renders the open list. In the first
    second after a page opens, a re-render can also drop what was typed and close the
    list (seen about once in five runs on a loaded machine), so it types again until the
    box shows the picked option.
    """
    box = page.get_by_role("combobox", name=label, exact=True)
    for _ in range(5):
        box.click()
        box.fill(text)
        try:
            page.get_by_role("option").filter(has_text=text).first.wait_for(timeout=3_000)
            box.press("Enter")
            wait_for(lambda: box.input_value() != text and text in box.input_value(),
                     timeout=3.0, what=f"{label!r} to show the option with {text!r}")
            return
        except Exception:  # noqa: BLE001 - Playwright's timeout or ours; retried below
            box.press("Escape")
    raise AssertionError(f"{label!r} never offered an option with {text!r}")


def step_count(page) -> int:
    """The Step tile as a number; it may abbreviate (1.47M: then to that precision)."""
    shown = metric(page, "Step").replace(",", "").strip()
    scale = {"k": 1e3, "M": 1e6, "G": 1e9}.get(shown[-1:], 1)
    return int(float(shown.rstrip("kMG")) * scale)


def test_a_babysitting_session_in_the_browser(tmp_path):
    require_browser()
    with (
        streamlit_server(tmp_path / "checkpoints", tmp_path / "server.log") as (url, _),
        chromium_page() as page,
    ):
        # 1) first start: a digits run, paused at step 0, one click from training
        page.goto(url)
        wait_for(lambda: step_count(page) == 0, what="the step tile at 0")
        screenshot(page, "01_first_start")

        # 2) Start, and the step count rises while we watch
        button(page, "start").click()
        first = wait_for(lambda: step_count(page) > 0 and step_count(page), what="training")
        wait_for(lambda: step_count(page) > first + 20, what="the step count to keep rising")

        # 3) change α and Apply: the tile shows it and every chart marks the change
        set_alpha(page, "0.003", "Pending: α 0.001 → 0.003")
        button(page, "apply").click()
        wait_for(lambda: metric(page, "α now") == "0.003", what="α now = 0.003")
        markers = wait_for(
            lambda: (
                [m for m in page.evaluate(CHANGE_MARKERS_JS) if m]
                if len([m for m in page.evaluate(CHANGE_MARKERS_JS) if m]) >= 4
                else None
            ),
            what="change markers on the four live charts",
        )
        assert all(any("lr" in text or "α" in text for text in chart) for chart in markers)
        screenshot(page, "02_running_after_alpha_change")

        # 4) Pause: the count stops
        button(page, "pause").click()
        wait_for(
            lambda: (
                button(page, "start").count() > 0
                and page.get_by_text(re.compile(r"\bpaused\b")).count() > 0
            ),
            what="paused",
        )
        paused_at = step_count(page)
        time.sleep(1.5)
        assert step_count(page) == paused_at

        # 5) Checkpoints: roll back to the pre-change checkpoint, see a second branch
        page.get_by_role("link", name="Checkpoints").click()
        page.wait_for_url("**/Checkpoints", timeout=30_000)
        page.get_by_text("Roll back to this checkpoint").wait_for(timeout=30_000)
        choose(page, "Checkpoint", "pre-change")
        page.get_by_role("button", name="Roll back to this checkpoint").click()
        wait_for(
            lambda: page.get_by_text(re.compile(r"branch 1\b")).count() > 0, what="a second branch"
        )
        screenshot(page, "03_checkpoints_after_rollback")

        # 6) back on the live page, the tiles show the restored step on branch 1
        page.get_by_role("link", name="app").click()
        wait_for(lambda: step_count(page) < paused_at, what="the restored step")
        assert page.get_by_text(re.compile(r"branch 1\b")).count() > 0

        # 7) the BatchNorm page shows the running estimates
        page.get_by_role("link", name="BatchNorm").click()
        page.wait_for_url("**/BatchNorm", timeout=30_000)
        page.get_by_text("BatchNorm at test time").wait_for(timeout=30_000)
        wait_for(lambda: page.locator(".js-plotly-plot").count() >= 2, what="BatchNorm charts")
        assert page.get_by_text("bn1").count() > 0
        screenshot(page, "04_batchnorm")
