"""Caviar: many models in parallel on Ray Tune, then babysit the best one (panda).

- Search space: every hyperparameter on its own scale, in the course's order of
  importance, each with a line on why; trials, budget, ASHA, random or TPE.
- Live while a round runs: progress, the trials table, dev accuracy against α (log
  axis), parallel coordinates of every trial. Cancel stops every trial.
- Rounds side by side; one click narrows every range around the best K trials and
  starts the next round (coarse to fine).
- "Babysit this trial": its settings and trained state as a new branch of this run (same
  architecture) or as a new run.

The search runs in a background thread of the server (``dlcore.caviar.Study``, one per
run folder, kept in ``st.cache_resource``); this page only reads its pictures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dlcore.caviar import Handoff, Study, ray_missing
from dlcore.caviar_rounds import RoundView
from dlcore.caviar_trial import ALGORITHMS, Plan
from dlcore.search_space import HYPERPARAMETERS, Dimension, SearchSpace
from dlcore.trainer import Snapshot, Trainer
from pages.shared import charts, ui
from pages.shared.engine import holder

LIVE_SECONDS = 1.0
#: Rounds shown side by side (the newest).
SIDE_BY_SIDE = 3
POWERS_OF_TWO = [2**k for k in range(0, 13)]
STATUS_COLORS = {"finished": "#2ca02c", "running": "#1f77b4", "stopped": "#ff7f0e",
                 "diverged": "#d62728", "error": "#d62728", "cancelled": "#7f7f7f",
                 "interrupted": "#7f7f7f", "pending": "#c7c7c7"}
ROUND_BADGES = {"starting": ("starting Ray", "blue"), "running": ("running", "green"),
                "cancelling": ("cancelling", "orange"), "finished": ("finished", "gray"),
                "cancelled": ("cancelled", "gray"), "failed": ("failed", "red"),
                "interrupted": ("interrupted", "orange")}

CAVIAR_NOTE = """
**Caviar** is the course's other way to tune: when there is the compute, train many
models in parallel, each with hyperparameters drawn at random on the right scale, and
keep the best (**panda** is babysitting one). Ray Tune runs the trials, one per core here
or on a cluster (`PANDA_RAY_ADDRESS`); each trial trains with the live run's own step from
the run's step 0, and ASHA stops the ones that lag early. **The live run is never touched
by a search.** Hand the best trial over to babysitting when the search has found it.
"""


@st.cache_resource(show_spinner=False, on_release=Study.close, max_entries=16)
def study_for(run_dir: str) -> Study:
    """The caviar rounds of one run (and its running search), one per server."""
    return Study(run_dir)


def main() -> None:
    trainer, snapshot = ui.page_start("Caviar", "Caviar: many models in parallel")
    ui.messages(trainer, snapshot)
    st.markdown(CAVIAR_NOTE)
    study = study_for(snapshot.checkpoint_dir)
    missing = ray_missing()
    if missing:
        st.info(missing + " Saved rounds stay readable below, and their trials can still "
                "be babysat.", icon=":material/download:")
    for name, reason in study.damaged:
        st.warning(f"Caviar round folder `{name}` could not be read and is skipped: {reason}")
    with st.expander("Search space and budget", expanded=not study.views(),
                     icon=":material/tune:"):
        space_rows(trainer)
        search_settings()
        st.button("Start search", type="primary", key="cv_start", icon=":material/rocket:",
                  disabled=bool(missing) or study.running, on_click=_start, args=(trainer,),
                  help="Runs in the background; you may leave this page.")
    ui.show_flashes(channel="caviar")
    live_rounds(study)
    rounds = study.views()
    if rounds and not study.running:
        round_tools(trainer, study, rounds)
    elif rounds:
        st.caption("Coarse to fine and Babysit a trial appear here when the round ends.")


# ---------------------------------------------------------------------------
# The search space and the budget
# ---------------------------------------------------------------------------


def default_space(trainer: Trainer) -> SearchSpace:
    return SearchSpace.for_run(trainer.config, len(trainer.data.y_train))


def space_rows(trainer: Trainer) -> None:
    """One row per hyperparameter, in the order of importance: search it or not, its
    range on its scale, why it sits there."""
    defaults = default_space(trainer)
    st.caption("Tiers are the course's order of importance: tune α first; then β, hidden "
               "units and the mini-batch size; then layers and decay. Unticked ones keep "
               "the run's value. Trials draw values at random (never a grid).")
    for dimension in defaults.dimensions:
        spec = HYPERPARAMETERS[dimension.name]
        left, middle, right = st.columns([3, 3, 4], vertical_alignment="center")
        left.checkbox(f"**{spec.label}** · tier {spec.tier}", value=dimension.searched,
                      key=f"cv_{dimension.name}_on")
        with middle:
            range_input(dimension)
        right.caption(spec.note)


def range_input(dimension: Dimension) -> None:
    """The widget for one range, on the scale it is sampled on."""
    key, scale = f"cv_{dimension.name}_range", dimension.scale
    if scale == "log":
        low, high = dimension.coordinate(dimension.low), dimension.coordinate(dimension.high)
        st.slider("10^r, r from … to", min_value=-8.0, max_value=1.0, step=0.25,
                  value=(low, high), key=key, label_visibility="collapsed",
                  format="10^%g", help="r uniform in [a, b]: each decade gets an equal "
                                         "share of the trials.")
    elif scale == "beta":
        columns = st.columns(2)
        columns[0].number_input("lowest β", min_value=0.0, max_value=0.99999, step=0.01,
                                value=dimension.low, format="%.4f", key=f"{key}_low")
        columns[1].number_input("highest β", min_value=0.0, max_value=0.99999, step=0.001,
                                value=dimension.high, format="%.4f", key=f"{key}_high")
    elif scale == "pow2":
        st.select_slider("powers of two", options=POWERS_OF_TWO, key=key,
                         value=(dimension.low, dimension.high), label_visibility="collapsed")
    else:
        st.slider("from … to", min_value=1, max_value=8, value=(dimension.low,
                                                                 dimension.high),
                  key=key, label_visibility="collapsed")


def space_from_form(names) -> SearchSpace:
    """The space the rows hold; ValueError naming a bad range."""
    state, dims = st.session_state, []
    for name in names:
        key = f"cv_{name}_range"
        scale = HYPERPARAMETERS[name].scale
        if scale == "beta":
            low, high = state[f"{key}_low"], state[f"{key}_high"]
        else:
            low, high = state[key]
        if scale == "log":
            low, high = 10.0**low, 10.0**high
        dims.append(Dimension(name, low, high, searched=bool(state[f"cv_{name}_on"])))
    return SearchSpace(tuple(dims))


def search_settings() -> None:
    """Trials, budget, algorithm, early stopping, resources."""
    st.divider()
    columns = st.columns(4)
    columns[0].number_input("Trials", min_value=0, max_value=10_000, value=16, step=4,
                            key="cv_trials")
    columns[1].number_input("Budget per trial", min_value=1, value=500, step=100,
                            key="cv_budget", help="Steps or epochs each trial trains "
                                                  "at most.")
    columns[2].segmented_control("Budget in", ["steps", "epochs"], default="steps",
                                 key="cv_unit")
    columns[3].number_input("Evaluations per trial", min_value=1, max_value=1000, value=10,
                            key="cv_evaluations", help="Dev accuracy and cost are measured "
                            "this many times on the way; ASHA decides at these points.")
    columns = st.columns(4)
    columns[0].radio("Search", list(ALGORITHMS), format_func=ALGORITHMS.get,
                     key="cv_algorithm", help="TPE: Optuna models which values did well "
                     "(it starts with 10 random trials).")
    columns[1].toggle("Stop bad trials early (ASHA)", value=True, key="cv_asha",
                      help="Asynchronous Hyperband: at budget/η², budget/η … a trial "
                           "continues only if its dev accuracy is in the best 1/η of the "
                           "trials that got there.")
    columns[2].selectbox("η (keep the best 1/η)", [2, 3, 4], index=1, key="cv_eta")
    columns[3].number_input("Seed", min_value=0, value=0, key="cv_seed")
    with st.expander("Resources and disk"):
        left, right = st.columns(2)
        left.number_input("Trials at once (0: one per CPU)", min_value=0, max_value=1024,
                          value=0, key="cv_concurrent")
        right.number_input("Trials that keep their trained state", min_value=0, value=8,
                           key="cv_keep", help="The best ones; the others keep their "
                                               "numbers only.")


def plan_from_form(trainer: Trainer) -> Plan:
    """The plan the form holds; ValueError naming what is wrong."""
    state = st.session_state
    names = [d.name for d in default_space(trainer).dimensions]
    budget = state["cv_budget"]
    return Plan(space_from_form(names), trials=int(state["cv_trials"]),
                budget=int(budget) if state["cv_unit"] == "steps" else float(budget),
                unit=state["cv_unit"] or "steps", evaluations=int(state["cv_evaluations"]),
                algorithm=state["cv_algorithm"], early_stopping=bool(state["cv_asha"]),
                reduction_factor=int(state["cv_eta"]), seed=int(state["cv_seed"]),
                max_concurrent=int(state["cv_concurrent"]) or None,
                keep_states=int(state["cv_keep"]))


def _start(trainer: Trainer, plan: Plan | None = None, origin: Mapping | None = None,
           channel: str = "caviar") -> None:
    study = study_for(trainer.snapshot().checkpoint_dir)
    try:
        plan = plan or plan_from_form(trainer)
        number = study.start(plan, trainer.config, trainer.data, origin)
        st.session_state.pop("cv_round", None)  # the new round is the one shown next
    except ValueError as error:
        ui.flash("error", f"No search was started: {error}", channel)
        return
    except OSError as error:
        ui.flash("error", f"No search was started: the run's folder refused the round "
                          f"({error}).", channel)
        return
    ui.flash("success", f"Round {number} started: {plan.trials} trial(s) of at most "
                        f"{plan.budget:g} {plan.unit} each, on Ray. The live run is "
                        "untouched.", channel)


# ---------------------------------------------------------------------------
# Live: progress, trials, charts
# ---------------------------------------------------------------------------


def live_rounds(study: Study) -> None:
    """Every round side by side, then the newest in detail; refreshed while one runs."""
    running = study.running

    @st.fragment(run_every=LIVE_SECONDS if running else None)
    def view():
        if study.running != running:
            st.rerun(scope="app")  # the search ended: the controls follow
        rounds = study.views()
        if not rounds:
            st.caption("No search yet for this run: choose the space and press Start.")
            return
        side_by_side(rounds[-SIDE_BY_SIDE:])
        newest = rounds[-1]
        if newest.status in ("starting", "running", "cancelling"):
            round_detail(newest, study)

    view()


def side_by_side(rounds: list[RoundView]) -> None:
    """A column per round: what it searched, how it went; with two or more, each one's
    dev accuracy against α, so coarse to fine shows as the points close in."""
    st.subheader("Rounds", anchor=False)
    for column, view in zip(st.columns(len(rounds)), rounds, strict=True):
        with column:
            label, color = ROUND_BADGES.get(view.status, (view.status, "gray"))
            origin = (f" · narrowed around the best {view.origin['best']} of round "
                      f"{view.origin['round']}" if view.origin else "")
            st.markdown(f"**Round {view.number}** · {ALGORITHMS[view.plan.algorithm]}"
                        f"{origin}")
            st.badge(label, color=color)
            best = view.ranked()[:1]
            st.caption(f"{view.done} of {len(view.trials)} trials done · best dev accuracy "
                       f"{ui.format_percent(best[0]['best_dev_accuracy'] if best else None)}")
            st.caption(" · ".join(f"{HYPERPARAMETERS[d.name].label.split(' (')[0]}: "
                                  f"{d.describe()}" for d in view.plan.space.searched))
            if view.message and view.status not in ("running",):
                (st.error if view.status == "failed" else st.caption)(view.message)
            if len(rounds) > 1:
                st.plotly_chart(accuracy_figure(view, height=280),
                                key=f"cv_scatter_{view.number}")


def round_detail(view: RoundView, study: Study) -> None:
    st.subheader(f"Round {view.number} in detail", anchor=False)
    if view.status in ("starting", "running", "cancelling"):
        done = view.done / max(1, len(view.trials))
        seconds = time.time() - view.started
        counts = {s: sum(t["status"] == s for t in view.trials)
                  for s in ("running", "stopped", "diverged")}
        st.progress(done, text=f"{view.done} of {len(view.trials)} trials done · "
                               f"{counts['running']} running · {counts['stopped']} stopped "
                               f"early by ASHA · {counts['diverged']} diverged · "
                               f"{seconds:.0f} s")
        if view.status == "starting":
            st.caption(view.message)
        st.button("Cancel the search", key=f"cv_cancel_{view.number}",
                  icon=":material/stop:", on_click=study.cancel,
                  disabled=view.status == "cancelling",
                  help="Stops every trial; what they reported so far is kept.")
    st.dataframe(trials_table(view), hide_index=True, key=f"cv_table_{view.number}",
                 column_config=table_columns(view))
    left, right = st.columns(2)
    left.plotly_chart(accuracy_figure(view, height=380), key=f"cv_alpha_{view.number}")
    right.plotly_chart(parallel_figure(view), key=f"cv_parallel_{view.number}")


def table_columns(view: RoundView) -> dict:
    """Numbers stay numbers (the table sorts them), shown to 3 significant digits."""
    columns = {
        "best dev accuracy": st.column_config.NumberColumn(format="percent"),
        "dev accuracy": st.column_config.NumberColumn(format="percent"),
        "dev cost": st.column_config.NumberColumn(format="%.4f"),
        "seconds": st.column_config.NumberColumn(format="%.1f"),
    }
    for dimension in view.plan.space.searched:
        if dimension.scale in ("log", "beta"):
            columns[HYPERPARAMETERS[dimension.name].label] = st.column_config.NumberColumn(
                format="%.3g" if dimension.scale == "log" else "%.4f")
    return columns


def trials_table(view: RoundView) -> pd.DataFrame:
    rows = []
    for trial in view.trials:
        point = trial["point"] or {}
        row = {"trial": trial["trial"], "status": trial["status"]}
        for dimension in view.plan.space.searched:
            row[HYPERPARAMETERS[dimension.name].label] = point.get(dimension.name)
        row.update({"best dev accuracy": trial["best_dev_accuracy"],
                    "dev accuracy": trial["dev_accuracy"], "dev cost": trial["dev_cost"],
                    "steps": trial["step"], "seconds": trial["seconds"],
                    "state kept": f"step {trial['state_step']}" if trial["state"] else "–",
                    "note": trial["diverged"] or trial["error"] or ""})
        rows.append(row)
    return pd.DataFrame(rows)


def accuracy_figure(view: RoundView, height: int) -> go.Figure:
    """Best dev accuracy against α (log axis), one colour per status."""
    layout = charts.base_layout(f"Round {view.number}: dev accuracy against α",
                                "best dev accuracy", x_title="α", height=height)
    layout["xaxis"].update(type="log", exponentformat="power")
    layout["yaxis"].update(tickformat=".0%", range=[0, 1.02])
    traces = []
    for status, color in STATUS_COLORS.items():
        group = [t for t in view.trials if t["status"] == status and t["point"]
                 and "lr" in t["point"] and t["best_dev_accuracy"] is not None]
        if not group:
            continue
        traces.append({"type": "scatter", "mode": "markers", "name": status,
                       "x": [t["point"]["lr"] for t in group],
                       "y": [t["best_dev_accuracy"] for t in group],
                       "text": [f"trial {t['trial']}: {ui.format_number(dict(t['point']))}"
                                for t in group], "hoverinfo": "text+y",
                       "marker": {"color": color, "size": 10}})
    if not traces:
        searched = [d.name for d in view.plan.space.searched]
        _note(layout, "no dev accuracy yet" if "lr" in searched
              else "α is not searched in this round")
    return charts.figure(traces, layout)


def _note(layout: dict, text: str) -> None:
    """A grey line of text in the middle of an empty chart."""
    layout.setdefault("annotations", []).append(
        {"text": text, "showarrow": False, "xref": "paper", "yref": "paper", "x": 0.5,
         "y": 0.5, "font": {"size": 13, "color": "gray"}})


def parallel_figure(view: RoundView) -> go.Figure:
    """Every trial as a line across the searched hyperparameters (each on its sampling
    scale, labelled in values) to its best dev accuracy."""
    trials = [t for t in view.trials if t["point"] and t["best_dev_accuracy"] is not None]
    layout = charts.base_layout(f"Round {view.number}: every trial", "", height=380)
    del layout["xaxis"], layout["yaxis"]
    layout["margin"] = {"l": 60, "r": 40, "t": 90, "b": 30}
    if not trials:
        _note(layout, "no dev accuracy yet")
        return charts.figure([], layout)
    axes = [axis(d, [t["point"][d.name] for t in trials]) for d in view.plan.space.searched]
    accuracies = [t["best_dev_accuracy"] for t in trials]
    axes.append({"label": "best dev accuracy", "values": accuracies, "range": [0, 1]})
    trace = {"type": "parcoords", "dimensions": axes,
             "line": {"color": accuracies, "colorscale": "Viridis", "cmin": 0, "cmax": 1,
                      "showscale": True}}
    return charts.figure([trace], layout)


def axis(dimension: Dimension, values: list) -> dict:
    """A parallel-coordinates axis on the dimension's sampling scale, ticks in values."""
    low, high = dimension.coordinate(dimension.low), dimension.coordinate(dimension.high)
    if dimension.scale in ("pow2", "int"):  # whole exponents or values
        ticks = list(range(round(low), round(high) + 1))
    else:
        ticks = sorted({round(low + (high - low) * i / 4, 6) for i in range(5)})
    label = HYPERPARAMETERS[dimension.name].label.split(" (")[0]
    return {"label": label, "values": [dimension.coordinate(v) for v in values],
            "range": [low, high] if high > low else [low - 0.5, high + 0.5],
            "tickvals": ticks,
            "ticktext": [ui.format_number(float(dimension.value_at(t))) for t in ticks]}


