"""Compare runs: this run's learning curves beside another run's from the same folder.

The other run is read from disk (``dlcore.reopen.read_curves``): its newest checkpoint's
metadata and its journal, nothing written, its data never loaded. The charts are a live
view: while this run trains they follow it, and the other run (which may be training in
another Panda meanwhile) is read again when its files changed, at most every
REREAD_SECONDS; files its retention or compaction removes meanwhile are not errors.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dlcore.branches import COST_SMOOTHING
from dlcore.reopen import RunCurves, read_curves
from dlcore.store import RunStore
from dlcore.trainer import Snapshot, Trainer, list_runs
from pages.shared import charts, ui
from pages.shared.engine import holder

THIS, OTHER = "#1f77b4", "#ff7f0e"
#: The x axes the comparison offers: steps, epochs (runs with other batch sizes take
#: other numbers of steps per epoch) and hours since each run's first step.
AXES = {"step": "step", "epoch": "epoch", "hours": "hours since the run's first step"}
#: Settings compared: how each run was made (run.json), then its hyperparameters now.
CONFIG_FIELDS = ("dataset", "dataset_name", "dev_fraction", "hidden", "activation",
                 "batchnorm", "bn_position", "init", "seed", "dtype")
#: The other run's files are read again at most this often while they change.
REREAD_SECONDS = 10.0


def panel(trainer: Trainer, snapshot: Snapshot) -> None:
    st.subheader("Compare with another run", anchor=False)
    folder = holder().checkpoint_dir
    others = [r for r in reversed(list_runs(folder)) if r != snapshot.run_id]
    if not others:
        st.caption(f"This is the only run in `{folder}`. A new run (training page, sidebar: "
                   "New run) keeps this one; its curves can then be compared here.")
        return
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    run_id = left.selectbox("Another run of this folder (newest first)", others, index=None,
                            key="compare_run", placeholder="Choose a run",
                            format_func=lambda r: run_label(folder, r))
    axis = right.segmented_control("x axis", list(AXES), default="step",
                                   key="compare_run_axis") or "step"
    if run_id is None:
        st.caption("Its smoothed cost and dev accuracy are drawn over this run's, with the "
                   "settings in which the two differ.")
        return
    ui.live_view(lambda s: comparison(s, folder, run_id, axis), trainer, snapshot,
                 while_running=charts.CHART_REFRESH_SECONDS)


def comparison(snapshot: Snapshot, folder, run_id: str, axis: str) -> None:
    """Both runs' curves and where their settings differ."""
    try:
        other = cached_curves(folder, run_id)
    except (OSError, ValueError) as error:
        st.error(f"**{run_id} can't be read**: {error}. This run is not affected.",
                 icon=":material/error:")
        return
    if other.damaged:
        st.warning(f"{len(other.damaged)} of {run_id}'s files could not be read and are "
                   "left out: " + "; ".join(f"{d['file']} ({d['reason']})"
                                            for d in other.damaged[:3]))
    runs = {f"this run ({snapshot.run_id})": (snapshot.history, THIS),
            f"{run_id}": (other.history, OTHER)}
    left, right = st.columns(2)
    left.plotly_chart(curves_figure(runs, "cost_smoothed", axis), key="compare_runs_cost")
    right.plotly_chart(curves_figure(runs, "dev_accuracy", axis),
                       key="compare_runs_accuracy")
    differences = settings_table(snapshot, other)
    if differences.empty:
        st.caption("The two runs were made with the same settings and train with the same "
                   "hyperparameters now.")
    else:
        st.markdown("**Where they differ** (how each run was made, then its hyperparameters "
                    f"now: this run at step {snapshot.step:,}, {run_id} at its newest "
                    f"checkpoint, step {other.step:,})")
        st.dataframe(differences, hide_index=True, key="compare_runs_settings")


