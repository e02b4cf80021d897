"""Plotly figures built from snapshot arrays: no numerics beyond slicing.

Every curve is cut to the chosen window of steps and reduced to at most ``MAX_POINTS``
points by :func:`dlcore.downsample.downsample` (min-max buckets, so spikes stay
visible). Every chart over steps gets the same event markers: a vertical line per
hyperparameter change, checkpoint and rollback, with a hoverable symbol at its top.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.colors import qualitative

from dlcore.branches import COST_SMOOTHING
from dlcore.downsample import downsample, ewma, minmax_indices
from pages.shared.ui import describe_changes

#: Points per curve: min-max buckets of about one pixel each on a half-width chart.
#: More would not show, and every point is redrawn in the browser once a second.
MAX_POINTS = 1000
#: At most this many event lines per chart (the newest); more would hide the curves.
MAX_EVENT_LINES = 200
CLASS_COLORS = qualitative.D3 + qualitative.Pastel
BRANCH_COLORS = qualitative.Plotly

EVENT_STYLES = {
    "change": {"label": "hyperparameter change", "color": "#8e44ad", "symbol": "triangle-down",
               "dash": "dash", "width": 1.5},
    "checkpoint": {"label": "checkpoint", "color": "#5d8aa8", "symbol": "diamond",
                   "dash": "dot", "width": 1},
    "rollback": {"label": "rollback", "color": "#e67e22", "symbol": "triangle-left",
                 "dash": "dashdot", "width": 2},
    "divergence": {"label": "divergence", "color": "#c0392b", "symbol": "x",
                   "dash": "solid", "width": 2},
    "error": {"label": "error", "color": "#c0392b", "symbol": "x", "dash": "solid", "width": 2},
}


# ---------------------------------------------------------------------------
# Windows and traces
# ---------------------------------------------------------------------------


#: The windows of steps a chart can show: the last N steps, or the whole lineage.
WINDOWS = {"Last 500": 500, "Last 5,000": 5_000, "Last 50,000": 50_000, "All": None}
#: The live charts redraw every 2 s while training (the tiles every second): the browser
#: redrawing four plotly charts takes about 0.4 of a core at once a second, taken from the
#: training thread on a two-core machine (bench/RESULTS.md).
CHART_REFRESH_SECONDS = 2.0


def first_step_shown(history: Mapping, window: int | None) -> int | None:
    """The first step inside the window "last ``window`` steps" (None: everything)."""
    steps = history["step"]
    if not len(steps):
        steps = history.get("buckets/step", ())
    if not window or not len(steps):
        return None
    return int(steps[-1]) - window + 1


def step_series(history: Mapping, column: str, first_step: int | None,
                since: int = 0) -> tuple:
    """``(x, y)`` of a per-step column from ``first_step`` on (None: all), steps after
    ``since``: the bucket means of older steps, then the exact newest rows."""
    x, y = [], []
    for prefix in ("buckets/", ""):
        steps = history.get(f"{prefix}step", ())
        if len(steps):
            start = max(start_index(steps, first_step), index_until(steps, since))
            x.append(steps[start:])
            y.append(history[f"{prefix}{column}"][start:])
    if len(x) == 1:
        return x[0], y[0]
    return (np.concatenate(x), np.concatenate(y)) if x else (np.empty(0), np.empty(0))


def bucket_band(history: Mapping, column: str, first_step: int | None, name: str,
                color: str) -> list[dict]:
    """The min…max range of the bucketed (older) steps in view, as a shaded band: a
    spike in a bucket stays visible however many steps it averages."""
    steps = history.get("buckets/step", ())
    start = start_index(steps, first_step) if len(steps) else 0
    if not len(steps) or start >= len(steps):
        return []
    x = steps[start:]
    low, high = history[f"buckets/{column}/min"][start:], history[f"buckets/{column}/max"][start:]
    keep = np.unique(np.concatenate([minmax_indices(low, MAX_POINTS // 2),
                                     minmax_indices(high, MAX_POINTS // 2)]))
    return [{"type": "scatter", "x": x[keep], "y": low[keep], "mode": "lines",
             "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip",
             "name": f"{name} (min)", "legendgroup": name},
            {"type": "scatter", "x": x[keep], "y": high[keep], "mode": "lines",
             "line": {"width": 0}, "fill": "tonexty", "fillcolor": color, "name": name,
             "legendgroup": name, "hoverinfo": "skip"}]


def start_index(steps: Sequence, first_step: int | None) -> int:
    """Index of the first entry of ``steps`` (sorted) that is ≥ ``first_step``."""
    return 0 if first_step is None else bisect_left(steps, first_step)


def index_until(steps: Sequence, last_step: int) -> int:
    """How many entries of ``steps`` (sorted) are ≤ ``last_step``."""
    return bisect_right(steps, last_step)


#: Margins of the live step charts, fixed. With plotly's automatic margins (the default)
#: every redraw measures the legend and tick labels, grows the margins to fit and draws
#: again: 39% of plotly's time in the browser's profile of the live page
#: (``S.doAutoMargin``). Wide enough for the y tick labels ("0.0001", "100%") and three
#: rows of legend above the plot.
LIVE_MARGIN = {"l": 64, "r": 10, "t": 72, "b": 44, "autoexpand": False}


def base_layout(title: str, y_title: str, x_title: str = "step", height: int = 300,
                log_y: bool = False, live: bool = False) -> dict:
    """The layout every chart starts from, as a plain dict.

    ``live``: a chart redrawn on every refresh while training runs; it gets
    :data:`LIVE_MARGIN` instead of margins that grow to fit.
    """
    return {
        "title": {"text": title, "x": 0, "font": {"size": 15}},
        "height": height,
        "margin": dict(LIVE_MARGIN) if live else {"l": 10, "r": 10, "t": 48, "b": 10},
        "legend": {"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right",
                   "x": 1, "font": {"size": 11}},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}, "type": "log" if log_y else "linear"},
        "uirevision": title,  # keep zoom while the chart refreshes
    }


def new_figure(title: str, y_title: str, x_title: str = "step", height: int = 300,
               log_y: bool = False) -> go.Figure:
    """An empty figure with :func:`base_layout`, for charts built trace by trace."""
    return go.Figure(layout=base_layout(title, y_title, x_title, height, log_y))


def figure(traces: list[dict], layout: dict) -> go.Figure:
    """One ``go.Figure`` from plain dicts.

    The live charts are rebuilt every second while training runs, in the server
    process the training thread shares the GIL with. plotly validates every property
    each time a figure is changed, so a figure built by a dozen ``add_trace`` /
    ``update_layout`` calls cost ~20 ms; built in one constructor call it is a few.

    Each trace gets a ``uid`` from its name, so that a live chart redrawn with other
    traces around it (a new branch, new event kinds) keeps which ones the user hid.
    """
    for trace in traces:
        trace.setdefault("uid", str(trace.get("name", "")))
    return go.Figure(data=traces, layout=layout)


def line_trace(x, y, name: str, **style) -> dict:
    """A downsampled line trace (≤ MAX_POINTS points, spikes kept)."""
    x, y = downsample(x, y, MAX_POINTS)
    # SVG, not WebGL: a live chart is redrawn every second, and browsers cap WebGL contexts.
    return {"type": "scatter", "x": x, "y": y, "name": name, "mode": "lines", **style}


def add_line(fig: go.Figure, x, y, name: str, **style) -> None:
    fig.add_trace(line_trace(x, y, name, **style))


def empty_note(layout: dict, text: str) -> None:
    """Centre ``text`` on an empty chart whose x-axis shows the first steps to come."""
    layout["xaxis"]["range"] = [-5, 100]  # not plotly's default −1 … 1
    layout.setdefault("annotations", []).append(
        {"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5,
         "y": 0.5, "font": {"size": 13, "color": "gray"}})


# ---------------------------------------------------------------------------
# Event markers
# ---------------------------------------------------------------------------


def describe_event(event: Mapping) -> str:
    step, kind = event["step"], event["kind"]
    if kind == "change":
        source = event.get("source", "user")
        by = f" ({source})" if source != "user" else ""
        carried = ", moments carried" if event.get("carry_moments") else ""
        return f"step {step} · change{by}: {describe_changes(event['changes'])}{carried}"
    if kind == "checkpoint":
        note = f": {event['note']}" if event.get("note") else ""
        return f"step {step} · checkpoint {event['checkpoint']} ({event['checkpoint_kind']}){note}"
    if kind == "rollback":
        if event.get("checkpoint") is None:  # a committed look-ahead forks at its start
            note = event.get("note") or "look-ahead committed"
            return f"step {step} · {note} → branch {event['branch']}"
        return f"step {step} · rollback to {event['checkpoint']} → branch {event['branch']}"
    if kind == "autopilot":
        return f"step {step} · autopilot: {event['title']} ({event['evidence']})"
    if kind == "divergence":
        return f"step {step} · diverged: {event['cause']}"
    if kind == "error":
        return f"step {step} · error: {event.get('message', '')}"
    return f"step {step} · {kind}"


#: The hidden second y-axis (0 … 1 over the plot's height) that event markers use, so
#: that they span the chart on linear and log axes alike.
EVENT_AXIS = {"overlaying": "y", "range": [0, 1], "visible": False, "fixedrange": True}


def is_marked(event: Mapping) -> bool:
    """Events drawn on the charts: changes, rollbacks, divergences, errors and checkpoints
    made by hand. Periodic (and initial, final) checkpoints are not: a long run has
    hundreds, and they would drown the changes a babysitter looks for."""
    if event["kind"] == "checkpoint":
        return event.get("checkpoint_kind") == "manual"
    return event["kind"] in EVENT_STYLES


def event_traces(events: Sequence[Mapping], first_step=None) -> list[dict]:
    """Vertical lines for change/checkpoint/rollback (and divergence/error) events.

    Per kind of event, two traces on :data:`EVENT_AXIS`: its lines, as one path broken
    by gaps (``meta.event_lines``), and a hoverable symbol at the top of each line
    (``meta.events``). One path per kind, not one shape per event: a run checkpointed
    every 100 steps has hundreds of events, and hundreds of shapes made each refresh
    slow to build on the server and to draw in the browser.
    """
    shown = [e for e in events if is_marked(e)
             and (first_step is None or e["step"] >= first_step)][-MAX_EVENT_LINES:]
    traces = []
    for kind, style in EVENT_STYLES.items():
        group = [e for e in shown if e["kind"] == kind]
        if not group:
            continue
        steps = [e["step"] for e in group]
        traces.append({
            "type": "scatter", "x": [x for step in steps for x in (step, step, None)],
            "y": [0, 1, None] * len(steps), "yaxis": "y2", "mode": "lines",
            "name": f"{style['label']} lines", "showlegend": False, "hoverinfo": "skip",
            "line": {"color": style["color"], "width": style["width"], "dash": style["dash"]},
            "opacity": 0.7, "meta": {"event_lines": kind},
        })
        traces.append({
            "type": "scatter", "x": steps, "y": [0.97] * len(steps), "yaxis": "y2",
            "mode": "markers", "name": style["label"], "legendgroup": "events",
            "showlegend": False, "cliponaxis": False,
            "marker": {"symbol": style["symbol"], "size": 10, "color": style["color"]},
            "hovertext": [describe_event(e) for e in group], "hoverinfo": "text",
            "meta": {"events": kind},
        })
    return traces


def with_events(traces: list[dict], layout: dict, events, first_step) -> go.Figure:
    """The figure of ``traces`` and ``layout`` with the event markers added."""
    markers = event_traces(events, first_step)
    if markers:
        layout["yaxis2"] = EVENT_AXIS
    return figure(traces + markers, layout)


EVENTS_CAPTION = ("Markers: ▼ purple dashed = hyperparameter change, ◆ blue dotted = checkpoint "
                  "by hand (periodic ones are on the Checkpoints page), "
                  "◀ orange = rollback, ✕ red = divergence. Hover the symbol at the top of a "
                  "line for details.")


# ---------------------------------------------------------------------------
# The live page's charts
# ---------------------------------------------------------------------------


def cost_figure(history: Mapping, events, window: int | None, log_y: bool,
                other_branches: Sequence[tuple[int, Mapping, int]] = (),
                beta: float = COST_SMOOTHING) -> go.Figure:
    """Mini-batch cost J per step, raw and smoothed; other branches lighter behind it.

    other_branches: (number, history, fork_step); each is drawn from its fork on.
    beta: the smoothing's β (the engine records β = 0.98; another is computed here).
    """
    layout = base_layout("Cost J per step (mini-batch)", "J", log_y=log_y, live=True)
    traces = []
    first = first_step_shown(history, window)
    for number, branch_history, fork_step in other_branches:
        b_x, b_y = step_series(branch_history, "cost", first, since=fork_step)
        if len(b_x):
            traces.append(line_trace(
                b_x, b_y, f"branch {number}", opacity=0.6, legendgroup="branches",
                line={"width": 1.5, "color": BRANCH_COLORS[number % len(BRANCH_COLORS)]}))
    x, y = step_series(history, "cost", first)
    if not len(x):
        empty_note(layout, "No steps yet: press Start or Step")
    else:
        traces += bucket_band(history, "cost", first, "J range of older steps",
                              "rgba(31, 119, 180, 0.15)")
        traces.append(line_trace(x, y, "J (raw)",
                                 line={"width": 1, "color": "rgba(31, 119, 180, 0.35)"}))
        traces.append(line_trace(x, smoothed_cost(history, first, beta),
                                 f"J (smoothed, β = {beta:g})",
                                 line={"width": 2.5, "color": "#1f77b4"}))
    return with_events(traces, layout, events, first)


def smoothed_cost(history: Mapping, first_step: int | None, beta: float) -> np.ndarray:
    """The course's bias-corrected EWMA of J over the whole lineage, from ``first_step``
    on: the recorded ``cost_smoothed`` for β = 0.98, else computed (buckets count for the
    steps they hold)."""
    if beta == COST_SMOOTHING:
        return step_series(history, "cost_smoothed", first_step)[1]
    buckets, exact = history.get("buckets/cost", ()), history["cost"]
    values = np.concatenate([buckets, exact])
    counts = np.concatenate([history.get("buckets/count", np.empty(0)), np.ones(len(exact))])
    smoothed = ewma(values, beta, counts)
    steps = np.concatenate([history.get("buckets/step", np.empty(0, np.int64)),
                            history["step"]])
    return smoothed[start_index(steps, first_step):]


def steps_shown(key: str) -> int | None:
    """A page's "Steps shown" control with the training page's windows: the last N steps,
    or None for the whole lineage."""
    choice = st.segmented_control("Steps shown", list(WINDOWS), default="All", key=key,
                                  help="The last N steps or the whole lineage, as on the "
                                       "training page.")
    return WINDOWS.get(choice or "All")


def newest_every_kth(count: int, limit: int) -> slice:
    """Which of ``count`` rows to draw when at most ``limit`` fit: the newest, then every
    k-th one back (k as small as fits), so the newest evaluation is always a column."""
    stride = max(1, -(-count // limit))
    return slice((count - 1) % stride if count else 0, None, stride)


#: What the live charts' x axis can show, and its title.
X_AXES = {"step": "step", "epoch": "epoch", "time": "time"}


def axis_values(history: Mapping, axis: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(steps, x)``: every step the history holds (bucketed, then exact) and where it
    lies on ``axis``: the step itself, the fractional epoch (the steps of one epoch spread
    over it evenly) or the Unix time it was recorded. None if the history can't say (no
    steps yet; times from before Panda recorded them)."""
    steps = np.concatenate([history.get("buckets/step", np.empty(0, np.int64)),
                            history["step"]]).astype(np.float64)
    if not len(steps):
        return None
    if axis == "step":
        return steps, steps
    if axis == "time":
        x = np.concatenate([history.get("buckets/time", np.empty(0)), history["time"]])
        return (steps, x) if np.all(np.isfinite(x)) else None
    epochs = np.concatenate([history.get("buckets/epoch", np.empty(0, np.int32)),
                             history["epoch"]]).astype(np.float64)
    _, first, index, counts = np.unique(epochs, return_index=True, return_inverse=True,
                                        return_counts=True)
    return steps, epochs + (np.arange(len(epochs)) - first[index]) / counts[index]


