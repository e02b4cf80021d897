"""Look-ahead: try a change on sandbox copies of the run before committing it.

- Look-ahead: k steps from the run's state now (or a checkpoint's) for each candidate
  (α × {⅓, 1, 3}, other optimizers, other schedules, α's of your own), every one on
  the same mini-batches; their curves overlaid from the common start; "Commit" one:
  its settings, or its settings and its trained state as a new branch.
- LR range test: α grows exponentially over k steps on a sandbox (Smith's test);
  cost against α on a log axis with the two suggested α's, each one click to apply.

Sandboxes are private copies made by ``dlcore.sandbox``: the live run never sees them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dlcore.lookahead import (
    ALPHA_PRESETS,
    PRESETS,
    Candidate,
    build_candidates,
    committable,
    look_ahead,
    lr_range_test,
)
from dlcore.trainer import Snapshot, Trainer
from pages.shared import charts, ui

LIVE = "live"
MAX_CANDIDATES = 8
COMMIT_MODES = {"settings": "settings only",
                "branch": "settings and the sandbox's state as a new branch"}

SANDBOX_NOTE = """
**Sandboxes never touch the live run.** Each candidate trains on a private copy of the
run's complete state (weights, BatchNorm statistics, optimizer moments, schedule,
data-iterator and RNG state), here in this page's process: the live run goes on (or stays
paused) exactly as if nothing happened, and nothing is written to disk. Every candidate
sees the same mini-batches, so their curves differ only by their settings. Only
**Commit** changes the run.
"""


def main() -> None:
    trainer, snapshot = ui.page_start("Look-ahead", "Look-ahead: try a change before making it")
    ui.messages(trainer, snapshot)
    st.markdown(SANDBOX_NOTE)
    look_ahead_tab, range_tab = st.tabs(["Look-ahead", "LR range test"], key="lookahead_tabs")
    with look_ahead_tab:
        look_ahead_section(trainer, snapshot)
    with range_tab:
        range_test_section(trainer, snapshot)


def progress_bar(what: str):
    """A progress bar and the callback that moves it (given a fraction in [0, 1])."""
    bar = st.progress(0.0, text=f"{what}…")
    shown = [0]

    def report(fraction: float) -> None:
        percent = int(100 * fraction)
        if percent > shown[0]:  # at most 100 updates reach the browser
            shown[0] = percent
            bar.progress(min(1.0, fraction), text=f"{what}: {percent} %")

    return bar, report


# ---------------------------------------------------------------------------
# Look-ahead
# ---------------------------------------------------------------------------


def look_ahead_section(trainer: Trainer, snapshot: Snapshot) -> None:
    settings = look_ahead_controls(snapshot)
    if st.button("Run look-ahead", type="primary", key="la_run", icon=":material/science:"):
        run_look_ahead(trainer, snapshot, settings)
    results = st.session_state.get("look_ahead")
    if results is None or results["run_id"] != snapshot.run_id:
        st.caption("Choose a start and candidates, then run: k steps each, on sandboxes.")
        return
    show_results(results, snapshot)
    commit_controls(trainer, results)


def look_ahead_controls(snapshot: Snapshot) -> dict:
    """The start, k and the candidates; returns what the fields hold."""
    checkpoints = {c["id"]: c for c in reversed(snapshot.checkpoints)}  # newest first
    left, middle = st.columns([3, 1])
    start = left.selectbox(
        "Start from", [LIVE, *checkpoints], key="la_start",
        format_func=lambda c: (f"the run now (step {snapshot.step}, branch {snapshot.branch})"
                               if c == LIVE else ui.checkpoint_label(checkpoints[c])),
        help="Committing the sandbox's state as a new branch needs a start on the branch "
             "the run is on now.")
    steps = middle.number_input("Steps k", key="la_steps", value=200, min_value=10,
                                max_value=5000, step=50,
                                help="How far each candidate trains from the start.")
    left, right = st.columns([3, 1])
    presets = left.multiselect(
        "Candidates", PRESETS, default=list(ALPHA_PRESETS), key="la_presets",
        max_selections=MAX_CANDIDATES,
        help="α is the one the next step would use at the start. A preset equal to the "
             "start's own settings is the same as \"unchanged\" and runs once.")
    custom = right.text_input("More α's", key="la_custom_alphas", placeholder="e.g. 1e-4, 3e-3",
                              help="Your own α's, separated by commas.")
    carry = st.checkbox("Carry the moments over on optimizer switches", key="la_carry",
                        help="Off: a new optimizer starts fresh (t = 0). On: momentum's v ↔ "
                             "Adam's first moment, RMSprop's s ↔ Adam's second moment.")
    return {"start": start, "steps": int(steps), "presets": presets, "custom": custom,
            "carry": carry}


def parse_alphas(text: str) -> list[float]:
    """ "1e-4, 3e-3" → [1e-4, 3e-3]; ValueError naming what is not a positive number."""
    alphas = []
    for part in (p for p in re.split(r"[,;\s]+", text.strip()) if p):
        try:
            alpha = float(part)
        except ValueError:
            raise ValueError(f"{part!r} is not a number; write α's like 1e-4, 0.003") from None
        if not alpha > 0 or alpha == float("inf"):
            raise ValueError(f"α must be a positive number, got {part}")
        alphas.append(alpha)
    return alphas


def run_look_ahead(trainer: Trainer, snapshot: Snapshot, settings: Mapping) -> None:
    try:
        alphas = parse_alphas(settings["custom"])
    except ValueError as error:
        st.error(f"More α's: {error}")
        return
    if not settings["presets"] and not alphas:
        st.error("Choose at least one candidate (a preset or an α of your own).")
        return
    start = settings["start"]
    ok, state = ui.run_command(trainer.export_state, None if start == LIVE else start,
                               channel="look_ahead")
    if not ok:
        ui.show_flashes(channel="look_ahead")
        return
    info = state[1]["info"]
    changes, labels = build_candidates(settings["presets"], alphas, info["alpha"],
                                       info["hparams"], settings["carry"])
    steps = settings["steps"]
    bar, report = progress_bar(f"Look-ahead: {len(changes)} sandbox(es) × {steps} steps")
    began = time.monotonic()
    try:
        results = look_ahead(trainer.config, trainer.data, state, changes, steps,
                             progress=report)
    except ValueError as error:
        bar.empty()
        st.error(f"The look-ahead did not run: {error}")
        return
    bar.empty()
    st.session_state["look_ahead"] = {
        "run_id": snapshot.run_id, "candidates": results, "labels": labels, "steps": steps,
        "start": "the run's state" if start == LIVE else start,
        "start_step": int(info["step"]), "start_branch": int(info["branch"]),
        "alpha": float(info["alpha"]), "seconds": time.monotonic() - began,
    }
    st.session_state.pop("la_commit_choice", None)  # the candidates changed


def show_results(results: Mapping, snapshot: Snapshot) -> None:
    candidates, labels = results["candidates"], results["labels"]
    st.caption(f"From {results['start']} at step {results['start_step']} (branch "
               f"{results['start_branch']}, α = {results['alpha']:.3g}): {len(candidates)} "
               f"candidate(s) × {results['steps']} steps on the same mini-batches, in "
               f"{results['seconds']:.1f} s.")
    if snapshot.branch != results["start_branch"]:
        st.info(f"The run is on branch {snapshot.branch} now. Committing a candidate's state "
                f"forks a new branch from branch {results['start_branch']} at step "
                f"{results['start_step']}, where this look-ahead started; committing settings "
                "only changes the run as it is now.", icon=":material/call_split:")
    log_y = st.toggle("Log-scale cost", key="la_log_y")
    left, right = st.columns(2)
    steps = (results["start_step"], results["start_step"] + results["steps"])
    left.plotly_chart(comparison_cost_figure(candidates, labels, steps, log_y), key="la_cost")
    right.plotly_chart(comparison_accuracy_figure(candidates, labels, steps), key="la_dev")
    st.dataframe(summary_table(candidates, labels), hide_index=True, key="la_summary",
                 column_config={
                     "final J (smoothed)": st.column_config.NumberColumn(format="%.4f"),
                     "final dev accuracy": st.column_config.NumberColumn(format="percent"),
                     "dev accuracy change": st.column_config.NumberColumn(format="percent"),
                 })


def _color(i: int) -> str:
    return charts.BRANCH_COLORS[i % len(charts.BRANCH_COLORS)]


def comparison_cost_figure(candidates: Sequence[Candidate], labels: Sequence[str],
                           steps: tuple[int, int], log_y: bool = False) -> go.Figure:
    """Each candidate's mini-batch cost: raw (faint) and smoothed, from the common start.

    steps: (start, end), the x range shared with the accuracy chart."""
    fig = charts.new_figure("Cost J per step: candidates compared", "J", height=380,
                            log_y=log_y)
    for i, (candidate, label) in enumerate(zip(candidates, labels, strict=True)):
        history = candidate.history
        if not len(history.get("step", ())):
            continue
        charts.add_line(fig, history["step"], history["cost"], f"{label} (raw)",
                        legendgroup=label, showlegend=False, opacity=0.3, hoverinfo="skip",
                        line={"width": 1, "color": _color(i)})
        charts.add_line(fig, history["step"], history["cost_smoothed"], label,
                        legendgroup=label, line={"width": 2.5, "color": _color(i)})
        if candidate.diverged:
            _diverged_marker(fig, history["step"][-1], history["cost_smoothed"][-1], label,
                             candidate.diverged, i)
    _legend_below(fig, steps)
    return fig


def comparison_accuracy_figure(candidates: Sequence[Candidate], labels: Sequence[str],
                               steps: tuple[int, int]) -> go.Figure:
    fig = charts.new_figure("Dev accuracy (inference mode): candidates compared",
                            "dev accuracy", height=380)
    for i, (candidate, label) in enumerate(zip(candidates, labels, strict=True)):
        history = candidate.history
        if not len(history.get("eval_step", ())):
            continue
        fig.add_trace(go.Scatter(x=history["eval_step"], y=history["dev_accuracy"], name=label,
                                 legendgroup=label, mode="lines+markers", cliponaxis=False,
                                 marker={"size": 5}, line={"width": 2, "color": _color(i)}))
    fig.update_yaxes(tickformat=".0%")
    _legend_below(fig, steps)
    return fig


def _diverged_marker(fig: go.Figure, step, cost, label: str, cause: str, i: int) -> None:
    fig.add_trace(go.Scatter(x=[step], y=[cost], mode="markers", legendgroup=label,
                             showlegend=False, hovertext=f"{label} diverged: {cause}",
                             hoverinfo="text", marker={"symbol": "x", "size": 12,
                                                       "color": _color(i)}))


def _legend_below(fig: go.Figure, steps: tuple[int, int]) -> None:
    """Both charts share the x range from the start step, and a legend under the plot."""
    fig.update_xaxes(range=list(steps))
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0,
                              "xanchor": "left"}, margin={"b": 60})


def summary_table(candidates: Sequence[Candidate], labels: Sequence[str]) -> pd.DataFrame:
    rows = []
    for candidate, label in zip(candidates, labels, strict=True):
        history = candidate.history
        smoothed, dev = history.get("cost_smoothed", ()), history.get("dev_accuracy", ())
        rows.append({
            "candidate": label,
            "changes": ui.format_number(candidate.changes) if candidate.changes else "none",
            "final J (smoothed)": float(smoothed[-1]) if len(smoothed) else None,
            "final dev accuracy": float(dev[-1]) if len(dev) else None,
            "dev accuracy change": float(dev[-1]) - float(dev[0]) if len(dev) else None,
            "diverged?": candidate.diverged or "no",
        })
    return pd.DataFrame(rows)


def commit_controls(trainer: Trainer, results: Mapping) -> None:
    with st.container(border=True):
        st.subheader("Commit one candidate", anchor=False)
        labels = results["labels"]
        left, right = st.columns(2)
        left.radio("Candidate", list(range(len(labels))), format_func=labels.__getitem__,
                   key="la_commit_choice")
        right.radio("What the run takes", list(COMMIT_MODES), format_func=COMMIT_MODES.get,
                    key="la_commit_mode",
                    captions=["From the run's next step, like Apply on the training page "
                              "(a pre-change checkpoint is saved first).",
                              "The run continues from where the sandbox ended, on a new "
                              "branch forked at the look-ahead's start (recorded like a "
                              "rollback); the branch it leaves stays in the tree."])
        st.button("Commit", type="primary", key="la_commit", icon=":material/done_all:",
                  on_click=_commit, args=(trainer,))
        ui.show_flashes(channel="look_ahead")


def _commit(trainer: Trainer) -> None:
    results = st.session_state["look_ahead"]
    index = st.session_state["la_commit_choice"]
    candidate, label = results["candidates"][index], results["labels"][index]
    if st.session_state["la_commit_mode"] == "settings":
        if not candidate.changes:
            ui.flash("info", f"{label} is the run's own settings: nothing to change.",
                     "look_ahead")
            return
        ok, _ = ui.run_command(trainer.update, **candidate.changes, channel="look_ahead")
        if ok:
            ui.flash("success", f"Committed the settings of {label}: "
                                f"{ui.format_number(candidate.changes)}, from the run's next "
                                "step.", "look_ahead")
        return
    if candidate.diverged:
        ui.flash("error", f"{label} diverged ({candidate.diverged}); its state is not worth "
                          "continuing from. Commit its settings only, or another candidate.",
                 "look_ahead")
        return
    ok, branch = ui.run_command(trainer.adopt, committable(candidate), channel="look_ahead")
    if ok:
        step = results["start_step"] + results["steps"]
        ui.flash("success", f"Committed {label} as branch {branch}: the run continues from "
                            f"the sandbox's state at step {step}, paused. Press Start on the "
                            "training page to go on.", "look_ahead")


# ---------------------------------------------------------------------------
# LR range test
# ---------------------------------------------------------------------------


def range_test_section(trainer: Trainer, snapshot: Snapshot) -> None:
    st.caption("Smith's range test: from the run's state now, α grows exponentially from "
               "10^a to 10^b over k steps on a sandbox (stopping once the cost has clearly "
               "blown up). A good α lies where the smoothed cost falls fastest, or about a "
               "tenth of the α at its minimum.")
    columns = st.columns(3)
    steps = columns[0].number_input("Steps of the sweep", key="rt_steps", value=200, min_value=10,
                                    max_value=5000, step=50)
    low = columns[1].number_input("Lowest α = 10^a, a =", key="rt_low", value=-6.0,
                                  min_value=-12.0, max_value=2.0, step=0.5, format="%g")
    high = columns[2].number_input("Highest α = 10^b, b =", key="rt_high", value=1.0,
                                   min_value=-10.0, max_value=3.0, step=0.5, format="%g")
    if st.button("Run range test", type="primary", key="rt_run", icon=":material/query_stats:"):
        run_range_test(trainer, snapshot, int(steps), low, high)
    result = st.session_state.get("range_test")
    if result is None or result["run_id"] != snapshot.run_id:
        return
    st.caption(f"From step {result['start_step']} (branch {result['start_branch']}): "
               f"{len(result['alphas'])} steps, α from {result['alphas'][0]:.2g} to "
               f"{result['alphas'][-1]:.2g}.")
    st.plotly_chart(range_test_figure(result), key="rt_chart")
    with st.container(horizontal=True):
        for name, label in (("steepest", "steepest descent"), ("min_tenth", "minimum ÷ 10")):
            st.button(f"Apply α = {result[name]:.2e} ({label})", key=f"rt_apply_{name}",
                      on_click=_apply_alpha, args=(trainer, result[name], label),
                      icon=":material/check:")
    ui.show_flashes(channel="range_test")


def run_range_test(trainer: Trainer, snapshot: Snapshot, steps: int, low: float,
                   high: float) -> None:
    ok, state = ui.run_command(trainer.export_state, channel="range_test")
    if not ok:
        ui.show_flashes(channel="range_test")
        return
    bar, report = progress_bar(f"Range test: {steps} steps")
    try:
        result = lr_range_test(trainer.config, trainer.data, state, steps, 10.0 ** low,
                               10.0 ** high, progress=report)
    except ValueError as error:
        bar.empty()
        st.error(f"The range test did not run: {error}")
        return
    bar.empty()
    info = state[1]["info"]
    st.session_state["range_test"] = {**result, "run_id": snapshot.run_id,
                                      "start_step": int(info["step"]),
                                      "start_branch": int(info["branch"])}


def range_test_figure(result: Mapping) -> go.Figure:
    """Cost against α (log axis) with the two suggestions as labelled vertical lines."""
    fig = charts.new_figure("LR range test: mini-batch cost J against α", "J", x_title="α",
                            height=420)
    fig.add_trace(go.Scatter(x=result["alphas"], y=result["costs"], name="J (raw)",
                             mode="lines", line={"width": 1, "color": "rgba(31, 119, 180, 0.35)"}))
    fig.add_trace(go.Scatter(x=result["alphas"], y=result["smoothed"], name="J (smoothed)",
                             mode="lines", line={"width": 2.5, "color": "#1f77b4"}))
    # Vertical lines as traces on a hidden 0..1 axis: exact on a log x axis, and hoverable.
    fig.update_layout(yaxis2={"overlaying": "y", "range": [0, 1], "visible": False,
                              "fixedrange": True})
    for name, label, color, place in (("steepest", "steepest descent", "#2ca02c", "top right"),
                                      ("min_tenth", "minimum ÷ 10", "#d62728", "top left")):
        alpha = result[name]
        fig.add_trace(go.Scatter(
            x=[alpha, alpha, alpha], y=[0, 0.93, 0.93], yaxis="y2",
            mode="lines+text", text=["", "", f"{label}<br>α = {alpha:.2e}"],
            textposition=place, textfont={"color": color, "size": 12}, cliponaxis=False,
            name=f"suggested: {label}", line={"color": color, "width": 2, "dash": "dash"},
            hovertext=f"{label}: α = {alpha:.3g}", hoverinfo="text", meta={"suggestion": name}))
    fig.update_xaxes(type="log", exponentformat="power")
    # The raw cost can shoot up in the last steps: keep the smoothed curve readable.
    fig.update_layout(yaxis_range=[0, 1.25 * max(float(v) for v in result["smoothed"])])
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.15, "x": 0,
                              "xanchor": "left"}, margin={"b": 60})
    return fig


def _apply_alpha(trainer: Trainer, alpha: float, label: str) -> None:
    ok, _ = ui.run_command(trainer.update, lr=alpha, channel="range_test")
    if ok:
        ui.flash("success", f"Applied α = {alpha:.3g} ({label}) from the run's next step "
                            "(a pre-change checkpoint was saved first).", "range_test")


if __name__ == "__main__":
    main()
