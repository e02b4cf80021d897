"""Panda: babysit one neural network while it trains. ``streamlit run app.py``.

The live training page: run controls, the hyperparameter panel (applied atomically
with one "Apply", with a policy for the optimizer's moments on a switch), the
babysitter's assistant (suggestions with one-click Apply, and the autopilot), tiles
and live charts, decision regions for 2-D data, and the New run form. It reads
``Trainer.snapshot()`` and sends commands; dlcore does the math.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from dlcore.assistant import Suggestion, suggest
from dlcore.hparams import OPTIMIZER_HPARAMS
from dlcore.lookahead import switch_preview
from dlcore.optim import OPTIMIZERS, optimizer_formula
from dlcore.sampling import sample_beta, sample_log_uniform
from dlcore.schedules import SCHEDULES, make_schedule, preview, schedule_formula
from dlcore.trainer import RunConfig, Snapshot, Trainer, list_runs
from pages.shared import charts, ui
from pages.shared.engine import holder

OPTIMIZER_NAMES = {"gd": "Gradient descent", "momentum": "Momentum", "rmsprop": "RMSprop",
                   "adam": "Adam"}
SCHEDULE_NAMES = {"constant": "Constant", "inverse_time": "1 / (1 + decay·epoch)",
                  "exponential": "Exponential (base^epoch)", "inverse_sqrt": "k / √epoch",
                  "staircase": "Staircase (×factor every n epochs)",
                  "polynomial": "Polynomial (to `end` at `total`)"}
# Schedule parameters: label, minimum, format, help.
SCHEDULE_PARAMS = {
    "decay_rate": ("decay rate", 0.0, "%.3g", "α = α0 / (1 + decay_rate · ⌊epoch / interval⌋)"),
    "interval": ("interval (epochs)", 1e-3, "%g", "Decay once per this many epochs."),
    "base": ("base", 1e-6, "%.4g", "α = α0 · base^epoch; in (0, 1]."),
    "k": ("k", 1e-6, "%.3g", "α = α0 · k / √epoch."),
    "factor": ("factor", 1e-6, "%.3g", "Multiply α by this every `every` epochs; in (0, 1]."),
    "every": ("every (epochs)", 1e-3, "%g", "Epochs between two drops."),
    "end": ("end α", 0.0, "%.3g", "α reached at epoch `total` and kept after it."),
    "total": ("total (epochs)", 1e-3, "%g", "Epochs until α reaches `end`."),
    "power": ("power", 1e-6, "%.3g", "1 is a straight line from α0 to end."),
}
BETA_HELP = {
    "beta": "Momentum's β: v = β·v + (1−β)·dW averages the gradients of about "
            "1/(1−β) steps (0.9 ≈ the last 10).",
    "beta1": "Adam's β₁ for the first moment (mean of dW): ≈ 1/(1−β₁) steps. Usually 0.9.",
    "beta2": "β₂ for the second moment (mean of dW²): ≈ 1/(1−β₂) steps. Usually 0.999.",
    "eps": "ε keeps the division √s + ε away from zero. Usually 1e-8; rarely tuned.",
    "bn_momentum": "BatchNorm's running averages used at test time: "
                   "run = β·run + (1−β)·batch, ≈ the last 1/(1−β) mini-batches.",
}
BETA_LABELS = {"beta": "β", "beta1": "β₁", "beta2": "β₂", "eps": "ε",
               "bn_momentum": "BatchNorm β (running averages)"}
# The log-slider's grid for α: four values per decade, 1e-6 … 100.
ALPHA_GRID = [float(f"{10 ** (k / 4):.2g}") for k in range(-24, 9)]
SPEED_LIMITS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
WINDOWS = {"Last 500": 500, "Last 5,000": 5_000, "Last 50,000": 50_000, "All": None}
PREVIEW_EPOCHS = 40
MOMENT_POLICIES = {"fresh": "fresh (t = 0)", "carry": "carry what transfers"}
#: Autopilot events listed on the page (the newest).
AUTOPILOT_LOG_LENGTH = 8
#: The assistant's suggestions follow evaluations, not steps: refreshed less often than
#: the charts, so that watching costs the training thread less (bench/RESULTS.md).
ASSISTANT_REFRESH_SECONDS = 5.0
#: The learning curves redraw every 2 s while training, the tiles above them every second:
#: the browser redrawing four plotly charts takes about 0.4 of a core at once a second,
#: taken from the training thread on a two-core machine (bench/RESULTS.md).
CHART_REFRESH_SECONDS = 2.0


def main() -> None:
    trainer, snapshot = ui.page_start("Training", "Panda: babysit one network while it trains",
                                      sidebar_width=380)
    with st.sidebar:
        hyperparameter_panel(trainer, snapshot)
    run_controls(trainer, snapshot)
    ui.messages(trainer, snapshot)
    assistant_panel(trainer, snapshot)
    window, log_y = chart_options()
    ui.live_view(tiles, trainer, snapshot.status)
    ui.live_view(lambda s: live_charts(s, window, log_y), trainer, snapshot.status,
                 while_running=CHART_REFRESH_SECONDS)
    new_run_panel()


# ---------------------------------------------------------------------------
# Run controls
# ---------------------------------------------------------------------------


def run_controls(trainer: Trainer, snapshot: Snapshot) -> None:
    running = snapshot.status == "running"
    _sync_speed_limit(snapshot)
    with st.container(horizontal=True, vertical_alignment="bottom", gap="small"):
        if running:
            st.button("Pause", icon=":material/pause:", type="primary", key="pause",
                      on_click=_pause, args=(trainer,), help="Pause after the current step.")
        else:
            st.button("Start", icon=":material/play_arrow:", type="primary", key="start",
                      on_click=_start, args=(trainer,),
                      help="Train continuously until paused (also resumes after a "
                           "divergence or an error).")
        for n in (1, 10, 100):
            st.button(f"Step ×{n}", key=f"step_{n}", on_click=_step, args=(trainer, n),
                      disabled=running, help=f"Train exactly {n} step(s), then pause.")
        st.text_input("Checkpoint note", key="checkpoint_note", placeholder="note (optional)",
                      label_visibility="collapsed", width=200, max_chars=500)
        st.button("Checkpoint now", icon=":material/save:", key="checkpoint_now",
                  on_click=_checkpoint_now, args=(trainer,),
                  help="Save the complete state now; you can roll back to it later.")
        st.selectbox("Speed limit", _speed_options(snapshot), key="speed_limit",
                     format_func=lambda v: "no speed limit" if not v else f"≤ {v:g} steps/s",
                     on_change=_set_speed_limit, args=(trainer,), width=170,
                     label_visibility="collapsed",
                     help="Slow training down to watch it step by step.")
        ui.status_badge(snapshot.status)


def _start(trainer: Trainer) -> None:
    ok, _ = ui.run_command(trainer.start)
    if ok:  # the rerun then shows "running" and turns the live view on
        ui.wait_until(trainer, lambda s: s.status == "running")


def _pause(trainer: Trainer) -> None:
    ok, _ = ui.run_command(trainer.pause)
    if ok:
        ui.wait_until(trainer, lambda s: s.status != "running")


def _step(trainer: Trainer, n: int) -> None:
    before = trainer.snapshot().step
    ok, _ = ui.run_command(trainer.step, n)
    if ok:  # a few steps finish before the rerun; longer runs show live
        ui.wait_until(trainer, lambda s: s.step >= before + n or (
            s.step > before and s.status in ("diverged", "error", "stopped")), timeout=1.5)


def _checkpoint_now(trainer: Trainer) -> None:
    note = st.session_state.get("checkpoint_note", "")
    ok, checkpoint_id = ui.run_command(trainer.checkpoint, note)
    if ok:
        st.session_state["checkpoint_note"] = ""
        ui.flash("success", f"Saved checkpoint {checkpoint_id} at step "
                            f"{trainer.snapshot().step}.")


def _speed_options(snapshot: Snapshot) -> list:
    limit = snapshot.speed_limit or 0
    return SPEED_LIMITS if limit in SPEED_LIMITS else sorted([*SPEED_LIMITS, limit])


def _sync_speed_limit(snapshot: Snapshot) -> None:
    """The selector follows the run's limit (another tab may have set it)."""
    limit = snapshot.speed_limit or 0
    if st.session_state.get("speed_limit_base", "unset") != limit:
        st.session_state["speed_limit"] = limit
        st.session_state["speed_limit_base"] = limit