# ---------------------------------------------------------------------------
# After a round: details, coarse to fine, hand-off
# ---------------------------------------------------------------------------


def round_tools(trainer: Trainer, study: Study, rounds: list[RoundView]) -> None:
    numbers = [v.number for v in rounds]
    chosen = st.segmented_control("Round", numbers, default=numbers[-1], key="cv_round",
                                  format_func=lambda n: f"Round {n}") or numbers[-1]
    view = next(v for v in rounds if v.number == chosen)
    round_detail(view, study)
    left, right = st.columns(2)
    with left, st.container(border=True):
        coarse_to_fine(trainer, view)
    with right, st.container(border=True):
        babysit(trainer, view)
    ui.show_flashes(channel="caviar_round")


def coarse_to_fine(trainer: Trainer, view: RoundView) -> None:
    st.markdown("**Coarse to fine**")
    scored = len(view.ranked())
    st.caption("Narrow every searched range around the best K trials of this round (on its "
               "own scale, widened by half their spread) and start the next round with "
               "the same budget and a new seed.")
    st.number_input("K (best trials)", min_value=1, max_value=max(1, scored),
                    value=max(1, math.ceil(0.25 * scored)), key=f"cv_best_{view.number}",
                    help="Default: the best quarter, as dlcore.sampling.narrow_range keeps.")
    st.button(f"Narrow around the best and start round {view.number + 1}",
              key=f"cv_narrow_{view.number}", icon=":material/zoom_in:",
              disabled=not scored or bool(ray_missing()), on_click=_narrow,
              args=(trainer, view.number))


