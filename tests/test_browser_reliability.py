"""Reliability in the real app: killing the server mid-training, and two browser
sessions steering one run at once (issue: reliability and safety)."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from dlcore import checkpoint as ckptio
from dlcore.trainer import CHECKPOINT_FORMAT, list_runs
from tests.browser import (
    button,
    chromium_page,
    chromium_pages,
    require_browser,
    screenshot,
    streamlit_server,
)
from tests.test_browser import choose, metric, set_alpha, step_count, wait_for

pytestmark = pytest.mark.browser

COST_TRACE_JS = """() => {
    for (const plot of document.querySelectorAll('.js-plotly-plot')) {
        const raw = (plot._fullData || []).find(t => t.name === 'J (raw)');
        if (raw) return {n: raw.x.length, last: raw.x[raw.x.length - 1]};
    }
    return null;
}"""


def newest_checkpoint_step(folder) -> int:
    run_dir = folder / list_runs(folder)[-1]
    steps = []
    for path in run_dir.glob("ckpt-*.npz"):
        _, meta = ckptio.read(path, CHECKPOINT_FORMAT, meta_only=True)
        steps.append((meta["info"]["seq"], meta["info"]["step"]))
    return max(steps)[1]


def test_killing_the_server_mid_training_loses_nothing_saved(tmp_path):
    """kill -9 `streamlit run app.py` while it trains; a new server shows the run
    at its newest checkpoint, curves included."""
    require_browser()
    folder = tmp_path / "checkpoints"
    with (
        streamlit_server(folder, tmp_path / "first.log") as (url, process),
        chromium_page() as page,
    ):
        page.goto(url)
        wait_for(lambda: step_count(page) == 0, what="a fresh run")
        button(page, "start").click()
        # the default run checkpoints every 1,000 steps but at most once per 30 s, and at
        # each clearly better dev accuracy
        wait_for(lambda: step_count(page) > 2300, timeout=120, what="2,300 steps")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    saved = newest_checkpoint_step(folder)
    assert saved > 0
    with streamlit_server(folder, tmp_path / "second.log") as (url, _), chromium_page() as page:
        page.goto(url)
        wait_for(lambda: step_count(page) == saved, what=f"the run back at step {saved}")
        trace = wait_for(lambda: page.evaluate(COST_TRACE_JS), what="the cost curve")
        assert trace["last"] == saved  # the curve comes back up to the checkpoint
        assert page.get_by_text("paused").count() > 0
        screenshot(page, "05_after_kill_and_restart")


def click_when_enabled(page, key):
    """Click the controls' button ``key`` if it is there; the other tab may have just
    flipped it (pause ↔ start)."""
    control = button(page, key)
    try:
        if control.count() and control.first.is_enabled():
            control.first.click(timeout=3_000)
            return True
    except Exception:  # noqa: BLE001 - gone mid-click: the rerun replaced it
        pass
    return False


def test_two_browser_sessions_steering_one_run_converge(tmp_path):
    """Two tabs issue conflicting commands in a tight loop: α changes, pause/start,
    rollbacks. Nothing raises; afterwards both show the same state."""
    require_browser()
    folder = tmp_path / "checkpoints"
    with (
        streamlit_server(folder, tmp_path / "server.log") as (url, _),
        chromium_pages(2) as (first, second),
    ):
        for page in (first, second):
            page.goto(url)
            wait_for(lambda page=page: step_count(page) == 0, what="a fresh run")
        button(first, "start").click()
        alphas = ["0.002", "0.0005", "0.003", "0.001"]
        for i in range(8):
            # tab 1 changes α; tab 2 toggles the run and steps it
            set_alpha(first, alphas[i % len(alphas)], "Pending:")
            button(first, "apply").click()
            click_when_enabled(second, "pause") or click_when_enabled(second, "start")
            time.sleep(0.5)
        # tab 2 rolls back while tab 1 starts the run again
        second.get_by_role("link", name="Checkpoints").click()
        second.get_by_text("Roll back to this checkpoint").wait_for(timeout=30_000)
        click_when_enabled(first, "start")
        choose(second, "Checkpoint", "pre-change")
        second.get_by_role("button", name="Roll back to this checkpoint").click()
        wait_for(
            lambda: second.get_by_text(re.compile(r"branch 1\b")).count() > 0, what="the rollback"
        )
        second.get_by_role("link", name="app").click()
        # both converge: paused after the rollback, same step, α and branch
        for page in (first, second):
            wait_for(
                lambda page=page: button(page, "start").count() > 0,
                what="paused in both tabs",
            )
        time.sleep(2)
        first.reload()
        second.reload()
        states = []
        for page in (first, second):
            wait_for(lambda page=page: step_count(page) >= 0, what="tiles")
            states.append(
                (
                    step_count(page),
                    metric(page, "α now"),
                    page.get_by_text(re.compile(r"branch 1\b")).count() > 0,
                )
            )
            assert page.locator('[data-testid="stException"]').count() == 0
        assert states[0] == states[1] and states[0][2]
        screenshot(first, "06_two_tabs_converged")
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log[-2000:]