def _set_speed_limit(trainer: Trainer) -> None:
    limit = st.session_state["speed_limit"]
    ok, _ = ui.run_command(trainer.update, speed_limit=limit or None)
    if ok:
        ui.wait_until(trainer, lambda s: (s.speed_limit or 0) == limit)


# ---------------------------------------------------------------------------
# Hyperparameters: edited freely, sent together by "Apply"
# ---------------------------------------------------------------------------


def _current_hparams(snapshot: Snapshot) -> dict:
    """The run's hyperparameters as plain values, schedule parameters with defaults filled in."""
    hparams = {k: v for k, v in snapshot.hparams.items() if k != "schedule_params"}
    hparams["schedule_params"] = make_schedule(
        hparams["schedule"], **dict(snapshot.hparams["schedule_params"])).params
    return hparams


def _schedule_key(schedule: str, param: str) -> str:
    return f"hp_sched_{schedule}_{param}"


def _sync_fields(snapshot: Snapshot) -> None:
    """Fields follow the run when its hyperparameters change (Apply, rollback, another tab);
    a field the user is editing keeps its value until then."""
    current = _current_hparams(snapshot)
    base = st.session_state.get("hp_base")
    for key, value in current.items():
        widget = f"hp_{key}"
        if key == "schedule_params" or (
                base is not None and base.get(key) == value and widget in st.session_state):
            continue
        st.session_state[widget] = value
        if key == "lr":
            st.session_state["hp_lr_log"] = _nearest_grid_alpha(value)
    schedule, params = current["schedule"], current["schedule_params"]
    schedule_changed = base is None or (base["schedule"], base["schedule_params"]) != (
        schedule, params)
    for param, value in params.items():
        widget = _schedule_key(schedule, param)
        if schedule_changed or widget not in st.session_state:
            st.session_state[widget] = float(value)
    if "hp_lr_log" not in st.session_state:
        st.session_state["hp_lr_log"] = _nearest_grid_alpha(st.session_state["hp_lr"])
    st.session_state["hp_base"] = current
    # A field that reappears (β's after switching the optimizer back, a schedule's
    # parameters) must get its value in this run, or the browser shows the widget's default.
    for key in [k for k in st.session_state if k.startswith("hp_") and k != "hp_base"]:
        st.session_state[key] = st.session_state[key]


