"""Sampling α = 10^r or β = 1 − 10^r: the course's "appropriate scale" for a random search.

A draw fills the field (α or a β); Apply uses it.
"""

from __future__ import annotations

import math

import streamlit as st

from dlcore.hparams import OPTIMIZER_HPARAMS
from dlcore.sampling import grid_versus_random, sample_beta, sample_log_uniform
from pages.shared import charts


def panel(values: dict, beta_labels: dict, after_alpha_draw) -> None:
    with st.expander("Sample on a log scale", icon=":material/casino:"):
        st.caption("α = 10^r with r uniform in [a, b]: every decade gets the same share "
                   "of draws. The draw fills the α field; Apply uses it.")
        left, right = st.columns(2)
        left.number_input("a (α ≥ 10^a)", key="sample_alpha_low", value=-4.0, step=0.5,
                          format="%g")
        right.number_input("b (α ≤ 10^b)", key="sample_alpha_high", value=0.0, step=0.5,
                           format="%g")
        st.button("Draw α", key="draw_alpha", on_click=_draw_alpha, args=(after_alpha_draw,),
                  icon=":material/casino:")
        st.divider()
        betas = [k for k in OPTIMIZER_HPARAMS[values["optimizer"]] if k != "eps"]
        betas.append("bn_momentum")
        st.caption("β = 1 − 10^r: fine near 1, where 1/(1−β) (the number of steps "
                   "averaged) changes fastest.")
        st.selectbox("Which β", betas, key="sample_beta_key", format_func=beta_labels.get)
        left, right = st.columns(2)
        left.number_input("lowest β", key="sample_beta_low", value=0.9, min_value=0.0,
                          max_value=0.99999, format="%.4f", step=0.01)
        right.number_input("highest β", key="sample_beta_high", value=0.999, min_value=0.0,
                           max_value=0.99999, format="%.4f", step=0.001)
        st.button("Draw β", key="draw_beta", on_click=_draw_beta, args=(beta_labels,),
                  icon=":material/casino:")
        st.divider()
        grid_versus_random_chart()
        for kind, message in st.session_state.get("sample_messages", [])[-4:][::-1]:
            getattr(st, kind)(message)


def grid_versus_random_chart() -> None:
    """The course's first lesson, drawn: 25 trials as a grid try 5 α's, at random 25."""
    result = grid_versus_random(25)
    traces = []
    for i, kind in enumerate(("grid", "random")):
        alphas, epsilons = result[kind]
        traces.append({"type": "scatter", "x": alphas, "y": epsilons, "mode": "markers",
                       "xaxis": f"x{i + 1}", "yaxis": f"y{i + 1}", "showlegend": False,
                       "marker": {"size": 6, "color": "#2e7d32" if i else "#7f7f7f"},
                       "hovertemplate": "α %{x:.2g}, ε %{y:.1e}<extra></extra>"})
    distinct = result["distinct_alphas"]
    layout = {"height": 210, "margin": {"l": 44, "r": 6, "t": 42, "b": 34},
              "title": {"text": f"25 trials: grid tries {distinct['grid']} α's, random "
                                f"{distinct['random']}", "font": {"size": 12}, "x": 0},
              "xaxis1": {"type": "log", "domain": [0, 0.46], "title": {"text": "α (grid)"},
                         "dtick": 1},
              "xaxis2": {"type": "log", "domain": [0.54, 1], "title": {"text": "α (random)"},
                         "dtick": 1},
              "yaxis1": {"type": "log", "title": {"text": "ε"}, "dtick": 2},
              "yaxis2": {"type": "log", "anchor": "x2", "dtick": 2, "showticklabels": False}}
    st.plotly_chart(charts.figure(traces, layout), key="grid_vs_random",
                    config={"displayModeBar": False})
    st.caption("α matters far more than ε: a grid spends 25 trials on 5 values of α (and 5 "
               "of ε, which hardly matters); random draws try 25 of each.")


def _message(kind: str, message: str) -> None:
    st.session_state.setdefault("sample_messages", []).append((kind, message))


def _draw_alpha(after_draw) -> None:
    low, high = st.session_state["sample_alpha_low"], st.session_state["sample_alpha_high"]
    try:
        alpha = sample_log_uniform(10.0 ** low, 10.0 ** high)
    except ValueError as error:
        _message("error", f"α range: {error}")
        return
    st.session_state["hp_lr"] = alpha
    after_draw()
    _message("info", f"Drew α = {alpha:.3g} (r = {math.log10(alpha):.2f}) "
                     f"from [1e{low:g}, 1e{high:g}]. Press Apply to use it.")


def _draw_beta(beta_labels: dict) -> None:
    key = st.session_state["sample_beta_key"]
    low, high = st.session_state["sample_beta_low"], st.session_state["sample_beta_high"]
    try:
        beta = sample_beta(low, high)
    except ValueError as error:
        _message("error", f"β range: {error}")
        return
    st.session_state[f"hp_{key}"] = beta
    _message("info", f"Drew {beta_labels[key]} = {beta:.5f} (averages ≈ "
                     f"{1 / (1 - beta):.0f} steps). Press Apply to use it.")
