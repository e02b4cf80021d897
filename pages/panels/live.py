"""The live view: tiles (step, epoch, α now, cost, dev accuracy, speed) and the learning
curves, redrawn while training runs; decision regions for 2-D data."""

from __future__ import annotations

import numpy as np
import streamlit as st

from dlcore.trainer import Snapshot, Trainer
from pages.shared import charts, ui
from pages.shared.live_chart import live_chart


def panel(trainer: Trainer, snapshot: Snapshot) -> None:
    options = chart_options()
    ui.live_view(tiles, trainer, snapshot)
    ui.live_view(lambda s: live_charts(s, **options), trainer, snapshot,
                 while_running=charts.CHART_REFRESH_SECONDS)


def chart_options() -> dict:
    """The window, the x axis, the cost's scale and its smoothing, as the user set them."""
    with st.container(horizontal=True, vertical_alignment="center"):
        choice = st.segmented_control("Window", list(charts.WINDOWS), default="All", key="window",
                                      label_visibility="collapsed",
                                      help="Show the last N steps or the whole lineage.")
        axis = st.segmented_control("x axis", list(charts.X_AXES), default="step",
                                    key="x_axis", format_func=lambda a: f"by {a}",
                                    label_visibility="collapsed",
                                    help="The charts' x axis: steps, epochs (fractional) or "
                                         "the wall-clock time each step was trained.")
        log_y = st.toggle("Log-scale cost", key="log_y")
        beta = st.slider("Smoothing β", min_value=0.0, max_value=0.999, value=0.98,
                         step=0.001, format="%.3f", key="smoothing", width=220,
                         help="The smoothed cost is the course's exponentially weighted "
                              "average v = β·v + (1 − β)·J, shown with its bias correction "
                              "v / (1 − βᵗ): it averages about the last 1/(1 − β) steps. "
                              "0 shows the raw cost.")
    return {"window": charts.WINDOWS.get(choice or "All"), "log_y": log_y, "beta": beta,
            "axis": axis or "step"}


def tiles(snapshot: Snapshot) -> None:
    """Five tiles, each value as exactly as fits its tile (147k, 2.78e-6); the exact value
    is in its help, on hover. The speed is the step tile's second line: six tiles beside
    a 380 px sidebar left a value 98 px, too little for "2.78e-6" or "Dev accuracy"."""
    history = snapshot.history
    cost = float(history["cost"][-1]) if len(history["cost"]) else None
    dev = history["dev_accuracy"]
    dev_now = float(dev[-1]) if len(dev) else None
    dev_delta = (f"{100 * (float(dev[-1]) - float(dev[-2])):+.1f} pts" if len(dev) > 1
                 else None)
    speed = round(snapshot.steps_per_second)
    columns = st.columns(5)
    columns[0].metric("Step", ui.format_compact(snapshot.step),
                      f"{ui.format_compact(speed)} steps/s", delta_color="off",
                      delta_arrow="off", border=True,
                      help=f"**{ui.format_exact(snapshot.step)}** steps on this lineage, "
                           f"training at {speed:,} steps/s over the last seconds.")
    for column, label, value, about in (
            (columns[1], "Epoch", snapshot.epoch, "Passes over the training set."),
            (columns[2], "α now", snapshot.alpha,
             "The learning rate of the next step (after any decay)."),
            (columns[3], "Last cost J", cost, "Cost of the last mini-batch (training mode).")):
        exact = "" if value is None else f"**{ui.format_exact(value)}**. "
        column.metric(label, ui.format_compact(value), border=True, help=exact + about)
    columns[4].metric("Dev accuracy", _percent_tile(None if dev_now is None else 100 * dev_now),
                      dev_delta, border=True,
                      help=("" if dev_now is None else f"**{ui.format_percent(dev_now)}** ")
                      + "at the last evaluation, inference mode; change since the one before.")


def _percent_tile(percent: float | None) -> str:
    """"97.3 %", or "100 %" where "100.0 %" would not fit its tile."""
    if percent is None:
        return "–"
    return ui.fit([f"{percent:.1f} %", f"{percent:.0f} %"])


def sparsity_caption(history, layers) -> str:
    """Each layer's share of weights with |w| < 1e-3 at the last evaluation: what L1 does
    (it drives weights to exactly 0) and L2 doesn't."""
    shares = [f"{layer} {100 * float(history[f'sparsity/{layer}'][-1]):.0f} %"
              for layer in layers if len(history.get(f"sparsity/{layer}", ()))
              and np.isfinite(history[f"sparsity/{layer}"][-1])]
    return f"Weights near 0 (|w| < 1e-3): {', '.join(shares)}." if shares else ""


def live_charts(snapshot: Snapshot, window: int | None = None, log_y: bool = False,
                beta: float = 0.98, axis: str = "step") -> None:
    history, events = snapshot.history, snapshot.events
    others = [(number, branch["history"], branch["fork_step"])
              for number, branch in snapshot.branches.items() if number != snapshot.branch][-8:]
    figures = {
        "chart_cost": charts.cost_figure(history, events, window, log_y, others, beta),
        "chart_accuracy": charts.accuracy_figure(history, events, window, snapshot.dataset),
        "chart_alpha": charts.alpha_figure(history, events, window),
        "chart_update_ratio": charts.update_ratio_figure(history, snapshot.layers, events,
                                                         window),
    }
    keys = list(figures)
    for row in (keys[:2], keys[2:]):
        for column, key in zip(st.columns(2), row, strict=True):
            with column:
                live_chart(charts.on_x_axis(figures[key], history, axis), key=key)
    st.caption(sparsity_caption(history, snapshot.layers) + " " + charts.EVENTS_CAPTION)
    if snapshot.decision_grid is not None:
        left, right = st.columns([3, 2])
        left.plotly_chart(charts.decision_region_figure(snapshot.decision_grid,
                                                        snapshot.dataset["class_names"]),
                          key="chart_decision_regions")
        right.markdown(
            "**Decision regions.** The background is the class the network predicts at each "
            "point of the plane (inference mode), the dots are the training examples. Refreshed "
            f"at every evaluation (every {snapshot.hparams['eval_every']} steps).")