def _nearest_grid_alpha(alpha: float) -> float:
    return min(ALPHA_GRID, key=lambda g: abs(math.log10(g) - math.log10(alpha)))


def _alpha_from_slider() -> None:
    st.session_state["hp_lr"] = st.session_state["hp_lr_log"]


def _slider_from_alpha() -> None:
    st.session_state["hp_lr_log"] = _nearest_grid_alpha(st.session_state["hp_lr"])


def hyperparameter_controls(snapshot: Snapshot) -> dict:
    """The hyperparameter fields; returns what they hold now (applied or not)."""
    n_train = snapshot.dataset["n_train"]
    st.number_input("Learning rate α", key="hp_lr", min_value=1e-10, max_value=1e3,
                    format="%.3e", step=1e-5, on_change=_slider_from_alpha,
                    help="Sets α now; a decay schedule decays from this value.")
    st.select_slider("α on a log scale", options=ALPHA_GRID, key="hp_lr_log",
                     format_func=lambda v: f"{v:.2g}", on_change=_alpha_from_slider,
                     help="Four steps per decade: 1e-3, 1.8e-3, 3.2e-3, 5.6e-3, 1e-2 …")

    optimizer = st.selectbox("Optimizer", OPTIMIZERS, key="hp_optimizer",
                             format_func=OPTIMIZER_NAMES.get)
    own = OPTIMIZER_HPARAMS[optimizer]
    if own:
        for column, key in zip(st.columns(len(own)), own, strict=True):
            with column:
                _beta_input(key)

    schedule = st.selectbox("Learning-rate decay", SCHEDULES, key="hp_schedule",
                            format_func=SCHEDULE_NAMES.get)
    defaults = make_schedule(schedule).params
    if defaults:
        for column, (param, default) in zip(st.columns(len(defaults)), defaults.items(),
                                            strict=True):
            label, minimum, fmt, help_text = SCHEDULE_PARAMS[param]
            widget = _schedule_key(schedule, param)
            if widget not in st.session_state:
                st.session_state[widget] = float(default)
            column.number_input(label, key=widget, min_value=minimum, format=fmt,
                                help=help_text)

    left, right = st.columns(2)
    left.number_input("Mini-batch size", key="hp_batch_size", min_value=1, max_value=n_train,
                      step=1, help=f"Examples per gradient step (the training set has "
                                   f"{n_train}).")
    right.number_input("Evaluate every", key="hp_eval_every", min_value=1, step=10,
                       help="Steps between two evaluations of train/dev accuracy and of "
                            "the BatchNorm statistics.")
    left.number_input("L2 λ", key="hp_l2", min_value=0.0, format="%g",
                      step=1e-4, help="L2 regularization: adds λ/(2m)·Σ‖W‖² to the cost.")
    right.slider("Keep-prob", key="hp_keep_prob", min_value=0.05, max_value=1.0,
                 step=0.05, help="Dropout: the probability of keeping a hidden unit (1 = no "
                                "dropout).")
    _beta_input("bn_momentum", disabled=not snapshot.config["batchnorm"])
    return field_values(snapshot)


def field_values(snapshot: Snapshot) -> dict:
    """What the fields hold now, applied or not; a field not shown yet holds the run's value."""
    state, current = st.session_state, _current_hparams(snapshot)
    values = {key: state.get(f"hp_{key}", current[key])
              for key in ("lr", "optimizer", "schedule", "batch_size", "eval_every", "l2",
                          "keep_prob", "bn_momentum")}
    for key in OPTIMIZER_HPARAMS[values["optimizer"]]:
        values[key] = state.get(f"hp_{key}", current[key])
    schedule = values["schedule"]
    fallback = (current["schedule_params"] if schedule == current["schedule"]
                else make_schedule(schedule).params)
    values["schedule_params"] = {param: state.get(_schedule_key(schedule, param), default)
                                 for param, default in fallback.items()}
    return values


