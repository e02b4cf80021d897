"""The sidebar's hyperparameters: edited freely, sent together by one "Apply".

Every field shows the run's value and follows it (another tab, a rollback, the
assistant) until the user edits it (``ui.follow``); Apply sends exactly the fields the
user changed in this tab, from the run's next step, after a pre-change checkpoint.
Below the fields: the optimizer-switch policy (``switch``), the decay preview, the
formulas and the log-scale sampler (``sampling``).
"""

from __future__ import annotations

import math
import re

import numpy as np
import streamlit as st

from dlcore.hparams import OPTIMIZER_HPARAMS
from dlcore.optim import OPTIMIZERS, optimizer_formula
from dlcore.schedules import (
    SCHEDULES,
    half_life_params,
    make_schedule,
    preview_over,
    schedule_formula,
)
from dlcore.state import ALPHA_FLOOR
from dlcore.trainer import Snapshot, Trainer
from pages.panels import sampling, switch
from pages.shared import charts, ui

# Schedule parameters: label, minimum (None: a list typed as text), format, help.
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
    "boundaries": ("boundaries (epochs)", None, "", "Epochs where α drops, increasing, "
                   "separated by commas: 10, 20."),
    "factors": ("factors", None, "", "α0 × each factor, one more than the boundaries, in "
                "(0, 1]: 1, 0.1, 0.01."),
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
PREVIEW_EPOCHS = 40
#: A new decay schedule starts with parameters under which α halves in this many minutes
#: of training at the run's speed (see ``schedules.half_life_params``).
HALF_LIFE_MINUTES = 2.0
PREVIEW_MINUTES = 10.0
UNIT_NAMES = {"epochs": "per epoch", "steps": "per step"}
#: The hyperparameters every optimizer has a field for (its own β's/ε come on top).
COMMON_KEYS = ("lr", "optimizer", "schedule", "schedule_unit", "batch_size", "eval_every",
               "l2", "l1", "keep_prob", "bn_momentum")


def panel(trainer: Trainer, snapshot: Snapshot) -> None:
    st.header("Hyperparameters", anchor=False)
    follow_run(snapshot)
    if snapshot.steps_per_second:
        st.session_state["last_steps_per_second"] = snapshot.steps_per_second
    values = controls(trainer, snapshot)
    changes = pending_changes(values)
    with st.container(horizontal=True):
        st.button("Apply", type="primary", key="apply", on_click=_apply, args=(trainer,),
                  icon=":material/check:",
                  help="Send every change at once; it takes effect at the next step "
                       "(a pre-change checkpoint is saved first).")
        st.button("Discard", key="discard", on_click=_discard, disabled=not changes,
                  help="Put the fields back to the run's values.")
    if changes:
        st.caption("Pending: " + ui.describe_changes(_old_and_new(changes)))
    else:
        st.caption("The fields show the run's current values.")
    switch.panel(trainer, snapshot, values)
    schedule_preview(values, snapshot)
    formulas(values)
    # Keyed, so that the expander inside stays as the user left it when the fields above
    # add or drop widgets (the β's of another optimizer, a schedule's parameters).
    with st.container(key="sampling"):
        sampling.panel(values, BETA_LABELS, _slider_from_alpha)


#: The formulas' size: KaTeX's display size (1.21 em) is larger than the sidebar's text,
#: and an expander in a 380 px sidebar leaves them 286 px; at this size every
#: optimizer's rule and every decay but the polynomial one fit (Adam: 192 px).
FORMULA_SIZE = r"\scriptsize "


def formulas(values: dict) -> None:
    """The update rule and the decay of the fields' optimizer and schedule.

    The expander keeps its state in the session (a key, ``on_change="rerun"``): it stays
    open or closed as the user left it while fields above it come and go.
    """
    with st.expander("Formulas", icon=":material/function:", key="formulas_open",
                     on_change="rerun"):
        st.markdown(f"**{ui.OPTIMIZER_NAMES[values['optimizer']]}**")
        st.latex(FORMULA_SIZE + optimizer_formula(values["optimizer"]))
        st.markdown(f"**Decay: {ui.SCHEDULE_NAMES[values['schedule']]}**")
        st.latex(FORMULA_SIZE + schedule_formula(values["schedule"]))


# ---------------------------------------------------------------------------
# Fields that follow the run
# ---------------------------------------------------------------------------