def on_x_axis(figure: go.Figure, history: Mapping, axis: str) -> go.Figure:
    """The figure with its x values (steps) shown as epochs or wall-clock time instead
    (:func:`axis_values`); a history that can't say stays on steps."""
    mapping = axis_values(history, axis) if axis != "step" else None
    if mapping is None:
        return figure
    steps, x = mapping
    if axis == "time":
        x = x * 1000.0  # plotly's date axis counts milliseconds
    for trace in figure.data:
        if trace.x is None or trace.xaxis not in (None, "x"):
            continue
        values = np.array([np.nan if v is None else v for v in trace.x], np.float64)
        mapped = np.interp(values, steps, x)
        trace.x = [None if np.isnan(v) else float(m) for v, m in zip(values, mapped,
                                                                      strict=True)]
    figure.layout.xaxis.title.text = X_AXES[axis]
    if axis == "time":
        figure.layout.xaxis.type = "date"
    figure.layout.uirevision = f"{figure.layout.uirevision}:{axis}"  # a new axis, a new zoom
    return figure


def accuracy_figure(history: Mapping, events, window: int | None,
                    dataset: Mapping | None = None) -> go.Figure:
    """Train and dev accuracy per evaluation; the title says which rows were evaluated
    when a part is larger than the evaluation sample (``dlcore.loop.EVAL_ROWS``)."""
    title = "Accuracy per evaluation (inference mode)"
    if dataset is not None:
        sampled = [f"{part} on a {dataset[f'{part}_evaluated']:,}-row sample"
                   for part in ("train", "dev")
                   if dataset.get(f"{part}_evaluated", 0) < dataset[f"n_{part}"]]
        if sampled:
            title += "<br><sup>" + ", ".join(sampled) + "</sup>"
    layout = base_layout(title, "accuracy", live=True)
    layout["yaxis"].update(tickformat=".0%", range=[0, 1.02])
    first = first_step_shown(history, window)
    eval_steps = history["eval_step"]
    start = start_index(eval_steps, first)
    x = eval_steps[start:]
    traces = []
    for name, label, color in (("train_accuracy", "train", "#2ca02c"),
                               ("dev_accuracy", "dev", "#d62728")):
        xs, ys = downsample(x, history[name][start:], MAX_POINTS)
        traces.append({"type": "scatter", "x": xs, "y": ys, "name": label,
                       "line": {"color": color, "width": 2},
                       "mode": "lines+markers" if len(xs) < 60 else "lines",
                       "marker": {"size": 5}})
    return with_events(traces, layout, events, first)