def _beta_input(key: str, disabled: bool = False) -> None:
    if key == "eps":
        st.number_input(BETA_LABELS[key], key="hp_eps", min_value=1e-15, max_value=1.0,
                        format="%.1e", step=None, help=BETA_HELP[key])
        return
    st.number_input(BETA_LABELS[key], key=f"hp_{key}", min_value=0.0, max_value=0.99999,
                    format="%.4f", step=0.001, help=BETA_HELP[key], disabled=disabled)


def pending_changes(values: dict, snapshot: Snapshot) -> dict:
    """Only the keys whose value differs from the run's (what Apply sends)."""
    current = _current_hparams(snapshot)
    changes = {}
    for key, value in values.items():
        if key == "schedule_params":
            continue
        if current.get(key) != value:
            changes[key] = value
    if values["schedule"] != current["schedule"] or \
            values["schedule_params"] != current["schedule_params"]:
        changes["schedule"] = values["schedule"]
        changes["schedule_params"] = values["schedule_params"]
    return changes


def hyperparameter_panel(trainer: Trainer, snapshot: Snapshot) -> None:
    st.header("Hyperparameters", anchor=False)
    _sync_fields(snapshot)
    values = hyperparameter_controls(snapshot)
    changes = pending_changes(values, snapshot)
    current = _current_hparams(snapshot)
    with st.container(horizontal=True):
        st.button("Apply", type="primary", key="apply", on_click=_apply, args=(trainer,),
                  icon=":material/check:",
                  help="Send every change at once; it takes effect at the next step "
                       "(a pre-change checkpoint is saved first).")
        st.button("Discard", key="discard", on_click=_discard, disabled=not changes,
                  help="Put the fields back to the run's values.")
    if changes:
        st.caption("Pending: " + ui.describe_changes(
            {k: (current.get(k), v) for k, v in changes.items()}))
    else:
        st.caption("The fields show the run's current values.")
    switch_policy(trainer, snapshot, values)
    schedule_preview(values)
    with st.expander("Formulas", icon=":material/function:"):
        st.markdown(f"**{OPTIMIZER_NAMES[values['optimizer']]}**")
        st.latex(optimizer_formula(values["optimizer"]))
        st.markdown(f"**Decay: {SCHEDULE_NAMES[values['schedule']]}**")
        st.latex(schedule_formula(values["schedule"]))
    sampling_panel(values)


def _apply(trainer: Trainer) -> None:
    # Read the fields now, not at the last render: an edit may have landed since.
    before = trainer.snapshot()
    changes = pending_changes(field_values(before), before)
    if not changes:
        ui.flash("info", "Nothing to apply: the fields hold the run's current values.")
        return
    carry = "optimizer" in changes and st.session_state.get("switch_moments") == "carry"
    if carry:
        changes["carry_moments"] = True
    ok, _ = ui.run_command(trainer.update, **changes)
    changes.pop("carry_moments", None)
    if not ok:
        return
    ui.wait_until(trainer, lambda s: len(s.events) > len(before.events))
    current = _current_hparams(before)
    moments = ("; the new optimizer carries the moments that transfer" if carry
               else "; the new optimizer starts fresh (t = 0)" if "optimizer" in changes else "")
    ui.flash("success", "Applied from the next step: " + ui.describe_changes(
        {k: (current.get(k), v) for k, v in changes.items()}) + moments)


def _discard() -> None:
    st.session_state.pop("hp_base", None)


def switch_policy(trainer: Trainer, snapshot: Snapshot, values: dict) -> None:
    """When the optimizer field differs from the run's: fresh or carried moments, and the
    effective step just before and after the switch (on sandboxes, when asked)."""
    if values["optimizer"] == snapshot.hparams["optimizer"]:
        return
    with st.container(border=True):
        carry = st.radio(
            "Moments on switch", list(MOMENT_POLICIES), format_func=MOMENT_POLICIES.get,
            key="switch_moments", horizontal=True,
            help="Fresh: the new optimizer starts with zero moments and t = 0 (its first "
                 "steps are small for momentum, large for RMSprop). Carry: momentum's v ↔ "
                 "Adam's first moment, RMSprop's s ↔ Adam's second moment, so the step size "
                 "need not jump.") == "carry"
        changes = switch_changes(values, snapshot)
        request = (snapshot.run_id, snapshot.branch, snapshot.step, repr(changes), carry)
        st.button("Preview the switch", key="preview_switch", icon=":material/preview:",
                  on_click=_preview_switch, args=(trainer, changes, carry, request),
                  help="Take the next step on two sandbox copies of the run, with the "
                       "optimizer now and with the new one: the live run is not touched.")
        ui.show_flashes(channel="switch")
        preview = st.session_state.get("switch_preview")
        if preview is None:
            return
        if preview["request"] != request:
            st.caption("The preview below was for other settings or an earlier step; "
                       "preview again.")
        st.dataframe(switch_table(preview["result"]), hide_index=True, key="switch_table",
                     column_config={"before": st.column_config.NumberColumn(format="%.1e"),
                                    "after": st.column_config.NumberColumn(format="%.1e"),
                                    "jump": st.column_config.NumberColumn(
                                        format="%.2g×", help="after / before")})
        st.caption(f"Effective step ‖ΔW‖/‖W‖ per layer: the next step with "
                   f"{OPTIMIZER_NAMES[snapshot.hparams['optimizer']]} (before) and with "
                   f"{OPTIMIZER_NAMES[preview['optimizer']]} "
                   f"({MOMENT_POLICIES[preview['policy']]}) on the same mini-batch.")


