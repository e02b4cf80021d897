"""A new run (data set, architecture, seed, periodic checkpoints) or a saved one reopened.

Either replaces the server's one Trainer (``pages.shared.engine``): every tab switches
to it on its next rerun; the run left behind stays on disk.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import streamlit as st

from dlcore.data import list_data_files
from dlcore.layers import ACTIVATIONS
from dlcore.memory import format_size
from dlcore.network import BN_POSITIONS, INITS
from dlcore.trainer import RunConfig, list_runs
from pages.shared import ui
from pages.shared.engine import data_dir, holder

DATASETS = {"mnist": "MNIST (5,000 real 28×28 digits)", "digits": "Digits (1,797 8×8 images)",
            "spirals": "Spirals (2-D)", "blobs": "Blobs (2-D)",
            "folder": "A file in the data folder", "upload": "Upload a file"}
#: The hidden layers a new run starts with, per data set (any other: the first).
HIDDEN = {"mnist": "128, 64", "spirals": "16, 16", "blobs": "16"}
DEFAULT_HIDDEN = "64, 32"
FILE_TYPES = ["csv", "tsv", "parquet", "npz"]
UPLOAD_LIMIT_MB = 50  # .streamlit/config.toml's server.maxUploadSize
FILE_HELP = ("CSV/TSV: a header row; the label column is named label, class or y (else the "
             "last column), integers or names; every other column is a number. Parquet: the "
             "same as columns. NPZ: arrays X (examples × features, images are flattened) and "
             "y, or Keras' x_train, y_train, x_test, y_test (the test part is the dev set). "
             "At least 10 examples and 2 per class.")
ACTIVATION_NOTES = {
    "relu": "max(0, z): the default; He initialisation suits it.",
    "leaky_relu": "ReLU with a small slope below 0, so no unit dies.",
    "tanh": "Saturates at ±1 (gradients vanish in deep nets); Xavier or Glorot suits it.",
    "elu": "Smooth below 0 (α = 1), mean activations nearer 0; He suits it.",
    "selu": "Scaled ELU for self-normalising nets: meant without BatchNorm, with Xavier "
            "(LeCun) initialisation.",
    "sigmoid": "A poor hidden activation: it saturates and is not centred at 0 — watch the "
               "update-to-weight ratio collapse.",
}


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
                       key="new_dataset", on_change=_hidden_for_dataset)
    if dataset == "folder":
        data_file_choice()
    elif dataset == "upload":
        st.file_uploader("Data file", type=FILE_TYPES, key="new_upload", help=FILE_HELP)
        st.caption(f"Uploads up to {UPLOAD_LIMIT_MB} MB. A bigger file: put it in the data "
                   f"folder `{data_dir()}` (set `PANDA_DATA_DIR` to use another) and choose "
                   "\"A file in the data folder\": it is read where it is.")
    architecture_fields()
    st.button("Create run", type="primary", key="create_run", on_click=_create_run,
              icon=":material/rocket_launch:")


def data_file_choice() -> None:
    files = list_data_files(data_dir())
    if not files:
        st.info(f"No data files in `{data_dir()}` yet: put CSV, TSV, Parquet or NPZ files "
                "there (or set `PANDA_DATA_DIR` to a folder that has them) and reopen this "
                "form.", icon=":material/folder_open:")
        return
    by_name = {f.name: f for f in files}
    st.selectbox("Data file", list(by_name), key="new_data_file", help=FILE_HELP,
                 format_func=lambda n: f"{n} ({format_size(by_name[n].size_bytes)})")
    st.caption(f"From `{data_dir()}`: read where it is, never copied, and checked on every "
               "reopen (the run refuses a file that changed).")


def architecture_fields() -> None:
    state = st.session_state
    state.setdefault("new_hidden", HIDDEN.get(state.get("new_dataset"), DEFAULT_HIDDEN))
    columns = st.columns(4)
    columns[0].text_input("Hidden layer sizes", key="new_hidden",
                          help="Units per hidden layer, input to output, e.g. \"64, 32\".")
    activation = columns[1].selectbox("Activation", list(ACTIVATIONS), key="new_activation")
    init = columns[2].selectbox("Initialization", list(INITS), key="new_init",
                                help=" · ".join(INITS.values()))
    columns[3].selectbox("Precision", ["float32", "float64"], key="new_dtype",
                         help="float32 halves the memory and runs faster; float64 for "
                              "checking numbers exactly.")
    st.caption(f"**{activation}**: {ACTIVATION_NOTES[activation]} **{init}**: {INITS[init]}.")
    columns = st.columns(4)
    batchnorm = columns[0].toggle("BatchNorm", value=True, key="new_batchnorm")
    columns[1].selectbox("BatchNorm placement", list(BN_POSITIONS), key="new_bn_position",
                         disabled=not batchnorm, help=" · ".join(BN_POSITIONS.values()))
    columns[2].number_input("Seed", min_value=0, value=0, step=1, key="new_seed")
    columns[3].number_input("Checkpoint every (steps)", min_value=0, value=1000, step=100,
                            key="new_checkpoint_every", help="0 = only by hand and before "
                            "every change. At most one per 30 s; older ones are thinned "
                            "(the Checkpoints page shows the policy).")


def _hidden_for_dataset() -> None:
    st.session_state["new_hidden"] = HIDDEN.get(st.session_state["new_dataset"],
                                                DEFAULT_HIDDEN)


def _create_run() -> None:
    state = st.session_state
    try:
        hidden = parse_hidden_sizes(state["new_hidden"])  # before anything is touched
        with tempfile.TemporaryDirectory(prefix="panda-upload-") as folder:
            dataset, name, copy = state["new_dataset"], "", True
            if dataset == "upload":
                upload = state.get("new_upload")
                if upload is None:
                    raise ValueError("Choose a file to upload first.")
                name = Path(upload.name).name
                path = Path(folder) / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "data")
                path.write_bytes(upload.getvalue())
                dataset = str(path)
            elif dataset == "folder":
                chosen = state.get("new_data_file")
                if not chosen:
                    raise ValueError(f"Put a data file in {data_dir()} and choose it first.")
                dataset, name, copy = str(Path(data_dir()) / chosen), chosen, False
            config = RunConfig(dataset=dataset, dataset_name=name, copy_data=copy,
                               hidden=hidden, activation=state["new_activation"],
                               batchnorm=state["new_batchnorm"],
                               bn_position=state.get("new_bn_position", "before"),
                               init=state["new_init"], seed=int(state["new_seed"]),
                               dtype=state["new_dtype"],
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
