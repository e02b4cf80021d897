"""Zoom and legend survive live refreshes: a person zooms into the cost chart and hides a
trace while training runs; two refreshes later the chart still shows what they chose."""

from __future__ import annotations

import time

import pytest

from tests.browser import button, chromium_page, require_browser, screenshot, streamlit_server
from tests.test_browser import step_count, wait_for

pytestmark = pytest.mark.browser

PLOT = "document.querySelectorAll('.js-plotly-plot')"
STATE_JS = """(i) => { const p = document.querySelectorAll('.js-plotly-plot')[i];
  const L = p._fullLayout;
  return {x: L.xaxis.range.slice(), y: L.yaxis.range.slice(),
          last: Math.max(...p._fullData.filter(t => t.name === 'J (raw)').flatMap(t =>
                Array.from(t.x || []))),
          hidden: p._fullData.filter(t => t.visible === 'legendonly').map(t => t.name)}; }"""


def cost_chart_index(page) -> int:
    titles = page.evaluate(f"() => Array.from({PLOT}).map(p => p._fullLayout.title.text)")
    return next(i for i, t in enumerate(titles) if t and "Cost J per step" in t)


def test_zoom_and_hidden_traces_survive_live_refreshes(tmp_path):
    require_browser()
    with streamlit_server(tmp_path / "checkpoints", tmp_path / "server.log") as (url, _):
        with chromium_page(1400, 900) as page:
            page.goto(url)
            wait_for(lambda: step_count(page) == 0, what="the step tile at 0")  # page is live
            button(page, "start").click()
            wait_for(lambda: page.evaluate(f"() => {PLOT}.length") >= 4, what="live charts")
            wait_for(lambda: page.evaluate(STATE_JS, cost_chart_index(page))["last"] > 300,
                     what="300 steps")
            index = cost_chart_index(page)
            # 1) the person drags a zoom box over the middle of the chart
            box = page.locator(".js-plotly-plot").nth(index).locator(".nsewdrag").first
            area = box.bounding_box()
            page.mouse.move(area["x"] + area["width"] * 0.3, area["y"] + area["height"] * 0.3)
            page.mouse.down()
            page.mouse.move(area["x"] + area["width"] * 0.6, area["y"] + area["height"] * 0.7,
                            steps=8)
            page.mouse.up()
            # 2) and hides the raw cost by clicking its legend entry
            entry = page.locator(".js-plotly-plot").nth(index).locator(
                ".traces", has=page.locator(".legendtext", has_text="J (raw)"))
            entry.locator(".legendtoggle").click()
            time.sleep(0.5)
            zoomed = page.evaluate(STATE_JS, index)
            assert zoomed["hidden"] == ["J (raw)"]
            # 3) two refreshes later (the charts redraw every 2 s while training)
            start_last = zoomed["last"]
            time.sleep(5)
            index = cost_chart_index(page)
            later = page.evaluate(STATE_JS, index)
            screenshot(page, "zoom-after-two-refreshes")
            print(f"\nZOOM before refreshes x={zoomed['x']} y={zoomed['y']}; "
                  f"after x={later['x']} y={later['y']}; hidden {later['hidden']}; "
                  f"steps {start_last} -> {later['last']}")
            assert later["last"] > start_last, "the chart did not refresh"
            assert later["x"] == pytest.approx(zoomed["x"]) and later["y"] == pytest.approx(
                zoomed["y"])
            assert later["hidden"] == ["J (raw)"]
            button(page, "pause").click()