def _narrow(trainer: Trainer, number: int) -> None:
    study = study_for(trainer.snapshot().checkpoint_dir)
    best = int(st.session_state[f"cv_best_{number}"])
    try:
        plan = study.narrowed_plan(number, best)
    except ValueError as error:
        ui.flash("error", f"No round was started: {error}.", "caviar_round")
        return
    _start(trainer, plan, origin={"round": number, "best": best})


def babysit(trainer: Trainer, view: RoundView) -> None:
    st.markdown("**Babysit a trial (panda)**")
    ranked = view.ranked()
    if not ranked:
        st.caption("No trial of this round has a dev accuracy to go by.")
        return
    labels = {t["trial"]: (f"trial {t['trial']} · best dev "
                           f"{ui.format_percent(t['best_dev_accuracy'])} · "
                           + (f"state at step {t['state_step']}" if t["state"]
                              else "settings only (state not kept)"))
              for t in ranked}
    st.selectbox("Trial (best first)", list(labels), format_func=labels.get,
                 key=f"cv_trial_{view.number}")
    st.radio("As", ["branch", "run"], key=f"cv_as_{view.number}", horizontal=True,
             format_func={"branch": "a new branch of this run",
                          "run": "a new run"}.get,
             help="A branch needs the run's architecture (hidden units and layers "
                  "unchanged); it forks at step 0, where every trial starts.")
    st.button("Babysit this trial", type="primary", key=f"cv_babysit_{view.number}",
              icon=":material/child_care:", on_click=_babysit,
              args=(trainer, view.number))
    st.page_link("app.py", label="The training page", icon=":material/monitoring:")