def switch_changes(values: dict, snapshot: Snapshot) -> dict:
    """The new optimizer with its β's/ε as in the fields, and α if that is pending too."""
    changes = {"optimizer": values["optimizer"]}
    changes.update({key: values[key] for key in OPTIMIZER_HPARAMS[values["optimizer"]]})
    if values["lr"] != snapshot.hparams["lr"]:
        changes["lr"] = values["lr"]
    return changes


def _preview_switch(trainer: Trainer, changes: dict, carry: bool, request: tuple) -> None:
    ok, state = ui.run_command(trainer.export_state, channel="switch")
    if not ok:
        return
    try:
        result = switch_preview(trainer.config, trainer.data, state, changes, carry)
    except ValueError as error:
        ui.flash("error", f"No preview: {error}", channel="switch")
        return
    st.session_state["switch_preview"] = {"request": request, "result": result,
                                          "optimizer": changes["optimizer"],
                                          "policy": "carry" if carry else "fresh"}


def switch_table(result) -> pd.DataFrame:
    before, after = result["before"], result["after"]
    return pd.DataFrame([{"layer": layer, "before": before[layer], "after": after.get(layer),
                          "jump": after.get(layer) / before[layer]
                          if before[layer] else None} for layer in before])


def schedule_preview(values: dict) -> None:
    """α over the next epochs if the fields were applied now."""
    try:
        schedule = make_schedule(values["schedule"], **values["schedule_params"])
        alphas = preview(schedule, values["lr"], PREVIEW_EPOCHS)
    except ValueError as error:
        st.error(f"Schedule: {error}")
        return
    fig = charts.new_figure(f"α over the next {PREVIEW_EPOCHS} epochs", "α", x_title="epoch",
                            height=180)
    fig.add_scatter(x=list(range(PREVIEW_EPOCHS)), y=alphas, mode="lines",
                    line={"color": "#ff7f0e", "width": 2}, name="α", showlegend=False)
    fig.update_layout(margin={"l": 0, "r": 0, "t": 30, "b": 0}, title_font_size=12)
    fig.update_yaxes(exponentformat="power", range=[0, 1.1 * max(alphas.tolist())])
    st.plotly_chart(fig, key="schedule_preview", config={"displayModeBar": False})


def sampling_panel(values: dict) -> None:
    """Draw α = 10^r or β = 1 − 10^r (the course's "appropriate scale")."""
    with st.expander("Sample on a log scale", icon=":material/casino:"):
        st.caption("α = 10^r with r uniform in [a, b]: every decade gets the same share "
                   "of draws. The draw fills the α field; Apply uses it.")
        left, right = st.columns(2)
        left.number_input("a (α ≥ 10^a)", key="sample_alpha_low", value=-4.0, step=0.5,
                          format="%g")
        right.number_input("b (α ≤ 10^b)", key="sample_alpha_high", value=0.0, step=0.5,
                           format="%g")
        st.button("Draw α", key="draw_alpha", on_click=_draw_alpha, icon=":material/casino:")
        st.divider()
        betas = [k for k in OPTIMIZER_HPARAMS[values["optimizer"]] if k != "eps"]
        betas.append("bn_momentum")
        st.caption("β = 1 − 10^r: fine near 1, where 1/(1−β) (the number of steps "
                   "averaged) changes fastest.")
        st.selectbox("Which β", betas, key="sample_beta_key", format_func=BETA_LABELS.get)
        left, right = st.columns(2)
        left.number_input("lowest β", key="sample_beta_low", value=0.9, min_value=0.0,
                          max_value=0.99999, format="%.4f", step=0.01)
        right.number_input("highest β", key="sample_beta_high", value=0.999, min_value=0.0,
                           max_value=0.99999, format="%.4f", step=0.001)
        st.button("Draw β", key="draw_beta", on_click=_draw_beta, icon=":material/casino:")
        for kind, message in st.session_state.get("sample_messages", [])[-4:][::-1]:
            getattr(st, kind)(message)


def _sample_message(kind: str, message: str) -> None:
    st.session_state.setdefault("sample_messages", []).append((kind, message))


def _draw_alpha() -> None:
    low, high = st.session_state["sample_alpha_low"], st.session_state["sample_alpha_high"]
    try:
        alpha = sample_log_uniform(10.0 ** low, 10.0 ** high)
    except ValueError as error:
        _sample_message("error", f"α range: {error}")
        return
    st.session_state["hp_lr"] = alpha
    _slider_from_alpha()
    _sample_message("info", f"Drew α = {alpha:.3g} (r = {math.log10(alpha):.2f}) "
                            f"from [1e{low:g}, 1e{high:g}]. Press Apply to use it.")


