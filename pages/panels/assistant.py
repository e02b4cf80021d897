"""The babysitter's assistant: suggestions read from the run's curves, each with its
evidence and one click to apply (and undo); the autopilot applies them itself.

The rules are ``dlcore.assistant``'s; this panel shows them, live while training runs.
"""

from __future__ import annotations

import streamlit as st

from dlcore.assistant import Suggestion, suggest
from dlcore.trainer import Snapshot, Trainer
from pages.shared import ui

#: Autopilot events listed on the page (the newest).
AUTOPILOT_LOG_LENGTH = 8
#: The assistant's suggestions follow evaluations, not steps: refreshed less often than
#: the charts, so that watching costs the training thread less (bench/RESULTS.md).
ASSISTANT_REFRESH_SECONDS = 5.0


def panel(trainer: Trainer, snapshot: Snapshot) -> None:
    """Suggestions read from the run's curves, each with its evidence and one click to
    apply; the autopilot applies them itself. Live while training runs."""
    with st.container(border=True, key="assistant"):
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown("**:material/support_agent: Assistant**", width="content")
            ui.follow("autopilot", snapshot.autopilot)
            st.toggle("Autopilot", key="autopilot", on_change=_set_autopilot, args=(trainer,),
                      help="Let the assistant apply its first suggestion itself at each "
                           "evaluation. Each one is logged as an event, after a pre-change "
                           "checkpoint you can roll back to.")
        ui.live_view(lambda s: assistant_view(trainer, s), trainer, snapshot,
                     while_running=ASSISTANT_REFRESH_SECONDS)


def _set_autopilot(trainer: Trainer) -> None:
    on = st.session_state["autopilot"]
    ok, _ = ui.run_command(trainer.update, autopilot=on, channel="assistant")
    if not ok:
        ui.revert("autopilot")
        return
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
        pause = "pause" in suggestion.action
        with st.container(horizontal=True, vertical_alignment="center"):
            with st.container():
                st.markdown(f"**{suggestion.title}**")
                st.caption(suggestion.evidence)
            # "Stop" advice is a pause: nothing to apply while the run is not training.
            st.button("Pause" if pause else "Apply", key=f"assistant_apply_{i}_{suggestion.rule}",
                      on_click=_apply_suggestion, args=(trainer, suggestion),
                      icon=":material/pause:" if pause else ":material/auto_fix_high:",
                      width="content", disabled=pause and snapshot.status != "running",
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
    st.session_state.pop("assistant_undo_point", None)
    if "update" in action:
        ok, _ = ui.run_command(trainer.update, **action["update"], channel="assistant")
        if not ok:
            return
        after = trainer.snapshot()
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