def _babysit(trainer: Trainer, number: int) -> None:
    state = st.session_state
    trial, target = state[f"cv_trial_{number}"], state[f"cv_as_{number}"]
    snapshot = trainer.snapshot()
    study = study_for(snapshot.checkpoint_dir)
    try:
        handoff = study.handoff(number, trial, trainer.data)
    except ValueError as error:
        ui.flash("error", str(error), "caviar_round")
        return
    if target == "branch":
        if not handoff.fits_branch(trainer.config):
            ui.flash("error", f"Trial {trial} has another architecture "
                              f"({handoff.config.hidden}) than this run "
                              f"({trainer.config.hidden}): babysit it as a new run.",
                     "caviar_round")
            return
        ok, branch = ui.run_command(trainer.adopt, handoff, channel="caviar_round")
        if ok:
            ui.flash("success", f"Trial {trial} of round {number} is now branch {branch} of "
                                f"this run, paused at step {handoff.step}: open the "
                                "training page and press Start.", "caviar_round")
        return
    _new_run(handoff, snapshot)


def _new_run(handoff: Handoff, snapshot: Snapshot) -> None:
    config = handoff.config_for_new_run(snapshot.checkpoint_dir)
    try:
        trainer = holder().new_run(config, start_from=handoff.state, note=handoff.note)
    except (ValueError, OSError, MemoryError) as error:
        ui.flash("error", f"No new run was created; the current run is unchanged. {error}",
                 "caviar_round")
        return
    ui.forget_followed("hp_")
    # "main": this page shows the new run next, which has no rounds (and no round tools)
    ui.flash("success", f"Trial {handoff.trial} of round {handoff.round} is now run "
                        f"{trainer.run_id}, paused at step {handoff.step} "
                        f"({handoff.note}): open the training page and press Start.")


if __name__ == "__main__":
    main()
