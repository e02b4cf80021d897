"""BatchNorm: the running estimates of μ and σ² beside the mini-batch and population values.

Per BN layer and unit: the running averages over time, the current mini-batch's
statistics, the true statistics of the whole training set, γ and β, and what the
difference does to dev accuracy (inference mode vs training mode).
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
import streamlit as st

from dlcore.downsample import downsample, smooth
from dlcore.trainer import Snapshot
from pages.shared import charts, ui

#: Heatmaps show at most this many evaluations (the newest, then every k-th one back):
#: about 3 px a column on a half-width chart. All 3,000+ evaluations of a long run took
#: the browser seconds to redraw at every refresh.
MAX_HEATMAP_COLUMNS = 150
#: A window of at most this many evaluations shows each mini-batch statistic as a
#: marker; a longer one as a line smoothed over evaluations (the raw values are a cloud).
MAX_BATCH_MARKERS = 60
#: β of that smoothing: about the last 1/(1 − β) = 10 evaluations.
BATCH_SMOOTHING = 0.9
UNIT_COLORS = charts.BRANCH_COLORS
#: The charts, two per row, always all of them in this order: a refresh replaces each
#: one in place and never adds, drops or moves one.
CHART_ROWS = (("bn_accuracy_modes", "bn_gamma_beta"),
              ("bn_running_mean_heatmap", "bn_running_var_heatmap"),
              ("bn_units_mean", "bn_units_var"),
              ("bn_error_mean", "bn_error_var"))
#: While training runs, a refresh with new data rebuilds one of these halves, in turn.
REFRESH_GROUPS = (CHART_ROWS[0] + CHART_ROWS[1], CHART_ROWS[2] + CHART_ROWS[3])
#: Margins fixed like the training page's live charts (``charts.LIVE_MARGIN``): plotly's
#: automatic margins re-measure and redraw every chart at every refresh. Room on the
#: right for a colour bar or the per-unit legend.
MARGIN = {**charts.LIVE_MARGIN, "t": 56}
LEGEND_MARGIN = {**MARGIN, "r": 150}
HEATMAP_MARGIN = {**MARGIN, "r": 90}

EXPLANATION = r"""
**BatchNorm at test time.** While training, a BN layer normalizes each unit with the
mean μ and variance σ² of the *current mini-batch*:
z_norm = (z − μ) / √(σ² + ε), then z̃ = γ·z_norm + β. At test time there may be a single
example, so there is no batch to take statistics from. Instead the layer keeps
exponentially weighted averages across the mini-batches seen during training,
**run = β·run + (1 − β)·batch** (β is the "BN β" hyperparameter, 0.9 by default, so the
estimate averages roughly the last 1/(1 − β) = 10 mini-batches), and uses those.
The charts below show how close these running estimates are to the mini-batch values
and to the true statistics of the whole training set ("population"), and the accuracy
on the dev set in inference mode (running estimates) versus training mode (the dev
set's own batch statistics).
"""


def main() -> None:
    trainer, snapshot = ui.page_start("BatchNorm")
    ui.messages(trainer, snapshot)
    if not snapshot.bn:
        st.info("This run has no BatchNorm layers (BatchNorm was off when it was created). "
                "Start a new run with BatchNorm on, on the training page, to see its "
                "statistics here.", icon=":material/info:")
        return
    layer, units, window = view_options(snapshot)
    ui.live_view(lambda s: layer_view(s, layer, units, window), trainer, snapshot,
                 while_running=charts.CHART_REFRESH_SECONDS)


def view_options(snapshot: Snapshot) -> tuple[str, list[int], int | None]:
    """The layer, the units to follow and the window of steps, beside the explanation."""
    layers = list(snapshot.bn)
    top = st.columns([3, 2], vertical_alignment="center")
    with top[1]:
        layer = st.segmented_control("BatchNorm layer", layers, default=layers[0], key="bn_layer",
                                     help="bn1 follows fc1, bn2 follows fc2, …") or layers[0]
        n_units = len(snapshot.bn[layer]["gamma"])
        units = st.multiselect("Units to follow", list(range(n_units)),
                               default=list(range(min(3, n_units))), key=f"bn_units_{layer}",
                               format_func=lambda u: f"unit {u}", max_selections=8)
        window = charts.steps_shown("bn_window")
    with top[0]:
        st.markdown(EXPLANATION)
    return layer, units, window


def layer_view(snapshot: Snapshot, layer: str, units: list[int], window: int | None) -> None:
    """The eight charts, every one at its place; built before the first is drawn, so that
    the browser swaps them together."""
    figures = layer_figures(snapshot, layer, units, window)
    for row in CHART_ROWS:
        for column, key in zip(st.columns(2), row, strict=True):
            column.plotly_chart(figures[key], key=key)


def layer_figures(snapshot: Snapshot, layer: str, units: list[int],
                  window: int | None) -> dict[str, go.Figure]:
    """The charts' figures, each built again only when there is something new to show.

    The BatchNorm picture changes at evaluations only; an unchanged figure is kept as it
    is by the browser, a new one is drawn afresh (Streamlit 1.67 remounts a plotly chart
    whose figure changed). While training runs, a refresh rebuilds one half of the charts
    (:data:`REFRESH_GROUPS`), the other half the next time: the browser redraws four charts
    at a time, never eight, so a click waits at most for four.
    """
    history = snapshot.bn[layer]["history"]
    view = (snapshot.run_id, snapshot.branch, layer, tuple(units), window)
    data = (len(snapshot.history["eval_step"]), len(history.get("eval_step", ())))
    cached = st.session_state.get("bn_figures")
    if cached is None or cached["view"] != view:  # another choice: all of it at once
        cached = {"view": view, "figures": {}, "built": [None] * len(REFRESH_GROUPS),
                  "next": 0}
    stale = [g for g, built in enumerate(cached["built"]) if built != data]
    if snapshot.status == "running" and len(stale) > 1:
        stale = [cached["next"]]
    if stale:
        builders = chart_builders(snapshot, layer, units, window)
        for group in stale:
            cached["figures"].update({key: builders[key]() for key in REFRESH_GROUPS[group]})
            cached["built"][group] = data
            cached["next"] = (group + 1) % len(REFRESH_GROUPS)
        st.session_state["bn_figures"] = cached
    return cached["figures"]


def chart_builders(snapshot: Snapshot, layer: str, units: list[int],
                   window: int | None) -> dict:
    """Per chart key, a function that builds its figure from this snapshot."""
    stats = snapshot.bn[layer]
    history = stats["history"]
    first = charts.first_step_shown(snapshot.history, window)
    builders = {"bn_accuracy_modes": lambda: accuracy_modes_figure(snapshot.history, first),
                "bn_gamma_beta": lambda: gamma_beta_figure(layer, stats)}
    for stat, label, scale in (("running_mean", "running μ", "RdBu"),
                               ("running_var", "running σ²", "Viridis")):
        builders[f"bn_{stat}_heatmap"] = (
            lambda stat=stat, label=label, scale=scale:
            running_heatmap(history, layer, stat, label, scale, first))
    for kind, symbol in (("mean", "μ"), ("var", "σ²")):
        builders[f"bn_units_{kind}"] = (lambda kind=kind, symbol=symbol:
                                        unit_lines_figure(stats, layer, units, kind, symbol,
                                                          first))
        builders[f"bn_error_{kind}"] = (lambda kind=kind, symbol=symbol:
                                        estimate_error_figure(stats, layer, kind, symbol))
    return builders


def accuracy_modes_figure(history: Mapping, first_step: int | None) -> go.Figure:
    layout = charts.base_layout("Dev accuracy: inference mode vs training mode",
                                "dev accuracy", height=320, live=True)
    layout["margin"] = MARGIN
    layout["yaxis"].update(tickformat=".0%", range=[0, 1.02])
    # Inside, at the bottom: the curves live near the top once the network learns.
    layout["legend"] = {"x": 1, "xanchor": "right", "y": 0.04, "yanchor": "bottom",
                        "bgcolor": "rgba(255, 255, 255, 0.8)", "font": {"size": 11}}
    steps = history["eval_step"]
    start = charts.start_index(steps, first_step)
    traces = []
    for name, label, color, dash in (
            ("dev_accuracy", "inference mode (running μ, σ²)", "#d62728", "solid"),
            ("dev_accuracy_train_mode", "training mode (dev batch's own μ, σ²)", "#7f7f7f",
             "dot")):
        xs, ys = downsample(steps[start:], history[name][start:], charts.MAX_POINTS)
        traces.append({"type": "scatter", "x": xs, "y": ys, "name": label,
                       "mode": "lines+markers" if len(xs) < 60 else "lines",
                       "line": {"color": color, "dash": dash, "width": 2}})
    return charts.figure(traces, layout)


def gamma_beta_figure(layer: str, stats: Mapping) -> go.Figure:
    layout = charts.base_layout(f"{layer}: learned scale γ and shift β per unit", "value",
                                x_title="unit", height=320, live=True)
    layout.update(barmode="group", bargap=0.15, margin=MARGIN)
    units = list(range(len(stats["gamma"])))
    return charts.figure([
        {"type": "bar", "x": units, "y": stats["gamma"], "name": "γ (scale)",
         "marker": {"color": "#1f77b4"}},
        {"type": "bar", "x": units, "y": stats["beta"], "name": "β (shift)",
         "marker": {"color": "#ff7f0e"}},
    ], layout)


def running_heatmap(history: Mapping, layer: str, stat: str, label: str, colorscale: str,
                    first_step: int | None) -> go.Figure:
    """One column per evaluation in the window: the newest one, then every k-th one back,
    at most :data:`MAX_HEATMAP_COLUMNS`."""
    title = f"{layer}: {label} per unit over time"
    steps = history.get("eval_step", ())
    start = charts.start_index(steps, first_step)
    count = len(steps) - start
    if count == 0:
        layout = charts.base_layout(title, "unit", height=340, live=True)
        layout["margin"] = HEATMAP_MARGIN
        charts.empty_note(layout, "No evaluation in this window yet")
        return charts.figure([], layout)
    keep = charts.newest_every_kth(count, MAX_HEATMAP_COLUMNS)
    values = history[stat][start:][keep]  # (evaluations, units)
    fig = charts.heatmap_figure(
        values.T, steps[start:][keep], list(range(values.shape[1])), title, "step", "unit",
        colorscale=colorscale, zmid=0 if stat == "running_mean" else None,
        colorbar_title=label, height=340,
        hovertemplate="step %{x}<br>unit %{y}<br>" + label + " %{z:.4g}<extra></extra>")
    fig.layout.margin = HEATMAP_MARGIN
    return fig


def unit_lines_figure(stats: Mapping, layer: str, units: list[int], kind: str, symbol: str,
                      first_step: int | None) -> go.Figure:
    """Per selected unit: the running estimate, the mini-batch statistic (markers in a short
    window, smoothed over evaluations in a long one) and the population value now."""
    history = stats["history"]
    layout = charts.base_layout(f"{layer}: {symbol} of the selected units", symbol, height=380,
                                live=True)
    layout["margin"] = LEGEND_MARGIN
    layout["legend"] = {"orientation": "v", "y": 1, "x": 1.02, "xanchor": "left",
                        "yanchor": "top", "font": {"size": 11}, "tracegroupgap": 4}
    all_steps = history.get("eval_step", ())
    start = charts.start_index(all_steps, first_step)
    steps = all_steps[start:]
    if not units or not len(steps):
        charts.empty_note(layout, "Select units above" if not units
                          else "No evaluation in this window yet")
        return charts.figure([], layout)
    markers = len(steps) <= MAX_BATCH_MARKERS
    traces = []
    for i, unit in enumerate(units):
        color = UNIT_COLORS[i % len(UNIT_COLORS)]
        # One legend group per unit, titled by it; hover names the unit too.
        group = {"legendgroup": f"unit {unit}", "legendgrouptitle": {"text": f"unit {unit}"},
                 "hovertemplate": f"unit {unit} %{{fullData.name}}<br>step %{{x}}<br>"
                                  f"{symbol} %{{y:.4g}}<extra></extra>"}
        xs, ys = downsample(steps, history[f"running_{kind}"][start:, unit], charts.MAX_POINTS)
        traces.append({"type": "scatter", "x": xs, "y": ys, "name": "running", "mode": "lines",
                       "line": {"color": color, "width": 2}, **group})
        batch = history.get(f"batch_{kind}")
        if batch is not None and markers:
            traces.append({"type": "scatter", "x": steps, "y": batch[start:, unit],
                           "name": "mini-batch", "mode": "markers",
                           "marker": {"color": color, "size": 5, "symbol": "circle-open"},
                           **group})
        elif batch is not None:
            xs, ys = downsample(steps, smooth(batch[start:, unit], BATCH_SMOOTHING),
                                charts.MAX_POINTS)
            traces.append({"type": "scatter", "x": xs, "y": ys, "name": "mini-batch, smoothed",
                           "mode": "lines", "line": {"color": color, "dash": "dot", "width": 1.5},
                           **group})
        value = float(stats[f"population_{kind}"][unit])
        traces.append({"type": "scatter", "x": [int(steps[0]), int(steps[-1])],
                       "y": [value, value], "name": "population (now)", "mode": "lines",
                       "line": {"color": color, "dash": "dash", "width": 1}, **group})
    return charts.figure(traces, layout)


def estimate_error_figure(stats: Mapping, layer: str, kind: str, symbol: str) -> go.Figure:
    """Population statistic vs the running estimate, per unit, and the estimate's error."""
    layout = charts.base_layout(f"{layer}: population {symbol} vs running estimate (now)",
                                symbol, x_title="unit", height=320, live=True)
    layout.update(barmode="group", bargap=0.15, margin=MARGIN)
    population = stats[f"population_{kind}"].tolist()
    running = stats[f"running_{kind}"].tolist()
    units = list(range(len(population)))
    return charts.figure([
        {"type": "bar", "x": units, "y": population, "name": f"population {symbol}",
         "marker": {"color": "#2ca02c"}},
        {"type": "bar", "x": units, "y": running, "name": f"running {symbol}",
         "marker": {"color": "#9467bd"}},
        {"type": "scatter", "x": units, "y": stats[f"{kind}_error"].tolist(),
         "name": "error (running − population)", "mode": "markers",
         "marker": {"color": "#d62728", "symbol": "x", "size": 7}},
    ], layout)


if __name__ == "__main__":
    main()
