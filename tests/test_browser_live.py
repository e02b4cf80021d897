"""Live pages while the default run trains at full speed, in a real browser (1400 × 900).

Every live view updates in place: sampled eight times 0.7 s apart, a page shows the
same charts each time, each of them once (Streamlit 1.67 draws a plotly chart whose
figure changed afresh and keeps the old one hidden until the refresh ends: those are
reported, not shown). And a live page lets go at once: a click on another page in the
sidebar shows that page's title within a second.
"""

from __future__ import annotations

import time

import pytest

from tests.browser import button, chromium_page, require_browser, screenshot, streamlit_server
from tests.test_browser import step_count, wait_for

pytestmark = pytest.mark.browser

WIDTH, HEIGHT = 1400, 900
SAMPLES, SAMPLE_GAP = 8, 0.7
#: Clicking a page in the sidebar shows its title within this many seconds. Leaving
#: used to wait for every refresh queued on the old page (12-16 s); now it takes well
#: under a second on a quiet machine (0.2-0.7 s in CI on 2026-12-03). The bound leaves
#: room for a loaded CI machine and a page's first import, not for queued refreshes.
LEAVE_SECONDS = 5.0

#: Per chart key, how many of its elements the page shows (a chart replaced during a
#: rerun stays in the page, hidden, until the rerun ends: counted apart), how many plotly
#: plots are drawn and visible, and how many elements are greyed out as stale.
CHARTS_JS = """(keys) => {
    const shown = element => element.offsetParent !== null;
    const count = {}, hidden = {};
    for (const key of keys) {
        const elements = Array.from(document.querySelectorAll('.st-key-' + key));
        count[key] = elements.filter(shown).length;
        hidden[key] = elements.length - count[key];
    }
    return {
        count, hidden,
        drawn: Array.from(document.querySelectorAll('.js-plotly-plot')).filter(shown).length,
        stale: document.querySelectorAll(
            '[data-testid="stElementContainer"][data-stale="true"]').length,
    };
}"""
TRAINING_CHARTS = ["chart_cost", "chart_accuracy", "chart_alpha", "chart_update_ratio",
                   "schedule_preview"]
BATCHNORM_CHARTS = ["bn_accuracy_modes", "bn_gamma_beta", "bn_running_mean_heatmap",
                    "bn_running_var_heatmap", "bn_units_mean", "bn_units_var", "bn_error_mean",
                    "bn_error_var"]


def sample_charts(page, keys: list[str], samples: int = SAMPLES,
                  gap: float = SAMPLE_GAP) -> list[dict]:
    """The page's charts ``samples`` times, ``gap`` seconds apart."""
    taken = []
    for _ in range(samples):
        taken.append(page.evaluate(CHARTS_JS, keys))
        time.sleep(gap)
    return taken


def in_place(taken: list[dict]) -> bool:
    """Each sample shows every chart once, and most samples catch no refresh greying the
    page out (each one is short)."""
    return (all(set(s["count"].values()) == {1} for s in taken)
            and sum(s["stale"] > 0 for s in taken) <= len(taken) // 2)


def describe(taken: list[dict]) -> str:
    return (f"charts shown per sample {[sum(s['count'].values()) for s in taken]}, "
            f"replaced ones kept hidden {[sum(s['hidden'].values()) for s in taken]}, "
            f"plots drawn {[s['drawn'] for s in taken]}, "
            f"stale elements {[s['stale'] for s in taken]}")


def leave_for(page, link: str, title: str) -> float:
    """Seconds from a click on ``link`` in the sidebar to ``title`` on the new page."""
    started = time.monotonic()
    page.get_by_test_id("stSidebarNav").get_by_role("link", name=link).click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=120_000)
    return time.monotonic() - started


def tall_screenshot(page, name: str, height: int = 2300) -> None:
    """The whole page: Streamlit scrolls inside its main block, so the viewport grows."""
    page.set_viewport_size({"width": WIDTH, "height": height})
    time.sleep(2.5)  # a refresh or two at the new size
    screenshot(page, name)
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})


def settle_on(page, link: str, title: str, charts: int) -> float:
    """Open a page and wait until its live charts are drawn; returns the time to leave."""
    seconds = leave_for(page, link, title)
    wait_for(lambda: page.locator(".js-plotly-plot").count() >= charts, timeout=60,
             what=f"the {charts} charts of {title}")
    time.sleep(3)  # a few refreshes: what a person sees after a glance
    return seconds


def test_live_pages_update_in_place_and_let_go_at_once_while_training(tmp_path):
    require_browser()
    with (
        streamlit_server(tmp_path / "checkpoints", tmp_path / "server.log") as (url, _),
        chromium_page(width=WIDTH, height=HEIGHT) as page,
    ):
        page.goto(url)
        wait_for(lambda: step_count(page) == 0, what="the step tile at 0")
        button(page, "start").click()
        # 40 evaluations: long enough for heatmaps and curves with some history
        wait_for(lambda: step_count(page) > 2000, timeout=180, what="2,000 steps")
        leaving = {}

        # 1) the training page: four live charts and the decay preview
        training = sample_charts(page, TRAINING_CHARTS)
        print("training page:", describe(training))
        screenshot(page, "item1_training_running")
        leaving["training → BatchNorm"] = settle_on(page, "BatchNorm", "BatchNorm", 8)

        # 2) the BatchNorm page: eight live charts, every one drawn once
        batchnorm = sample_charts(page, BATCHNORM_CHARTS)
        print("BatchNorm page:", describe(batchnorm))
        tall_screenshot(page, "item1_batchnorm_running")

        # 3) leaving each page takes a moment, not the time of the refreshes queued on it
        leaving["BatchNorm → Checkpoints"] = settle_on(page, "Checkpoints", "Checkpoints", 1)
        leaving["Checkpoints → BatchNorm"] = settle_on(page, "BatchNorm", "BatchNorm", 8)
        leaving["BatchNorm → training"] = settle_on(
            page, "app", "Panda: babysit one network while it trains", 5)
        leaving["training → Checkpoints"] = settle_on(page, "Checkpoints", "Checkpoints", 1)
        leaving["Checkpoints → Look-ahead"] = leave_for(
            page, "Look-ahead", "Look-ahead: try a change before making it")
        print("seconds to leave:", {k: round(v, 2) for k, v in leaving.items()})
    assert in_place(training), describe(training)
    assert in_place(batchnorm), describe(batchnorm)
    assert all(seconds <= LEAVE_SECONDS for seconds in leaving.values()), leaving