def run_label(folder, run_id: str) -> str:
    """``run-… · mnist · hidden (128, 64) · adam`` (just the id if run.json can't be
    read); the hidden sizes as the settings table shows them."""
    try:
        config = RunStore(folder, run_id).read_config()
        return (f"{run_id} · {config.get('dataset_name') or config['dataset']} · "
                f"hidden {ui.format_number(list(config['hidden']))} · {config['optimizer']}")
    except (OSError, ValueError, KeyError, TypeError):
        return run_id


def cached_curves(folder, run_id: str) -> RunCurves:
    """The other run's curves, read again only when its checkpoint or journal files
    changed (a name, a size, a time) since the last read in this session, and then at
    most every REREAD_SECONDS."""
    store = RunStore(folder, run_id)
    files = tuple(_stat(p) for p in [*store.checkpoint_files(), *store.journal_files()])
    cached = st.session_state.get("compare_run_curves")
    fresh = (cached is not None and cached[0] == run_id
             and (cached[1] == files or time.monotonic() - cached[2] < REREAD_SECONDS))
    if not fresh:
        cached = (run_id, files, time.monotonic(), read_curves(folder, run_id))
        st.session_state["compare_run_curves"] = cached
    return cached[3]


def _stat(path) -> tuple:
    """A file's name, size and time; a file removed since the listing reads as gone."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return (path.name, None, None)
    return (path.name, info.st_size, info.st_mtime_ns)


def curves_figure(runs: Mapping[str, tuple[Mapping, str]], column: str, axis: str) -> go.Figure:
    """One line per run: its per-step (smoothed cost) or per-evaluation (dev accuracy)
    ``column`` along ``axis``."""
    per_eval = column == "dev_accuracy"
    title = ("Dev accuracy per evaluation (inference mode)" if per_eval
             else f"Cost J, smoothed (β = {COST_SMOOTHING})")
    layout = charts.base_layout(title, "dev accuracy" if per_eval else "J",
                                x_title=AXES[axis], height=340)
    if per_eval:
        layout["yaxis"]["tickformat"] = ".0%"
    else:
        layout["yaxis"]["type"] = "log"  # runs of different speed: orders of magnitude
    traces = []
    for name, (history, color) in runs.items():
        if per_eval:
            steps, values = np.asarray(history["eval_step"]), np.asarray(history[column])
        else:
            steps, values = charts.step_series(history, column, None)
        x = on_axis(history, steps, axis)
        if x is not None and len(x):
            traces.append(charts.line_trace(x, values, name, line={"color": color,
                                                                   "width": 2}))
    if not traces:
        charts.empty_note(layout, "No steps to compare yet" if axis != "hours"
                          else "No wall-clock times recorded for these runs")
    return charts.figure(traces, layout)


def on_axis(history: Mapping, steps: np.ndarray, axis: str) -> np.ndarray | None:
    """Where ``steps`` of this history lie on ``axis``; None if it can't say."""
    if axis == "step":
        return np.asarray(steps, np.float64)
    mapping = charts.axis_values(history, "time" if axis == "hours" else axis)
    if mapping is None:
        return None
    known, x = mapping
    mapped = np.interp(np.asarray(steps, np.float64), known, x)
    return (mapped - x[0]) / 3600.0 if axis == "hours" else mapped


def settings_table(snapshot: Snapshot, other: RunCurves) -> pd.DataFrame:
    """The settings in which the two runs differ: one row each."""
    rows = []
    for source, ours, theirs, names in (
            ("made with", snapshot.config, other.config, CONFIG_FIELDS),
            ("now", snapshot.hparams, other.hparams,
             sorted(set(snapshot.hparams) | set(other.hparams)))):
        for name in names:
            a, b = ui.format_number(ours.get(name)), ui.format_number(theirs.get(name))
            if a != b:
                rows.append({"setting": ui.HPARAM_LABELS.get(name, name), "": source,
                             "this run": a, other.run_id: b})
    return pd.DataFrame(rows, columns=["setting", "", "this run", other.run_id])
