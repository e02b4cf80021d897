"""Distributions: each layer's weights and gradients over time, as TensorBoard draws them.

At every evaluation the engine records nine percentiles of each dense layer's weights W
and of its last mini-batch gradient dW (``dlcore.history.PERCENTILES``: the minimum, the
points at ±1.5σ, ±1σ and ±0.5σ of a normal distribution, the median, the maximum). This
page draws them as nested bands over steps: weights that drift or blow up, gradients
that vanish toward 0 or explode, a layer that stops learning.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from dlcore.history import PERCENTILES
from dlcore.trainer import Snapshot
from pages.shared import charts, ui

#: A chart shows at most this many evaluations (the newest, then every k-th one back):
#: 9 percentiles each, two charts per layer, redrawn at each evaluation while training.
MAX_COLUMNS = 300
#: The bands, outermost first: indices into PERCENTILES (low, high), the legend's name
#: (short: five fit on one line above a half-width chart; the explanation says what they
#: hold) and the fill's opacity (nested fills add up: the middle is darkest).
BANDS = ((0, 8, "min…max", 0.12),
         (1, 7, "±1.5σ", 0.18),
         (2, 6, "±1σ", 0.24),
         (3, 5, "±0.5σ", 0.30))
MEDIAN = PERCENTILES.index(50.0)
KINDS = {"weights": ("weights W", "31, 119, 180"), "grads": ("gradients dW", "214, 39, 40")}
MARGIN = {**charts.LIVE_MARGIN, "t": 56, "r": 20}

EXPLANATION = """
Each band holds a share of the layer's values at every evaluation: the palest one
everything from the smallest to the largest, the darker ones the middle 87 %, 68 % and
38 % (the values a normal distribution has within ±1.5σ, ±1σ and ±0.5σ); the line is
the median. **Weights** should spread slowly and settle; a band that keeps widening is
often α too large or too little regularization. **Gradients** (dW of the mini-batch at
that step) that collapse onto 0 while the cost is still high mean the layer has stopped
learning (vanishing gradients, saturated units); a band that widens by orders of
magnitude comes before a divergence.
"""


def main() -> None:
    trainer, snapshot = ui.page_start("Distributions")
    ui.messages(trainer, snapshot)
    layers, window = view_options(snapshot)
    ui.live_view(lambda s: layer_rows(s, layers, window), trainer, snapshot,
                 while_running=charts.CHART_REFRESH_SECONDS)


def view_options(snapshot: Snapshot) -> tuple[list[str], int | None]:
    """The layers to draw and the window of steps, beside the explanation."""
    top = st.columns([3, 2], vertical_alignment="center")
    with top[1]:
        layers = st.multiselect("Layers", list(snapshot.layers), default=list(snapshot.layers),
                                key="distribution_layers",
                                help="fc1 is the first dense layer (input → first hidden "
                                     "layer); the last one computes the class scores.")
        window = charts.steps_shown("distribution_window")
    with top[0]:
        st.markdown(EXPLANATION)
    return layers, window


def layer_rows(snapshot: Snapshot, layers: list[str], window: int | None) -> None:
    """One row per layer: its weights on the left, its gradients on the right."""
    if not layers:
        st.info("Choose one or more layers above.", icon=":material/info:")
        return
    figures = distribution_figures(snapshot, layers, window)
    for layer in layers:
        st.caption(layer_summary(snapshot.history, layer))
        for column, kind in zip(st.columns(2), KINDS, strict=True):
            column.plotly_chart(figures[(layer, kind)], key=f"distribution_{layer}_{kind}")


def distribution_figures(snapshot: Snapshot, layers: list[str],
                         window: int | None) -> dict[tuple[str, str], go.Figure]:
    """The figures, built again only after a new evaluation or another choice: an
    unchanged figure is left as it is by the browser."""
    view = (snapshot.run_id, snapshot.branch, tuple(layers), window,
            len(snapshot.history["eval_step"]), len(snapshot.events))
    cached = st.session_state.get("distribution_figures")
    if cached is None or cached["view"] != view:
        first = charts.first_step_shown(snapshot.history, window)
        cached = {"view": view,
                  "figures": {(layer, kind): distribution_figure(snapshot.history, layer, kind,
                                                                 snapshot.events, first)
                              for layer in layers for kind in KINDS}}
        st.session_state["distribution_figures"] = cached
    return cached["figures"]


def evaluations_shown(history: Mapping, column: str,
                      first_step: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, percentiles)`` of the evaluations in view that recorded ``column``: the
    newest, then every k-th one back, at most :data:`MAX_COLUMNS`. Evaluations from before
    Panda recorded distributions read NaN and are left out."""
    steps = history["eval_step"]
    values = history.get(column)
    if values is None or not len(steps):
        return np.empty(0, np.int64), np.empty((0, len(PERCENTILES)))
    start = charts.start_index(steps, first_step)
    steps, values = np.asarray(steps[start:]), np.asarray(values[start:])
    recorded = np.all(np.isfinite(values), axis=1)
    steps, values = steps[recorded], values[recorded]
    keep = charts.newest_every_kth(len(steps), MAX_COLUMNS)
    return steps[keep], values[keep]


def distribution_figure(history: Mapping, layer: str, kind: str, events,
                        first_step: int | None) -> go.Figure:
    label, rgb = KINDS[kind]
    layout = charts.base_layout(f"{layer}: {label}", label.split()[-1], height=320, live=True)
    layout["margin"] = MARGIN
    layout["hovermode"] = "x unified"
    steps, values = evaluations_shown(history, f"{kind}/{layer}", first_step)
    if not len(steps):
        charts.empty_note(layout, "No evaluation in this window yet"
                          if len(history["eval_step"]) else "No evaluation yet")
        return charts.figure([], layout)
    steps = steps.tolist()
    traces = []
    for low, high, name, opacity in BANDS:
        traces.append({"type": "scatter", "x": steps, "y": values[:, low].tolist(),
                       "mode": "lines", "line": {"width": 0}, "showlegend": False,
                       "hoverinfo": "skip", "name": f"{name} (low)", "legendgroup": name})
        traces.append({"type": "scatter", "x": steps, "y": values[:, high].tolist(),
                       "mode": "lines", "line": {"width": 0}, "fill": "tonexty",
                       "fillcolor": f"rgba({rgb}, {opacity})", "name": name,
                       "legendgroup": name, "customdata": values[:, low].tolist(),
                       "hovertemplate": "%{customdata:.3g} … %{y:.3g}"})
    traces.append({"type": "scatter", "x": steps, "y": values[:, MEDIAN].tolist(),
                   "mode": "lines", "name": "median", "line": {"color": f"rgb({rgb})",
                                                               "width": 1.5},
                   "hovertemplate": "%{y:.3g}"})
    return charts.with_events(traces, layout, events, first_step)


def layer_summary(history: Mapping, layer: str) -> str:
    """The ±1σ band's width at the newest evaluation, and how it changed since the first."""
    low, high = BANDS[2][:2]
    parts = []
    for kind, (label, _) in KINDS.items():
        steps, values = evaluations_shown(history, f"{kind}/{layer}", None)
        if not len(values):
            continue
        width = float(values[-1, high] - values[-1, low])
        text = f"{label} ±1σ band {width:.3g} wide"
        initial = float(values[0, high] - values[0, low])
        if len(values) > 1 and initial > 0:
            text += f" (×{width / initial:.3g} since step {int(steps[0]):,})"
        parts.append(text)
    return f"**{layer}**: " + (" · ".join(parts) if parts else "no evaluation recorded yet")

if __name__ == "__main__":
    main()
