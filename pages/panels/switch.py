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
    with st.container(border=True):
        carry = st.radio(
            "Moments on switch", list(MOMENT_POLICIES), format_func=MOMENT_POLICIES.get,
            key="switch_moments", horizontal=True,
            help="Fresh: the new optimizer starts with zero moments and t = 0 (its first "
                 "steps are small for momentum, large for RMSprop). Carry: momentum's v ↔ "
                 "Nesterov's v ↔ Adam's first moment, RMSprop's s ↔ Adam's second moment, "
                 "so the step size need not jump.") == "carry"
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
                   f"{ui.OPTIMIZER_NAMES[snapshot.hparams['optimizer']]} (before) and with "
                   f"{ui.OPTIMIZER_NAMES[preview['optimizer']]} "
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