def current_hparams(snapshot: Snapshot) -> dict:
    """The run's hyperparameters as plain values, schedule parameters with defaults filled in."""
    hparams = {k: v for k, v in snapshot.hparams.items() if k != "schedule_params"}
    hparams["schedule_params"] = make_schedule(
        hparams["schedule"], **dict(snapshot.hparams["schedule_params"])).params
    return hparams


def schedule_key(schedule: str, param: str) -> str:
    return f"hp_sched_{schedule}_{param}"


def follow_run(snapshot: Snapshot) -> None:
    """Every field takes the run's value unless the user has edited it in this tab."""
    state, current = st.session_state, current_hparams(snapshot)
    for key, value in current.items():
        if key != "schedule_params" and ui.follow(f"hp_{key}", value) and key == "lr":
            state["hp_lr_log"] = _nearest_grid_alpha(value)
    for param, value in current["schedule_params"].items():
        ui.follow(schedule_key(current["schedule"], param), _param_field_value(value))
    if "hp_lr_log" not in state:
        state["hp_lr_log"] = _nearest_grid_alpha(state["hp_lr"])
    # A field that reappears (β's after switching the optimizer back, a schedule's
    # parameters) must get its value in this run, or the browser shows the widget's default.
    for key in [k for k in state if k.startswith("hp_") and not k.endswith(".run")]:
        state[key] = state[key]


def _param_field_value(value):
    """A schedule parameter as its field holds it: a number, or a list as "10, 20"."""
    if isinstance(value, (list, tuple)):
        return ", ".join(f"{v:g}" for v in value)
    return float(value)


def _parse_param(value):
    """A field's value back as a schedule parameter; a list field's text as floats."""
    if not isinstance(value, str):
        return value
    parts = [p for p in re.split(r"[,;\s]+", value.strip()) if p]
    try:
        return [float(p) for p in parts]
    except ValueError:
        return value  # make_schedule says what is wrong with it


def _nearest_grid_alpha(alpha: float) -> float:
    return min(ALPHA_GRID, key=lambda g: abs(math.log10(g) - math.log10(alpha)))


def _alpha_from_slider() -> None:
    st.session_state["hp_lr"] = st.session_state["hp_lr_log"]


def _slider_from_alpha() -> None:
    st.session_state["hp_lr_log"] = _nearest_grid_alpha(st.session_state["hp_lr"])


def controls(trainer: Trainer, snapshot: Snapshot) -> dict:
    """The hyperparameter fields; returns what they hold now (applied or not)."""
    n_train = snapshot.dataset["n_train"]
    st.number_input("Learning rate α₀", key="hp_lr", min_value=1e-10, max_value=1e3,
                    format="%.3e", step=1e-5, on_change=_slider_from_alpha,
                    help="The α the decay schedule starts from; typing one sets α now and "
                         "the schedule decays from there. The tile \"α now\" shows the α "
                         "in force after any decay.")
    st.select_slider("α₀ on a log scale", options=ALPHA_GRID, key="hp_lr_log",
                     format_func=lambda v: f"{v:.2g}", on_change=_alpha_from_slider,
                     help="Four steps per decade: 1e-3, 1.8e-3, 3.2e-3, 5.6e-3, 1e-2 …")

    optimizer = st.selectbox("Optimizer", OPTIMIZERS, key="hp_optimizer",
                             format_func=ui.OPTIMIZER_NAMES.get)
    own = OPTIMIZER_HPARAMS[optimizer]
    if own:
        for column, key in zip(st.columns(len(own)), own, strict=True):
            with column:
                _beta_input(key)

    left, right = st.columns([2, 1])
    schedule = left.selectbox("Learning-rate decay", SCHEDULES, key="hp_schedule",
                              format_func=ui.SCHEDULE_NAMES.get, on_change=_scale_schedule,
                              args=(trainer,))
    right.selectbox("Decays", list(UNIT_NAMES), key="hp_schedule_unit",
                    format_func=UNIT_NAMES.get, on_change=_scale_schedule, args=(trainer,),
                    help="What the schedule's \"epoch\" counts. On a small data set an epoch "
                         "is a few steps, and a decay per epoch is over in seconds: count "
                         "steps then. A new choice starts with parameters under which α "
                         f"halves in about {HALF_LIFE_MINUTES:g} min at the run's speed.")
    defaults = make_schedule(schedule).params
    if defaults:
        for column, (param, default) in zip(st.columns(len(defaults)), defaults.items(),
                                            strict=True):
            _schedule_param_input(column, schedule, param, default)

    left, right = st.columns(2)
    left.number_input("Mini-batch size", key="hp_batch_size", min_value=1, max_value=n_train,
                      step=1, help=f"Examples per gradient step (the training set has "
                                   f"{n_train}).")
    right.number_input("Evaluate every", key="hp_eval_every", min_value=1, step=10,
                       help="Steps between two evaluations of train/dev accuracy and of "
                            "the BatchNorm statistics.")
    left.number_input("L2 λ", key="hp_l2", min_value=0.0, format="%g",
                      step=1e-4, help="L2 regularization: adds λ/(2m)·Σ‖W‖² to the cost; "
                                      "it shrinks every weight.")
    right.number_input("L1 λ₁", key="hp_l1", min_value=0.0, format="%g", step=1e-4,
                       help="L1 regularization: adds λ₁/(2m)·Σ|W| to the cost; it drives "
                            "weights to exactly 0 (watch the sparsity chart).")
    left.slider("Keep-prob", key="hp_keep_prob", min_value=0.05, max_value=1.0,
                step=0.05, help="Dropout: the probability of keeping a hidden unit (1 = no "
                                "dropout).")
    with right:
        _beta_input("bn_momentum", disabled=not snapshot.config["batchnorm"])
    return field_values(snapshot)


