"""Panda: babysit one neural network while it trains. ``streamlit run app.py``.

The live training page, as a table of contents: each panel is a module of
``pages/panels`` (the other pages are ``pages/*.py``). Everything reads
``Trainer.snapshot()`` and sends commands; dlcore does the math.
"""

from __future__ import annotations

import streamlit as st

from pages.panels import assistant, controls, hyperparameters, live, new_run
from pages.shared import ui


def main() -> None:
    trainer, snapshot = ui.page_start("Training", "Panda: babysit one network while it trains",
                                      sidebar_width=380)
    with st.sidebar:
        hyperparameters.panel(trainer, snapshot)  # α, optimizer, decay, …; one Apply
    controls.panel(trainer, snapshot)  # Start / Pause / Step, checkpoint, speed limit
    ui.messages(trainer, snapshot)  # what the last command said; divergence and errors
    assistant.panel(trainer, snapshot)  # suggestions and the autopilot
    live.panel(trainer, snapshot)  # tiles and learning curves
    new_run.panel()  # a new run, or a saved one reopened


if __name__ == "__main__":
    main()