def _draw_beta() -> None:
    key = st.session_state["sample_beta_key"]
    low, high = st.session_state["sample_beta_low"], st.session_state["sample_beta_high"]
    try:
        beta = sample_beta(low, high)
    except ValueError as error:
        _sample_message("error", f"β range: {error}")
        return
    st.session_state[f"hp_{key}"] = beta
    _sample_message("info", f"Drew {BETA_LABELS[key]} = {beta:.5f} (averages ≈ "
                            f"{1 / (1 - beta):.0f} steps). Press Apply to use it.")


# ---------------------------------------------------------------------------
# The babysitter's assistant
# ---------------------------------------------------------------------------


def assistant_panel(trainer: Trainer, snapshot: Snapshot) -> None:
    """Suggestions read from the run's curves, each with its evidence and one click to
    apply; the autopilot applies them itself. Live while training runs."""
    with st.container(border=True, key="assistant"):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown("**:material/support_agent: Assistant**", width="content")
            _sync_autopilot(snapshot)
            st.toggle("Autopilot", key="autopilot", on_change=_set_autopilot, args=(trainer,),
                      help="Let the assistant apply its first suggestion itself at each "
                           "evaluation. Each one is logged as an event, after a pre-change "
                           "checkpoint you can roll back to.")
        ui.live_view(lambda s: assistant_view(trainer, s), trainer, snapshot.status,
                     while_running=ASSISTANT_REFRESH_SECONDS)


def _sync_autopilot(snapshot: Snapshot) -> None:
    """The toggle follows the run's setting (another tab may have changed it)."""
    if st.session_state.get("autopilot_base", "unset") != snapshot.autopilot:
        st.session_state["autopilot"] = snapshot.autopilot
        st.session_state["autopilot_base"] = snapshot.autopilot


def _set_autopilot(trainer: Trainer) -> None:
    on = st.session_state["autopilot"]
    ok, _ = ui.run_command(trainer.update, autopilot=on, channel="assistant")
    if ok:
        ui.wait_until(trainer, lambda s: s.autopilot == on)
        ui.flash("info", "Autopilot on: it applies the assistant's suggestions itself and "
                         "logs each one below." if on else "Autopilot off.", "assistant")


def assistant_view(trainer: Trainer, snapshot: Snapshot) -> None:
    if st.session_state.pop("assistant_acted", False):
        st.rerun(scope="app")  # the hyperparameter fields and the status follow the change
    ui.show_flashes(channel="assistant")
    suggestions = suggest(snapshot)
    if not suggestions:
        st.caption("No suggestions: no plateau, no sign of overfitting, the update-to-weight "
                   "ratio is near 1e-3 (or there are too few steps and evaluations to tell).")
    for i, suggestion in enumerate(suggestions):
        with st.container(horizontal=True, vertical_alignment="center"):
            with st.container():
                st.markdown(f"**{suggestion.title}**")
                st.caption(suggestion.evidence)
            st.button("Apply", key=f"assistant_apply_{i}_{suggestion.rule}",
                      on_click=_apply_suggestion, args=(trainer, suggestion),
                      icon=":material/auto_fix_high:", width="content",
                      help=_undo_note(suggestion))
    undo = st.session_state.get("assistant_undo_point")
    if undo and undo["run_id"] == snapshot.run_id:
        st.button(f"Undo: roll back to {undo['checkpoint']}", key="assistant_undo",
                  on_click=_undo_suggestion, args=(trainer,), icon=":material/undo:",
                  help="Restores the state saved just before the change (on a new branch; "
                       "nothing is lost).")
    log = [e for e in snapshot.events if e["kind"] == "autopilot"][-AUTOPILOT_LOG_LENGTH:]
    if log:
        st.markdown("**Autopilot log**")
        for event in reversed(log):
            st.caption(f"step {event['step']} · {event['title']} — {event['evidence']}")


def _undo_note(suggestion: Suggestion) -> str:
    if "update" in suggestion.action:
        return ("Applies from the next step. A pre-change checkpoint is saved first: roll "
                "back to it to undo.")
    if "rollback" in suggestion.action:
        return ("Continues from that checkpoint on a new branch; the branch you leave is "
                "saved and stays in the tree, so you can roll back to it.")
    return "Pauses the run; Start continues it."