def alpha_figure(history: Mapping, events, window: int | None) -> go.Figure:
    layout = base_layout("Learning rate α per step", "α", log_y=True, live=True)
    first = first_step_shown(history, window)
    x, y = step_series(history, "lr", first)
    traces = []
    if len(x):
        traces.append(line_trace(x, y, "α", line={"color": "#ff7f0e", "width": 2}))
    else:
        empty_note(layout, "No steps yet")
    return with_events(traces, layout, events, first)


def update_ratio_figure(history: Mapping, layers: Sequence[str], events,
                        window: int | None) -> go.Figure:
    """‖ΔW‖/‖W‖ per dense layer; around 1e-3 is the usual healthy value."""
    layout = base_layout("Update-to-weight ratio ‖ΔW‖ / ‖W‖ per layer", "ratio", log_y=True,
                         live=True)
    first = first_step_shown(history, window)
    traces = []
    if not len(history["step"]) and not len(history.get("buckets/step", ())):
        empty_note(layout, "No steps yet")
        return with_events(traces, layout, events, first)
    for i, layer in enumerate(layers):
        if f"update_ratio/{layer}" in history:
            x, y = step_series(history, f"update_ratio/{layer}", first)
            traces.append(line_trace(
                x, y, layer, line={"width": 1.5, "color": BRANCH_COLORS[i % len(BRANCH_COLORS)]}))
    layout["shapes"] = [{"type": "line", "xref": "x domain", "x0": 0, "x1": 1, "yref": "y",
                         "y0": 1e-3, "y1": 1e-3,
                         "line": {"dash": "dash", "color": "gray", "width": 1}}]
    # On a log axis an annotation's y is log10 of the value (a plotly.js convention).
    layout["annotations"] = [{"x": 0, "xref": "paper", "y": -3, "yref": "y",
                              "text": "1e-3 (rule of thumb)", "showarrow": False,
                              "xanchor": "left", "yanchor": "bottom",
                              "bgcolor": "rgba(255, 255, 255, 0.8)",
                              "font": {"size": 10, "color": "gray"}}]
    return with_events(traces, layout, events, first)


