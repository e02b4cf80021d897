"""The training page's tiles on a long run with a tiny α, in a real browser (1400 × 900):
no value is cut off ("147,…", "2.78…"); each shows as much as fits its tile (147k,
2.78e-6), and the exact value is one hover away."""

from __future__ import annotations

import copy
import time

import pytest

from dlcore.trainer import RunConfig, Trainer
from tests.browser import button, chromium_page, require_browser, screenshot, streamlit_server
from tests.test_browser import wait_for
from tests.test_browser_sidebar import widen_sidebar_as_configured

pytestmark = pytest.mark.browser

#: Each tile's value and label: the text, the width it needs and the width its box gives.
TILES_JS = """() => Array.from(document.querySelectorAll('[data-testid="stMetric"]')).map(
    tile => {
        const measure = element => {
            const text = element.querySelector('p, div') || element;
            return {text: element.innerText.trim().split('\\n')[0], needs: text.scrollWidth,
                    has: Math.min(text.clientWidth, element.clientWidth)};
        };
        const value = measure(tile.querySelector('[data-testid="stMetricValue"]'));
        const label = measure(tile.querySelector('[data-testid="stMetricLabel"]'));
        return {label: label.text, value: value.text, needs: value.needs, has: value.has,
                label_needs: label.needs, label_has: label.has};
    })"""
STEP, EPOCH, ALPHA = 1_471_230, 65_432, 2.78e-6


def long_run_with_a_tiny_alpha(folder) -> None:
    """A run at step 1,471,230 (epoch 65,432) with α = 2.78e-6, as if it had trained for a
    day: the state of a fresh run, relabelled and checked like any checkpoint."""
    config = RunConfig(hidden=(64, 32), lr=ALPHA)
    with Trainer(config, folder) as fresh:
        arrays, meta = fresh.export_state()
    meta = copy.deepcopy(meta)
    meta["info"].update(step=STEP, epoch=EPOCH)
    meta["iterator"]["epoch"] = EPOCH
    Trainer(config, folder, start_from=(arrays, meta)).stop()


def tiles(page) -> dict:
    return {tile["label"]: tile for tile in page.evaluate(TILES_JS)}


def assert_nothing_cut(shown: dict) -> None:
    cut = {label: tile for label, tile in shown.items()
           if tile["needs"] > tile["has"] or tile["label_needs"] > tile["label_has"]}
    assert not cut, cut


def hover_help(page, label: str, shot: str | None = None) -> str:
    """The tooltip of the tile labelled ``label`` (and a screenshot of it, if named)."""
    tile = page.locator('[data-testid="stMetric"]').filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True))
    tile.get_by_test_id("stTooltipIcon").hover()
    tooltip = page.get_by_test_id("stTooltipContent")
    tooltip.wait_for(timeout=10_000)
    text = tooltip.inner_text()
    if shot:
        page.wait_for_timeout(500)  # the tooltip fades in
        screenshot(page, shot)
    page.mouse.move(0, 0)
    return text


def test_tiles_fit_their_boxes_and_keep_the_exact_value_on_hover(tmp_path):
    require_browser()
    folder = tmp_path / "checkpoints"
    long_run_with_a_tiny_alpha(folder)
    with (
        streamlit_server(folder, tmp_path / "server.log") as (url, _),
        chromium_page(width=1400, height=900) as page,
    ):
        page.goto(url)
        wait_for(lambda: tiles(page).get("Step", {}).get("value") == "1.47M",
                 what="the step tile")
        # 1) beside the 300 px sidebar Streamlit starts with, and the 380 px one app.py asks for
        for sidebar in ("300 px", "380 px"):
            if sidebar == "380 px":
                widen_sidebar_as_configured(page)
                time.sleep(1)
            shown = tiles(page)
            print(sidebar, {label: (t["value"], t["needs"], t["has"])
                            for label, t in shown.items()})
            assert shown["α now"]["value"] == "2.78e-6"
            assert shown["Epoch"]["value"] == "65,432"
            assert_nothing_cut(shown)
        assert "1,471,230" in hover_help(page, "Step", shot="item3_tiles_exact_on_hover")
        assert "2.78e-06" in hover_help(page, "α now")

        # 2) training: a cost, a speed, a dev accuracy that moves
        button(page, "start").click()
        wait_for(lambda: tiles(page)["Last cost J"]["value"] != "–", what="a cost")
        time.sleep(4)  # a few refreshes
        shown = tiles(page)
        print({label: tile["value"] for label, tile in shown.items()})
        assert_nothing_cut(shown)
        assert shown["Step"]["value"].endswith("M")
        screenshot(page, "item3_tiles")