def _apply_suggestion(trainer: Trainer, suggestion: Suggestion) -> None:
    action = suggestion.action
    before = trainer.snapshot()
    st.session_state.pop("assistant_undo_point", None)
    if "update" in action:
        ok, _ = ui.run_command(trainer.update, **action["update"], channel="assistant")
        if not ok:
            return
        after = ui.wait_until(trainer, lambda s: len(s.events) > len(before.events))
        saved = [c["id"] for c in after.checkpoints if c["kind"] == "pre-change"
                 and c["step"] == after.step and c["branch"] == after.branch]
        note = ""
        if saved:
            st.session_state["assistant_undo_point"] = {"run_id": after.run_id,
                                                  "checkpoint": saved[-1]}
            note = f" To undo, roll back to {saved[-1]} (saved just before the change)."
        ui.flash("success", f"Applied: {suggestion.title}.{note}", "assistant")
    elif "rollback" in action:
        ok, branch = ui.run_command(trainer.rollback, action["rollback"], channel="assistant")
        if not ok:
            return
        ui.flash("success", f"Applied: {suggestion.title}. The run continues on branch "
                            f"{branch}, paused; the branch you left stays in the tree.",
                 "assistant")
    else:
        ok, _ = ui.run_command(trainer.pause, channel="assistant")
        if not ok:
            return
        ui.wait_until(trainer, lambda s: s.status != "running")
        ui.flash("success", f"Applied: {suggestion.title}. Start continues the run.",
                 "assistant")
    st.session_state["assistant_acted"] = True


def _undo_suggestion(trainer: Trainer) -> None:
    checkpoint_id = st.session_state.pop("assistant_undo_point")["checkpoint"]
    ok, branch = ui.run_command(trainer.rollback, checkpoint_id, channel="assistant")
    if ok:
        ui.flash("success", f"Undone: rolled back to {checkpoint_id}; the run continues on "
                            f"branch {branch}, paused.", "assistant")
        st.session_state["assistant_acted"] = True


# ---------------------------------------------------------------------------
# The live view
# ---------------------------------------------------------------------------


def chart_options() -> tuple[int | None, bool]:
    with st.container(horizontal=True, vertical_alignment="center"):
        choice = st.segmented_control("Window", list(WINDOWS), default="All", key="window",
                                      label_visibility="collapsed",
                                      help="Show the last N steps or the whole lineage.")
        log_y = st.toggle("Log-scale cost", key="log_y")
    return WINDOWS.get(choice or "All"), log_y


def tiles(snapshot: Snapshot) -> None:
    history = snapshot.history
    cost = float(history["cost"][-1]) if len(history["cost"]) else None
    dev = history["dev_accuracy"]
    dev_now = float(dev[-1]) if len(dev) else None
    dev_delta = (f"{100 * (float(dev[-1]) - float(dev[-2])):+.1f} pts" if len(dev) > 1
                 else None)
    columns = st.columns(6)
    columns[0].metric("Step", f"{snapshot.step:,}", border=True)
    columns[1].metric("Epoch", f"{snapshot.epoch:,}", border=True)
    columns[2].metric("α now", f"{snapshot.alpha:.3g}", border=True,
                      help="The learning rate of the next step (after any decay).")
    columns[3].metric("Last cost J", "–" if cost is None else f"{cost:.4f}", border=True,
                      help="Cost of the last mini-batch (training mode).")
    columns[4].metric("Dev accuracy", ui.format_percent(dev_now), dev_delta, border=True,
                      help="At the last evaluation, inference mode; change since the one "
                           "before.")
    columns[5].metric("Steps / s", f"{snapshot.steps_per_second:.0f}", border=True)


def live_charts(snapshot: Snapshot, window: int | None, log_y: bool) -> None:
    history, events = snapshot.history, snapshot.events
    others = [(number, branch["history"], branch["fork_step"])
              for number, branch in snapshot.branches.items() if number != snapshot.branch][-8:]
    top_left, top_right = st.columns(2)
    top_left.plotly_chart(charts.cost_figure(history, events, window, log_y, others),
                          key="chart_cost")
    top_right.plotly_chart(charts.accuracy_figure(history, events, window),
                           key="chart_accuracy")
    bottom_left, bottom_right = st.columns(2)
    bottom_left.plotly_chart(charts.alpha_figure(history, events, window), key="chart_alpha")
    bottom_right.plotly_chart(
        charts.update_ratio_figure(history, snapshot.layers, events, window),
        key="chart_update_ratio")
    st.caption(charts.EVENTS_CAPTION)
    if snapshot.decision_grid is not None:
        left, right = st.columns([3, 2])
        left.plotly_chart(charts.decision_region_figure(snapshot.decision_grid,
                                                        snapshot.dataset["class_names"]),
                          key="chart_decision_regions")
        right.markdown(
            "**Decision regions.** The background is the class the network predicts at each "
            "point of the plane (inference mode), the dots are the training examples. Refreshed "
            f"at every evaluation (every {snapshot.hparams['eval_every']} steps).")


# ---------------------------------------------------------------------------
# New run / reopen
# ---------------------------------------------------------------------------

DATASETS = {"digits": "Digits (8×8 images, 10 classes)", "spirals": "Spirals (2-D)",
            "blobs": "Blobs (2-D)", "upload": "Upload a CSV or NPZ file"}