def decision_region_figure(grid: Mapping, class_names: Sequence[str],
                           max_points: int = 1500) -> go.Figure:
    """Predicted class over the plane (background) and the training points (dots)."""
    n = len(class_names)
    colors = [CLASS_COLORS[c % len(CLASS_COLORS)] for c in range(n)]
    # A stepwise colour scale: class c gets colors[c] on [c/n, (c+1)/n].
    scale = []
    for c, color in enumerate(colors):
        scale += [[c / n, color], [(c + 1) / n, color]]
    fig = new_figure("Decision regions (training points)", "x₂", x_title="x₁", height=420)
    fig.add_trace(go.Heatmap(x=grid["x"], y=grid["y"], z=grid["classes"], colorscale=scale,
                             zmin=-0.5, zmax=n - 0.5, opacity=0.35, showscale=False,
                             hoverinfo="skip", zsmooth=False))
    points, labels = grid["points"], grid["labels"]
    stride = max(1, len(labels) // max_points)
    fig.add_trace(go.Scatter(
        x=points[::stride, 0], y=points[::stride, 1], mode="markers", name="training points",
        marker={"color": labels[::stride], "colorscale": scale, "cmin": -0.5, "cmax": n - 0.5,
                "size": 6, "line": {"width": 0.5, "color": "white"}},
        text=[class_names[int(c)] for c in labels[::stride]],
        hovertemplate="class %{text}<br>(%{x:.2f}, %{y:.2f})<extra></extra>", showlegend=False))
    fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def heatmap_figure(z, x, y, title: str, x_title: str, y_title: str, colorscale="Viridis",
                   height: int = 320, zmid=None, colorbar_title: str = "",
                   hovertemplate: str | None = None) -> go.Figure:
    trace = {"type": "heatmap", "z": z, "x": x, "y": y, "colorscale": colorscale, "zmid": zmid,
             "colorbar": {"title": {"text": colorbar_title}, "thickness": 12}}
    if hovertemplate is not None:
        trace["hovertemplate"] = hovertemplate
    return figure([trace], base_layout(title, y_title, x_title=x_title, height=height))
