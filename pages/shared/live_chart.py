"""Live charts that update in place, keeping the user's zoom and hidden traces.

``st.plotly_chart`` gives a chart whose figure changed a new element on every refresh:
the browser builds a new plot and the user's zoom, pan and legend choices are lost
(tests/test_browser_zoom.py shows it). :func:`live_chart` draws the same plotly figure
in one element that stays (a custom component with a fixed key) and redraws it with
``Plotly.react``, which keeps what the user did as long as the figure's ``uirevision``
stays the same (every chart of ``pages.shared.charts`` sets it).

plotly.js is the one Streamlit's own plotly charts load (``window.Plotly``); if none
has loaded yet, the component loads plotly's own copy, served from ``static/`` (filled
from the plotly package at import; git-ignored).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import plotly
import plotly.graph_objects as go
import plotly.io as pio
import streamlit as st

APP_DIR = Path(__file__).resolve().parents[2]
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
STATIC_PLOTLY = APP_DIR / "static" / "plotly.min.js"
#: Layout defaults that make a chart drawn by Plotly.react look like Streamlit's own
#: (a few properties rather than a template: a template is ~10 kB on every refresh).
_AXIS = {"gridcolor": "#e6e9ef", "zerolinecolor": "#d0d4dc", "linecolor": "#d0d4dc"}
PAGE_STYLE = {"template": "none", "paper_bgcolor": "white", "plot_bgcolor": "white",
              "font": {"family": '"Source Sans", "Source Sans Pro", sans-serif',
                       "color": "#31333f"},
              "xaxis": _AXIS, "yaxis": _AXIS, "hoverlabel": {"namelength": -1}}

_JS = """
function withPlotly(draw) {
  if (window.Plotly) { draw(window.Plotly); return () => {}; }
  if (!document.querySelector("script[data-panda-plotly]")) {
    const script = document.createElement("script");
    script.src = "app/static/plotly.min.js";
    script.dataset.pandaPlotly = "1";
    document.head.appendChild(script);
  }
  const wait = setInterval(() => {
    if (window.Plotly) { clearInterval(wait); draw(window.Plotly); }
  }, 50);
  return () => clearInterval(wait);
}

export default function(component) {
  const { data, parentElement } = component;
  const box = parentElement.querySelector(".panda-live-chart");
  const spec = JSON.parse(data.spec);
  box.style.height = (spec.layout.height || 300) + "px";
  return withPlotly(Plotly => {
    // One redraw at a time: a refresh that arrives while the browser is still drawing
    // the previous one replaces it instead of queueing behind it.
    box._pandaNext = spec;
    if (box._pandaBusy) return;
    box._pandaBusy = true;
    requestAnimationFrame(() => {
      const next = box._pandaNext;
      Plotly.react(box, next.data, next.layout, {displaylogo: false, responsive: true});
      box._pandaBusy = false;
    });
  });
}
"""

_component = st.components.v2.component(
    "panda_live_chart", html='<div class="panda-live-chart"></div>', js=_JS,
    isolate_styles=False)


def provide_plotly_js() -> None:
    """Put plotly's own plotly.js where the page can load it (``static/``), if missing."""
    if STATIC_PLOTLY.exists():
        return
    try:
        STATIC_PLOTLY.parent.mkdir(exist_ok=True)
        shutil.copyfile(PLOTLY_JS, STATIC_PLOTLY)
    except OSError:
        pass  # a read-only app folder: Streamlit's own plotly.js is then the one used


provide_plotly_js()


def live_chart(figure: go.Figure, key: str) -> None:
    """Draw ``figure`` in the element ``key``, redrawn in place on every refresh."""
    figure.update_layout(PAGE_STYLE, overwrite=False)
    _component(key=key, data={"spec": pio.to_json(figure, validate=False)})
