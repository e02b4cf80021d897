"""BatchNorm: the running estimates of μ and σ² beside the mini-batch and population values.

Per BN layer and unit: the running averages over time, the current mini-batch's
statistics, the true statistics of the whole training set, γ and β, and what the
difference does to dev accuracy (inference mode vs training mode).
"""

from __future__ import annotations

from collections.abc import Mapping

import plotly.graph_objects as go
import streamlit as st

from dlcore.downsample import downsample
from dlcore.trainer import Snapshot
from pages.shared import charts, ui

#: Heatmaps show at most this many evaluations (every k-th one beyond it).
MAX_HEATMAP_COLUMNS = 400
UNIT_COLORS = charts.BRANCH_COLORS

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
    layers = list(snapshot.bn)
    top = st.columns([3, 2], vertical_alignment="center")
    with top[1]:
        layer = st.segmented_control("BatchNorm layer", layers, default=layers[0], key="bn_layer",
                                     help="bn1 follows fc1, bn2 follows fc2, …") or layers[0]
        n_units = len(snapshot.bn[layer]["gamma"])
        units = st.multiselect("Units to follow", list(range(n_units)),
                               default=list(range(min(3, n_units))), key=f"bn_units_{layer}",
                               format_func=lambda u: f"unit {u}", max_selections=8)
    with top[0]:
        st.markdown(EXPLANATION)
    ui.live_view(lambda s: layer_view(s, layer, units), trainer, snapshot)


def layer_view(snapshot: Snapshot, layer: str, units: list[int]) -> None:
    stats = snapshot.bn[layer]
    history = stats["history"]
    left, right = st.columns(2)
    left.plotly_chart(accuracy_modes_figure(snapshot.history), key="bn_accuracy_modes")
    right.plotly_chart(gamma_beta_figure(layer, stats), key="bn_gamma_beta")
    left, right = st.columns(2)
    for column, stat, label, scale in ((left, "running_mean", "running μ", "RdBu"),
                                       (right, "running_var", "running σ²", "Viridis")):
        column.plotly_chart(running_heatmap(history, layer, stat, label, scale),
                            key=f"bn_{stat}_heatmap")
    if not len(history.get("eval_step", ())):
        return
    left, right = st.columns(2)
    for column, kind, symbol in ((left, "mean", "μ"), (right, "var", "σ²")):
        column.plotly_chart(unit_lines_figure(stats, layer, units, kind, symbol),
                            key=f"bn_units_{kind}")
    left, right = st.columns(2)
    for column, kind, symbol in ((left, "mean", "μ"), (right, "var", "σ²")):
        column.plotly_chart(estimate_error_figure(stats, layer, kind, symbol),
                            key=f"bn_error_{kind}")


def accuracy_modes_figure(history: Mapping) -> go.Figure:
    layout = charts.base_layout("Dev accuracy: inference mode vs training mode",
                                "dev accuracy", height=320)
    layout["yaxis"].update(tickformat=".0%", range=[0, 1.02])
    x = history["eval_step"]
    traces = []
    for name, label, color, dash in (
            ("dev_accuracy", "inference mode (running μ, σ²)", "#d62728", "solid"),
            ("dev_accuracy_train_mode", "training mode (dev batch's own μ, σ²)", "#7f7f7f",
             "dot")):
        xs, ys = downsample(x, history[name], charts.MAX_POINTS)
        traces.append({"type": "scatter", "x": xs, "y": ys, "name": label,
                       "mode": "lines+markers" if len(xs) < 60 else "lines",
                       "line": {"color": color, "dash": dash, "width": 2}})
    return charts.figure(traces, layout)


def gamma_beta_figure(layer: str, stats: Mapping) -> go.Figure:
    layout = charts.base_layout(f"{layer}: learned scale γ and shift β per unit", "value",
                                x_title="unit", height=320)
    layout.update(barmode="group", bargap=0.15)
    units = list(range(len(stats["gamma"])))
    return charts.figure([
        {"type": "bar", "x": units, "y": stats["gamma"], "name": "γ (scale)",
         "marker": {"color": "#1f77b4"}},
        {"type": "bar", "x": units, "y": stats["beta"], "name": "β (shift)",
         "marker": {"color": "#ff7f0e"}},
    ], layout)


def running_heatmap(history: Mapping, layer: str, stat: str, label: str,
                    colorscale: str) -> go.Figure:
    steps = history.get("eval_step", ())
    stride = max(1, -(-len(steps) // MAX_HEATMAP_COLUMNS))
    values = history[stat][::stride]  # (evaluations, units)
    return charts.heatmap_figure(
        values.T, steps[::stride], list(range(values.shape[1])),
        f"{layer}: {label} per unit over time", "step", "unit", colorscale=colorscale,
        zmid=0 if stat == "running_mean" else None, colorbar_title=label, height=340,
        hovertemplate="step %{x}<br>unit %{y}<br>" + label + " %{z:.4g}<extra></extra>")


def unit_lines_figure(stats: Mapping, layer: str, units: list[int], kind: str,
                      symbol: str) -> go.Figure:
    """Running estimate vs mini-batch statistic per evaluation; the population value now."""
    history = stats["history"]
    layout = charts.base_layout(f"{layer}: {symbol} of the selected units", symbol, height=340)
    layout["legend"] = {"orientation": "v", "y": 1, "x": 1.02, "xanchor": "left",
                        "yanchor": "top", "font": {"size": 11}}
    steps = history["eval_step"]
    traces = []
    for i, unit in enumerate(units):
        color = UNIT_COLORS[i % len(UNIT_COLORS)]
        for stat, label, dash, mode in ((f"running_{kind}", "running", "solid", "lines"),
                                        (f"batch_{kind}", "mini-batch", "dot", "lines+markers")):
            if stat not in history:
                continue
            xs, ys = downsample(steps, history[stat][:, unit], charts.MAX_POINTS)
            traces.append({"type": "scatter", "x": xs, "y": ys, "name": f"unit {unit} {label}",
                           "mode": mode, "legendgroup": f"unit {unit}", "marker": {"size": 3},
                           "line": {"color": color, "dash": dash, "width": 1.5}})
        # The population statistic over time if the history has it, else its value now.
        population = history.get(f"population_{kind}")
        if population is not None:
            xs, ys = downsample(steps, population[:, unit], charts.MAX_POINTS)
        else:
            value = float(stats[f"population_{kind}"][unit])
            xs, ys = [int(steps[0]), int(steps[-1])], [value, value]
        traces.append({"type": "scatter", "x": xs, "y": ys, "name": f"unit {unit} population",
                       "mode": "lines", "legendgroup": f"unit {unit}",
                       "line": {"color": color, "dash": "dash", "width": 1.5}})
    if not units:
        charts.empty_note(layout, "Select units above")
    return charts.figure(traces, layout)


def estimate_error_figure(stats: Mapping, layer: str, kind: str, symbol: str) -> go.Figure:
    """Population statistic vs the running estimate, per unit, and the estimate's error."""
    layout = charts.base_layout(f"{layer}: population {symbol} vs running estimate (now)",
                                symbol, x_title="unit", height=320)
    layout.update(barmode="group", bargap=0.15)
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