def units_per_minute(snapshot: Snapshot, unit: str) -> float | None:
    """Epochs or steps the run trains in a minute, at its speed now (or last seen)."""
    speed = snapshot.steps_per_second or st.session_state.get("last_steps_per_second", 0)
    if not speed:
        return None
    if unit == "steps":
        return 60.0 * speed
    batches = max(1, snapshot.dataset["n_train"] // max(1, snapshot.hparams["batch_size"]))
    return 60.0 * speed / batches


def _scale_schedule(trainer: Trainer) -> None:
    """A newly chosen schedule or unit starts with parameters under which α halves in
    HALF_LIFE_MINUTES at the run's speed (its defaults if the speed is not known yet)."""
    state = st.session_state
    schedule, unit = state["hp_schedule"], state["hp_schedule_unit"]
    per_minute = units_per_minute(trainer.snapshot(), unit)
    params = (half_life_params(schedule, max(1.0, HALF_LIFE_MINUTES * per_minute))
              if per_minute else make_schedule(schedule).params)
    for param, value in params.items():
        state[schedule_key(schedule, param)] = _param_field_value(value)


def _schedule_param_input(column, schedule: str, param: str, default) -> None:
    label, minimum, fmt, help_text = SCHEDULE_PARAMS[param]
    widget = schedule_key(schedule, param)
    if widget not in st.session_state:
        st.session_state[widget] = _param_field_value(default)
    if minimum is None:
        column.text_input(label, key=widget, help=help_text)
    else:
        column.number_input(label, key=widget, min_value=minimum, format=fmt, help=help_text)


def field_values(snapshot: Snapshot) -> dict:
    """What the fields hold now, applied or not; a field not shown yet holds the run's value."""
    state, current = st.session_state, current_hparams(snapshot)
    values = {key: state.get(f"hp_{key}", current[key]) for key in COMMON_KEYS}
    for key in OPTIMIZER_HPARAMS[values["optimizer"]]:
        values[key] = state.get(f"hp_{key}", current[key])
    schedule = values["schedule"]
    fallback = (current["schedule_params"] if schedule == current["schedule"]
                else make_schedule(schedule).params)
    values["schedule_params"] = {
        param: _parse_param(state.get(schedule_key(schedule, param), default))
        for param, default in fallback.items()}
    return values


def _beta_input(key: str, disabled: bool = False) -> None:
    if key == "eps":
        st.number_input(BETA_LABELS[key], key="hp_eps", min_value=1e-15, max_value=1.0,
                        format="%.1e", step=None, help=BETA_HELP[key])
        return
    st.number_input(BETA_LABELS[key], key=f"hp_{key}", min_value=0.0, max_value=0.99999,
                    format="%.4f", step=0.001, help=BETA_HELP[key], disabled=disabled)


# ---------------------------------------------------------------------------
# Apply: only what this tab changed
# ---------------------------------------------------------------------------


def pending_changes(values: dict) -> dict:
    """The fields the user changed in this tab (what Apply sends); a new schedule or
    new schedule parameters come with all of that schedule's parameters."""
    changes = {key: value for key, value in values.items()
               if key != "schedule_params" and ui.run_value(f"hp_{key}", value) != value}
    schedule = values["schedule"]
    shown = {param: _parse_param(ui.run_value(schedule_key(schedule, param)))
             for param in values["schedule_params"]}
    if "schedule" in changes or values["schedule_params"] != shown:
        changes["schedule"] = schedule
        changes["schedule_params"] = values["schedule_params"]
    return changes


def _old_and_new(changes: dict) -> dict:
    """``{key: (run's value as shown, new value)}`` for describing pending changes."""
    old = {key: ui.run_value(f"hp_{key}") for key in changes}
    if "schedule_params" in changes:
        schedule = ui.run_value("hp_schedule")
        old["schedule_params"] = {
            param: _parse_param(ui.run_value(schedule_key(schedule, param)))
            for param in make_schedule(schedule).params} if schedule else None
    return {key: (old[key], value) for key, value in changes.items()}


def _apply(trainer: Trainer) -> None:
    # Read the fields now, not at the last render: an edit may have landed since.
    before = trainer.snapshot()
    changes = pending_changes(field_values(before))
    if not changes:
        ui.flash("info", "Nothing to apply: the fields hold the run's current values.")
        return
    described = ui.describe_changes(_old_and_new(changes))
    carry = "optimizer" in changes and st.session_state.get("switch_moments") == "carry"
    ok, _ = ui.run_command(trainer.update, **changes, **({"carry_moments": True} if carry
                                                         else {}))
    if not ok:
        return
    moments = ("; the new optimizer carries the moments that transfer" if carry
               else "; the new optimizer starts fresh (t = 0)" if "optimizer" in changes else "")
    ui.flash("success", f"Applied from the next step: {described}{moments}")


def _discard() -> None:
    for key in [k for k in st.session_state if k.startswith("hp_") and ui.edited(k)]:
        ui.revert(key)
    _slider_from_alpha()


# ---------------------------------------------------------------------------
# Decay preview
# ---------------------------------------------------------------------------


def schedule_preview(values: dict, snapshot: Snapshot) -> None:
    """α from now if the fields' decay started now: over the next minutes at the run's
    speed (or the next 40 epochs/steps before the speed is known), and when it halves."""
    unit = values["schedule_unit"]
    per_minute = units_per_minute(snapshot, unit)
    alpha0 = values["lr"] if "lr" in pending_changes(values) else snapshot.alpha
    horizon = PREVIEW_MINUTES * per_minute if per_minute else PREVIEW_EPOCHS
    try:
        schedule = make_schedule(values["schedule"], **values["schedule_params"])
        t, alphas = preview_over(schedule, alpha0, max(horizon, 1.0))
    except ValueError as error:
        st.error(f"Schedule: {error}")
        return
    alphas = np.maximum(alphas, ALPHA_FLOOR)
    x = t / per_minute if per_minute else t
    title = (f"α over the next {PREVIEW_MINUTES:g} min" if per_minute
             else f"α over the next {PREVIEW_EPOCHS} {unit}")
    fig = charts.new_figure(title, "α", x_title="minutes" if per_minute else unit,
                            height=180)
    fig.add_scatter(x=x, y=alphas, mode="lines", line={"color": "#ff7f0e", "width": 2},
                    name="α", showlegend=False)
    fig.update_layout(margin={"l": 0, "r": 0, "t": 30, "b": 0}, title_font_size=12)
    fig.update_yaxes(exponentformat="power", range=[0, 1.1 * float(alphas.max())])
    st.plotly_chart(fig, key="schedule_preview", config={"displayModeBar": False})
    halved = np.flatnonzero(alphas <= alphas[0] / 2)
    if values["schedule"] != "constant" and per_minute:
        when = (f"halves after about {x[halved[0]]:.1f} min ({t[halved[0]]:,.0f} {unit})"
                if len(halved) else f"does not halve within {PREVIEW_MINUTES:g} min")
        speed = snapshot.steps_per_second or st.session_state.get("last_steps_per_second", 0)
        st.caption(f"At {speed:,.0f} steps/s, α {when}.")
