"""Run controls: Start / Pause, Step ×1 / ×10 / ×100, checkpoint now, the speed limit."""

from __future__ import annotations

import streamlit as st

from dlcore.trainer import Snapshot, Trainer
from pages.shared import ui

SPEED_LIMITS = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]


def panel(trainer: Trainer, snapshot: Snapshot) -> None:
    running = snapshot.status == "running"
    ui.follow("speed_limit", snapshot.speed_limit or 0)
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


def _set_speed_limit(trainer: Trainer) -> None:
    limit = st.session_state["speed_limit"]
    ok, _ = ui.run_command(trainer.update, speed_limit=limit or None)
    if not ok:
        ui.revert("speed_limit")