UPLOAD_HELP = ("CSV: a header row; the label column is named label, class or y (else the "
               "last column); every other column is a number feature. NPZ: arrays X "
               "(examples × features) and y (examples), as written by numpy.savez(path, X=X, "
               "y=y). Labels are integers; at least 10 examples and 2 per class.")


def parse_hidden_sizes(text: str) -> tuple[int, ...]:
    """ "64, 32" → (64, 32); an empty text means no hidden layer (softmax regression)."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    sizes = []
    for part in parts:
        if not part.isdigit() or int(part) < 1:
            raise ValueError(f"Hidden layer sizes must be positive whole numbers separated by "
                             f"commas, like \"64, 32\"; {part!r} is not one.")
        sizes.append(int(part))
    if len(sizes) > 20 or any(n > 4096 for n in sizes):
        raise ValueError("Keep it to at most 20 hidden layers of at most 4096 units each.")
    return tuple(sizes)


def new_run_panel() -> None:
    with st.expander("New run or reopen a saved run", icon=":material/add_circle:"):
        ui.show_flashes(channel="new_run")
        new_tab, open_tab = st.tabs(["New run", "Reopen a saved run"])
        with new_tab:
            new_run_form()
        with open_tab:
            reopen_form()


def new_run_form() -> None:
    st.caption("A new run is a new network: the current run is stopped (its checkpoints stay "
               "on disk) and every tab switches to the new one. Hyperparameters start at "
               "their defaults (Adam, α = 1e-3) and can be changed live.")
    dataset = st.radio("Dataset", list(DATASETS), format_func=DATASETS.get, horizontal=True,
                       key="new_dataset")
    if dataset == "upload":
        st.file_uploader("Data file", type=["csv", "npz"], key="new_upload", help=UPLOAD_HELP)
    columns = st.columns(4)
    columns[0].text_input("Hidden layer sizes", value="64, 32", key="new_hidden",
                          help="Units per hidden layer, input to output, e.g. \"64, 32\".")
    columns[1].selectbox("Activation", ["relu", "leaky_relu", "tanh"], key="new_activation")
    columns[2].selectbox("Initialization", ["he", "xavier"], key="new_init",
                         help="He (2/n) suits ReLU; Xavier (1/n) suits tanh.")
    columns[3].selectbox("Precision", ["float64", "float32"], key="new_dtype")
    columns = st.columns(4)
    columns[0].toggle("BatchNorm", value=True, key="new_batchnorm")
    columns[1].number_input("Seed", min_value=0, value=0, step=1, key="new_seed")
    columns[2].number_input("Checkpoint every (steps)", min_value=0, value=0, step=100,
                            key="new_checkpoint_every", help="0 = only by hand and before "
                            "every change.")
    st.button("Create run", type="primary", key="create_run", on_click=_create_run,
              icon=":material/rocket_launch:")


def _create_run() -> None:
    state = st.session_state
    try:
        hidden = parse_hidden_sizes(state["new_hidden"])  # before anything is touched
        with tempfile.TemporaryDirectory(prefix="panda-upload-") as folder:
            dataset = state["new_dataset"]
            if dataset == "upload":
                upload = state.get("new_upload")
                if upload is None:
                    raise ValueError("Choose a CSV or NPZ file to upload first.")
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(upload.name).name) or "data"
                path = Path(folder) / name
                path.write_bytes(upload.getvalue())
                dataset = str(path)
            config = RunConfig(dataset=dataset, hidden=hidden, activation=state["new_activation"],
                               batchnorm=state["new_batchnorm"], init=state["new_init"],
                               seed=int(state["new_seed"]), dtype=state["new_dtype"],
                               checkpoint_every=int(state["new_checkpoint_every"]))
            _switch_run(lambda: holder().new_run(config), "No new run was created")
    except ValueError as error:  # a bad hidden-size text or a missing file
        ui.flash("error", f"No new run was created; the current run is unchanged. {error}",
                 channel="new_run")


def reopen_form() -> None:
    runs = list_runs(holder().checkpoint_dir)[::-1]
    if not runs:
        st.caption("No saved runs yet.")
        return
    st.selectbox("Saved runs (newest first)", runs, key="reopen_run_id")
    st.button("Reopen run", key="reopen_run", on_click=_reopen_run,
              icon=":material/folder_open:",
              help="Continue a saved run from its newest checkpoint, history included.")


def _reopen_run() -> None:
    run_id = st.session_state["reopen_run_id"]
    _switch_run(lambda: holder().open_run(run_id), f"Could not reopen {run_id}")


def _switch_run(make, failure: str) -> None:
    """Make a new current run; on failure say why, the current run stays as it was."""
    try:
        trainer = make()
    except (ValueError, OSError) as error:
        ui.flash("error", f"{failure}; the current run is unchanged. {error}",
                 channel="new_run")
        return
    st.session_state.pop("hp_base", None)  # the fields follow the new run
    ui.flash("success", f"Now on run {trainer.run_id} at step {trainer.snapshot().step}, "
                        "paused: press Start to train.")


if __name__ == "__main__":
    main()
