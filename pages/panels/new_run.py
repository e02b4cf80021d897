"""A new run (data set, architecture, seed, periodic checkpoints) or a saved one reopened.

Either replaces the server's one Trainer (``pages.shared.engine``): every tab switches
to it on its next rerun; the run left behind stays on disk.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import streamlit as st

from dlcore.trainer import RunConfig, list_runs
from pages.shared import ui
from pages.shared.engine import holder

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


def panel() -> None:
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
            source = f" (data from {name})" if state["new_dataset"] == "upload" else ""
            _switch_run(lambda: holder().new_run(config), "No new run was created", source)
    except (ValueError, MemoryError) as error:  # a bad hidden-size text or a missing file
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


def _switch_run(make, failure: str, source: str = "") -> None:
    """Make a new current run; on failure say why, the current run stays as it was.

    ``source`` names an uploaded file: the run keeps its copy as ``dataset.<suffix>``,
    so this message is where the user sees which file it was."""
    try:
        trainer = make()
    except (ValueError, OSError, MemoryError) as error:
        ui.flash("error", f"{failure}; the current run is unchanged. {error}",
                 channel="new_run")
        return
    ui.forget_followed("hp_")  # every field follows the new run
    ui.flash("success", f"Now on run {trainer.run_id}{source} at step "
                        f"{trainer.snapshot().step}, paused: press Start to train.")
