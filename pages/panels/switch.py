"""An optimizer switch: fresh or carried moments, and a preview of the step it causes.

Shown when the optimizer field differs from the run's optimizer. The preview takes the
next step on two sandbox copies of the run (the optimizer now, and the new one) on the
same mini-batch: the effective step ‖ΔW‖/‖W‖ before and after the switch.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dlcore.hparams import OPTIMIZER_HPARAMS
from dlcore.lookahead import switch_preview
from dlcore.trainer import Snapshot, Trainer
from pages.shared import ui

MOMENT_POLICIES = {"fresh": "fresh (t = 0)", "carry": "carry what transfers"}


def panel(trainer: Trainer, snapshot: Snapshot, values: dict) -> None:
    if values["optimizer"] == snapshot.hparams["optimizer"]:
        return
    with st.container(border=True, key="switch"):
        carry = st.radio(
            "Moments on switch", list(MOMENT_POLICIES), format_func=MOMENT_POLICIES.get,
            key="switch_moments", horizontal=True,
            help="Fresh: the new optimizer starts with zero moments and t = 0 (its first "
                 "steps are small for momentum, large for RMSprop). Carry: momentum's v ↔ "
                 "Nesterov's v ↔ Adam's first moment, RMSprop's s ↔ Adam's second moment, "
                 "so the step size need not jump.") == "carry"
        changes = switch_changes(values, snapshot)
        request = (snapshot.run_id, snapshot.branch, repr(changes), carry)
        st.button("Preview the switch", key="preview_switch", icon=":material/preview:",
                  on_click=_preview_switch, args=(trainer, changes, carry, request),
                  help="Take the next step on two sandbox copies of the run, with the "
                       "optimizer now and with the new one: the live run is not touched.")
        ui.show_flashes(channel="switch")
        preview = st.session_state.get("switch_preview")
        if preview is None:
            return
        # Live, so that "the run is N steps further" follows the run as it trains.
        ui.live_view(lambda s: st.caption(preview_status(preview, request, s)), trainer,
                     snapshot)
        st.table(switch_table(preview["result"]), hide_index=True)
        st.caption(f"Effective step ‖ΔW‖/‖W‖ per layer on the same mini-batch: the next step "
                   f"with {ui.OPTIMIZER_NAMES[preview['before']]} (now) and with "
                   f"{ui.OPTIMIZER_NAMES[preview['optimizer']]} "
                   f"({MOMENT_POLICIES[preview['policy']]}) after; jump = after / now.")


def preview_status(preview: dict, request: tuple, snapshot: Snapshot) -> str:
    """Where the preview was taken and whether it still answers the fields' question.

    A preview is stale only when the settings (or the run, or its branch) differ: a run
    that trained on since is the same question, a few steps later."""
    if preview["request"][:2] != request[:2]:
        return (f"Previewed at step {preview['step']:,} on another run or branch; "
                "preview again for this one.")
    if preview["request"] != request:
        return (f"Previewed at step {preview['step']:,} for other settings than the fields "
                "hold now: preview again.")
    moved = snapshot.step - preview["step"]
    further = ("the run is still there" if moved == 0 else
               f"the run is {moved:,} step{'s' if moved != 1 else ''} further")
    return f"Previewed at step {preview['step']:,}; {further}."


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
    info = state[1]["info"]  # the exported state's step and optimizer
    st.session_state["switch_preview"] = {"request": request, "result": result,
                                          "step": int(info["step"]),
                                          "before": info["hparams"]["optimizer"],
                                          "optimizer": changes["optimizer"],
                                          "policy": "carry" if carry else "fresh"}


def switch_table(result) -> pd.DataFrame:
    """One row per layer, narrow enough for the sidebar: "1.2e-3", "×3.1"."""
    before, after = result["before"], result["after"]
    rows = []
    for layer, now in before.items():
        new = after.get(layer)
        jump = new / now if now and new is not None else None
        rows.append({"layer": layer, "now": _ratio(now), "after": _ratio(new),
                     "jump": "–" if jump is None else f"×{jump:.2g}"})
    return pd.DataFrame(rows, columns=["layer", "now", "after", "jump"])


def _ratio(value) -> str:
    return "–" if value is None else f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e")
