"""Checkpoints: the branch tree, the list as on disk, comparisons, rollback, delete, export.

The tree and the table follow the run folder live (a watchdog observer reacts to the
atomic rename of every new checkpoint, from this server or another process). Comparing
evaluates each selected checkpoint in inference mode without touching the run.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Mapping

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dlcore import retention
from dlcore.downsample import downsample
from dlcore.export import history_csv, model_files
from dlcore.retention import RetentionPolicy
from dlcore.trainer import Snapshot, Trainer
from pages.panels import compare_runs
from pages.shared import charts, ui
from pages.shared.disk import checkpoint_folder, checkpoints_on_disk

#: The list follows the disk: the table refreshes this often, training or not.
DISK_REFRESH_SECONDS = 1.0
KIND_STYLES = {
    "initial": ("circle", "#7f7f7f"),
    "manual": ("star", "#1f77b4"),
    "periodic": ("circle-open", "#17becf"),
    "pre-change": ("triangle-down", "#8e44ad"),
    "rollback": ("triangle-left", "#e67e22"),
    "final": ("square", "#2ca02c"),
}
COMPARED_HPARAMS = ("optimizer", "lr", "beta", "beta1", "beta2", "eps", "schedule",
                    "schedule_params", "schedule_unit", "batch_size", "l2", "l1", "keep_prob",
                    "bn_momentum", "eval_every")


def main() -> None:
    trainer, snapshot = ui.page_start("Checkpoints")
    ui.messages(trainer, snapshot)
    ui.live_view(checkpoint_list, trainer, snapshot, run_every=DISK_REFRESH_SECONDS)
    rows, _ = checkpoints_on_disk(snapshot)
    if rows:
        labels = {row["id"]: ui.checkpoint_label(row) for row in rows}
        ids = [row["id"] for row in reversed(rows)]  # newest first
        actions(trainer, snapshot, ids, labels)
        retention_panel(trainer, snapshot)
        export(trainer, snapshot, ids, labels)
        compare(trainer, snapshot, rows, ids, labels)
    compare_runs.panel(trainer, snapshot)  # needs no checkpoint of this run


# ---------------------------------------------------------------------------
# Live: the tree and the table
# ---------------------------------------------------------------------------


def checkpoint_list(snapshot: Snapshot) -> None:
    rows, damaged = checkpoints_on_disk(snapshot)
    st.plotly_chart(branch_tree_figure(rows, snapshot), key="branch_tree")
    st.subheader("All checkpoints", anchor=False)
    folder = checkpoint_folder(snapshot.checkpoint_dir)
    watching = ("watching the folder for changes" if folder.watching
                else f"rescanning (no file watcher: {folder.watch_error})")
    st.caption(f"{len(rows)} checkpoint(s) in `{snapshot.checkpoint_dir}` · {watching} · "
               "\"last good\" marks the newest checkpoint the run can fall back to.")
    st.dataframe(checkpoint_table(rows, snapshot), hide_index=True, key="checkpoint_table",
                 placeholder="–",
                 column_config={
                     "last good": st.column_config.CheckboxColumn(
                         help="The newest checkpoint the run can fall back to (the one "
                              "a divergence rolls back to); it can't be deleted."),
                     "α": st.column_config.NumberColumn(format="%.3g"),
                     "train accuracy": st.column_config.NumberColumn(format="percent"),
                     "dev accuracy": st.column_config.NumberColumn(format="percent"),
                 })
    if damaged:
        st.warning(f"{len(damaged)} file(s) could not be used and are skipped; every other "
                   "checkpoint stays usable:", icon=":material/broken_image:")
        st.dataframe(pd.DataFrame(damaged, columns=["file", "reason"]), hide_index=True,
                     key="damaged_table")


def checkpoint_table(rows: list[Mapping], snapshot: Snapshot) -> pd.DataFrame:
    """The checkpoints, newest first. α and the accuracies are float columns, a missing
    one NaN (a checkpoint between two evaluations has no metrics of its own), which
    ``st.dataframe(placeholder="–")`` shows as "–" (without it, as "None")."""
    table = []
    for row in reversed(rows):
        metrics = row.get("metrics") or {}
        table.append({
            "last good": row["id"] == snapshot.last_good_checkpoint,
            "id": row["id"], "step": row["step"], "branch": row["branch"], "kind": row["kind"],
            "note": row.get("note", ""), "α": row.get("alpha"),
            "optimizer": row["hparams"].get("optimizer"),
            "train accuracy": metrics.get("train_accuracy"),
            "dev accuracy": metrics.get("dev_accuracy"),
            "saved": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"]))
            if row.get("time") else "",
        })
    frame = pd.DataFrame(table, columns=["last good", "id", "step", "branch", "kind", "note",
                                         "α", "optimizer", "train accuracy", "dev accuracy",
                                         "saved"])
    numbers = ["α", "train accuracy", "dev accuracy"]
    frame[numbers] = frame[numbers].astype(float)  # None → NaN: numbers, not objects
    return frame


def hparam_diff(row: Mapping, by_id: Mapping) -> str:
    parent_id = row.get("parent")
    if parent_id is None:
        return "the run's first checkpoint"
    parent = by_id.get(parent_id)
    if parent is None:
        return f"parent {parent_id} is no longer on disk"
    changes = {k: (parent["hparams"].get(k), v) for k, v in row["hparams"].items()
               if parent["hparams"].get(k) != v}
    if not changes:
        return f"same hyperparameters as {parent_id}"
    return f"vs {parent_id}: {ui.describe_changes(changes)}"


#: Text labels in the branch tree take about this many px a character (size 10) …
LABEL_CHAR_PX = 5.5
#: … on a plot at least this wide (the page's main column beside a 380 px sidebar): two
#: labels closer than that on one lane would overlap, so the second goes below the lane,
#: a third is left to the marker's hover.
LABEL_PLOT_PX = 640
LABEL_PLACES = ("top center", "bottom center")


def branch_tree_figure(rows: list[Mapping], snapshot: Snapshot) -> go.Figure:
    """Steps on x, one lane per branch; forks drawn from the parent lane to the new one.

    Every branch is drawn solid: old ones are part of the story (what was tried), the
    current one is thicker and named so on its axis label.
    """
    by_id = {row["id"]: row for row in rows}
    lanes = sorted(set(snapshot.branches) | {row["branch"] for row in rows})
    fig = charts.new_figure("Branch tree", "", height=min(600, 160 + 60 * len(lanes)))
    spans = {}
    for number in lanes:
        branch = snapshot.branches.get(number)
        own_steps = [row["step"] for row in rows if row["branch"] == number]
        fork = branch["fork_step"] if branch else min(own_steps, default=0)
        steps = branch["history"]["step"] if branch else ()
        end = max([fork, *own_steps, int(steps[-1]) if len(steps) else 0])
        if number == snapshot.branch:
            end = max(end, snapshot.step)
        spans[number] = (fork, end)
        current = number == snapshot.branch
        color = charts.BRANCH_COLORS[number % len(charts.BRANCH_COLORS)]
        fig.add_trace(go.Scatter(
            x=[fork, end], y=[number, number], mode="lines",
            line={"color": color, "width": 6 if current else 3}, showlegend=False,
            hovertext=f"branch {number}: steps {fork:,}–{end:,}"
                      + (" (the run now)" if current else ""), hoverinfo="text"))
        if branch and branch["parent_branch"] is not None:
            fig.add_trace(go.Scatter(
                x=[fork, fork], y=[branch["parent_branch"], number], mode="lines",
                line={"color": color, "width": 2, "dash": "dot"}, showlegend=False,
                hovertext=f"branch {number} forked from {branch['from_checkpoint']} "
                          f"at step {fork}", hoverinfo="text"))
    first = min((fork for fork, _ in spans.values()), default=0)
    last = max((end for _, end in spans.values()), default=0)
    places = label_places(rows, LABEL_PLOT_PX / max(1, last - first))
    for kind, (symbol, color) in KIND_STYLES.items():
        group = [row for row in rows if row["kind"] == kind]
        if not group:
            continue
        fig.add_trace(go.Scatter(
            x=[row["step"] for row in group], y=[row["branch"] for row in group],
            mode="markers+text" if len(rows) <= 30 else "markers", name=kind,
            text=[kind if places[row["id"]] else "" for row in group], textfont={"size": 10},
            textposition=[places[row["id"]] or "top center" for row in group],
            cliponaxis=False,  # a label above the top lane stays whole
            marker={"symbol": symbol, "color": color, "size": 12,
                    "line": {"width": 1, "color": "white"}},
            hovertext=[f"{ui.checkpoint_label(row)}<br>α = {ui.format_number(row.get('alpha'))}<br>"
                       f"{hparam_diff(row, by_id)}" for row in group],
            hoverinfo="text"))
    fig.add_trace(go.Scatter(x=[snapshot.step], y=[snapshot.branch], mode="markers",
                             name="the run now", marker={"symbol": "circle-open", "size": 22,
                                                         "color": "black",
                                                         "line": {"width": 2}},
                             hovertext=f"the run now: step {snapshot.step}, branch "
                                       f"{snapshot.branch} ({snapshot.status})",
                             hoverinfo="text"))
    fig.update_yaxes(tickvals=lanes, zeroline=False, showgrid=False,
                     ticktext=[f"branch {n} (now)" if n == snapshot.branch else f"branch {n}"
                               for n in lanes],
                     range=[max(lanes, default=0) + 0.6, min(lanes, default=0) - 0.6])
    fig.update_layout(legend={"title": {"text": "kind"}})
    return fig


def label_places(rows: list[Mapping], px_per_step: float) -> dict[str, str | None]:
    """Per checkpoint id: where its text label goes ("top center", "bottom center"), or
    None where either place would overlap a label already placed on its lane (it keeps
    its marker and hover). Placed in step order, so the earlier checkpoint wins."""
    taken: dict[tuple, list] = {}
    places = {}
    for row in sorted(rows, key=lambda r: (r["branch"], r["step"])):
        centre = row["step"] * px_per_step
        half = LABEL_CHAR_PX * len(row["kind"]) / 2 + 4  # 4 px between two labels
        places[row["id"]] = None
        for place in LABEL_PLACES:
            spans = taken.setdefault((row["branch"], place), [])
            if all(centre + half <= left or centre - half >= right for left, right in spans):
                spans.append((centre - half, centre + half))
                places[row["id"]] = place
                break
    return places


# ---------------------------------------------------------------------------
# Roll back, delete
# ---------------------------------------------------------------------------


def actions(trainer: Trainer, snapshot: Snapshot, ids: list[str], labels: Mapping) -> None:
    with st.container(border=True):
        st.subheader("Roll back or delete", anchor=False)
        target = st.selectbox("Checkpoint", ids, format_func=labels.get, key="action_checkpoint",
                              on_change=lambda: st.session_state.update(confirm_delete=False))
        left, right = st.columns(2)
        with left:
            st.button("Roll back to this checkpoint", type="primary", key="rollback",
                      icon=":material/undo:", on_click=_rollback, args=(trainer,))
            st.caption("Restores its complete state (weights, optimizer moments, data order) "
                       "and continues on a new branch, paused. Nothing is lost: the current "
                       "branch stays in the tree.")
        with right:
            standing = target == snapshot.last_good_checkpoint
            confirmed = st.checkbox(f"Yes, delete {target} from disk", key="confirm_delete",
                                    disabled=standing)
            st.button("Delete checkpoint", key="delete", icon=":material/delete:",
                      disabled=not confirmed or standing, on_click=_delete, args=(trainer,))
            if standing:
                st.caption(f"{target} is the run's last good checkpoint (what it falls back "
                           "to); it can't be deleted.")


def _rollback(trainer: Trainer) -> None:
    checkpoint_id = st.session_state["action_checkpoint"]  # as selected at the click
    ok, branch = ui.run_command(trainer.rollback, checkpoint_id)
    if ok:
        ui.flash("success", f"Rolled back to {checkpoint_id}: the run continues on branch "
                            f"{branch}, paused. Press Start on the training page to go on.")


def _delete(trainer: Trainer) -> None:
    checkpoint_id = st.session_state["action_checkpoint"]
    ok, _ = ui.run_command(trainer.delete_checkpoint, checkpoint_id)
    st.session_state["confirm_delete"] = False
    if ok:
        ui.flash("success", f"Deleted {checkpoint_id}.")


# ---------------------------------------------------------------------------
# Retention: which periodic checkpoints are kept
# ---------------------------------------------------------------------------


def retention_panel(trainer: Trainer, snapshot: Snapshot) -> None:
    """The run's retention policy in a sentence, and its fields (applied at once)."""
    policy = RetentionPolicy.from_dict(snapshot.retention)
    with st.container(border=True):
        st.subheader("Which checkpoints are kept", anchor=False)
        st.markdown(retention.describe(policy))
        removed = sum(len(e["removed"]) for e in snapshot.events if e["kind"] == "retention")
        if removed:
            st.caption(f"{removed} periodic checkpoint(s) removed on this branch's lineage so "
                       "far, each logged as an event.")
        with st.expander("Change the policy", icon=":material/tune:"):
            for name, value in snapshot.retention.items():
                ui.follow(f"retention_{name}", value)
            ui.follow("retention_keep_all", snapshot.retention["keep_last"] is None)
            keep_all = st.toggle("Keep every periodic checkpoint", key="retention_keep_all")
            left, right = st.columns(2)
            if not keep_all:
                if st.session_state.get("retention_keep_last") is None:
                    st.session_state["retention_keep_last"] = 10
                left.number_input("Newest kept", min_value=0, step=1,
                                  key="retention_keep_last",
                                  help=retention.FIELD_HELP["keep_last"])
            right.number_input("Best kept (dev accuracy)", min_value=0, step=1,
                               key="retention_keep_best",
                               help=retention.FIELD_HELP["keep_best"])
            left.number_input("At most one per (seconds)", min_value=0.0, step=10.0,
                              key="retention_min_seconds",
                              help=retention.FIELD_HELP["min_seconds"])
            right.number_input("Also keep every multiple of (steps)", min_value=0, step=1000,
                               key="retention_keep_every_steps",
                               help=retention.FIELD_HELP["keep_every_steps"])
            left.toggle("Log-spaced older ones", key="retention_keep_log_spaced",
                        help=retention.FIELD_HELP["keep_log_spaced"])
            right.toggle("Save each new best", key="retention_save_best",
                         help=retention.FIELD_HELP["save_best"])
            st.button("Apply the policy", key="retention_apply", icon=":material/check:",
                      on_click=_apply_retention, args=(trainer,),
                      help="Thins the periodic checkpoints at once; manual, pre-change, "
                           "rollback and initial ones are never removed.")
        ui.show_flashes(channel="retention")


def _apply_retention(trainer: Trainer) -> None:
    state = st.session_state
    policy = {name: state[f"retention_{name}"] for name in retention.FIELD_HELP}
    if state["retention_keep_all"]:
        policy["keep_last"] = None
    before = trainer.snapshot()
    ok, _ = ui.run_command(trainer.update, retention=policy, channel="retention")
    if ok:
        after = trainer.snapshot()
        removed = len(before.checkpoints) - len(after.checkpoints)
        described = retention.describe(RetentionPolicy.from_dict(policy))
        ui.flash("success", f"Policy applied: {described} {removed} checkpoint(s) removed now.",
                 channel="retention")


# ---------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------


def export(trainer: Trainer, snapshot: Snapshot, ids: list[str], labels: Mapping) -> None:
    """A checkpoint as a standalone model (.npz + JSON card), the history as CSV.

    The files are made only when asked: the model card evaluates the checkpoint."""
    with st.container(border=True):
        st.subheader("Export", anchor=False)
        left, right = st.columns(2)
        with left:
            target = st.selectbox("Checkpoint to export", ids, format_func=labels.get,
                                  key="export_checkpoint")
            st.button("Prepare export", key="prepare_export", icon=":material/package_2:",
                      on_click=_prepare_export, args=(trainer, snapshot.run_id))
            ui.show_flashes(channel="export")
            prepared = st.session_state.get("export_model")
            if prepared and prepared["key"] == (snapshot.run_id, target):
                name = f"panda-{snapshot.run_id}-{target}"
                with st.container(horizontal=True):
                    st.download_button("Download model (.npz)", prepared["npz"],
                                       file_name=f"{name}.npz",
                                       mime="application/octet-stream", key="download_model",
                                       icon=":material/download:", on_click="ignore")
                    st.download_button("Download model card (.json)", prepared["card"],
                                       file_name=f"{name}.json", mime="application/json",
                                       key="download_card", icon=":material/download:",
                                       on_click="ignore")
            st.caption("The .npz holds the weights, BatchNorm's running statistics and the "
                       "input standardisation; the card says how to use them with numpy "
                       "alone, and holds the architecture, hyperparameter history and "
                       "metrics.")
        with right:
            st.button("Prepare history CSV", key="prepare_history",
                      icon=":material/table_view:", on_click=_prepare_history,
                      args=(trainer,))
            prepared = st.session_state.get("export_history")
            if prepared and prepared["run_id"] == snapshot.run_id:
                st.download_button("Download history (.csv)", prepared["csv"],
                                   file_name=f"panda-{snapshot.run_id}-history.csv",
                                   mime="text/csv", key="download_history",
                                   icon=":material/download:", on_click="ignore")
                st.caption(f"As of step {prepared['step']} on branch {prepared['branch']}: "
                           "one row per step of the active lineage, evaluation columns "
                           "filled where one happened.")


def _prepare_export(trainer: Trainer, run_id: str) -> None:
    checkpoint_id = st.session_state["export_checkpoint"]
    ok, files = ui.run_command(model_files, trainer, checkpoint_id, channel="export")
    if ok:
        npz, card = files
        st.session_state["export_model"] = {"key": (run_id, checkpoint_id), "npz": npz,
                                            "card": card}


def _prepare_history(trainer: Trainer) -> None:
    snapshot = trainer.snapshot()
    st.session_state["export_history"] = {"run_id": snapshot.run_id, "step": snapshot.step,
                                          "branch": snapshot.branch,
                                          "csv": history_csv(snapshot)}


# ---------------------------------------------------------------------------
# Compare
# ---------------------------------------------------------------------------


def compare(trainer: Trainer, snapshot: Snapshot, rows: list[Mapping], ids: list[str],
            labels: Mapping) -> None:
    st.subheader("Compare checkpoints", anchor=False)
    chosen = st.multiselect("Checkpoints to compare (two or more)", ids,
                            format_func=labels.get, key="compare_ids", max_selections=6)
    if len(chosen) < 2:
        st.caption("Select at least two checkpoints: their metrics in inference mode, "
                   "hyperparameters, learning curves, confusion matrices and the distance "
                   "between their weights appear here.")
        return
    results = {}
    for checkpoint_id in chosen:
        try:
            results[checkpoint_id] = _inspect(trainer, snapshot.run_id, checkpoint_id)
        except ValueError as error:
            st.error(f"{checkpoint_id} can't be evaluated: {error}")
    if len(results) < 2:
        return
    st.markdown("**Metrics in inference mode** (running BatchNorm statistics)")
    st.dataframe(metrics_table(results), hide_index=True, key="compare_metrics",
                 column_config={
                     "train accuracy": st.column_config.NumberColumn(format="percent"),
                     "dev accuracy": st.column_config.NumberColumn(format="percent"),
                     "train cost": st.column_config.NumberColumn(format="%.4f"),
                     "dev cost": st.column_config.NumberColumn(format="%.4f"),
                 })
    left, right = st.columns(2)
    with left:
        st.markdown("**Hyperparameters** (rows that differ are highlighted)")
        st.dataframe(hparams_table(results), key="compare_hparams",
                     height=36 * (len(COMPARED_HPARAMS) + 2) + 2)
    with right:
        st.markdown("**Distance between their weights**")
        st.dataframe(distance_table(trainer, snapshot.run_id, list(results)), hide_index=True,
                     key="compare_distance",
                     column_config={"‖θa − θb‖": st.column_config.NumberColumn(format="%.4g"),
                                    "relative to ‖θa‖": st.column_config.NumberColumn(
                                        format="percent")})
    left, right = st.columns(2)
    left.plotly_chart(lineage_figure(snapshot, results, "cost"), key="compare_cost")
    right.plotly_chart(lineage_figure(snapshot, results, "dev_accuracy"),
                       key="compare_accuracy")
    part = st.segmented_control("Confusion matrices on", ["dev", "train"], default="dev",
                                key="compare_part") or "dev"
    columns = st.columns(min(len(results), 3))
    names = snapshot.dataset["class_names"]
    for i, (checkpoint_id, result) in enumerate(results.items()):
        column = columns[i % len(columns)]
        if result[f"confusion_{part}"] is None:  # too many classes for a matrix
            column.markdown(f"**{checkpoint_id} ({part}): the most frequent confusions** "
                            f"({len(names):,} classes: a matrix would not be readable)")
            column.dataframe(top_confusions_table(result[f"top_confusions_{part}"], names),
                             hide_index=True, key=f"confusion_{checkpoint_id}")
            continue
        column.plotly_chart(
            confusion_figure(result[f"confusion_{part}"], names, f"{checkpoint_id} ({part})"),
            key=f"confusion_{checkpoint_id}")


def _inspect(trainer: Trainer, run_id: str, checkpoint_id: str) -> dict:
    """inspect_checkpoint, remembered for this session (a checkpoint never changes)."""
    cache = st.session_state.setdefault("inspected", {})
    key = (run_id, checkpoint_id)
    if key not in cache:
        cache[key] = trainer.inspect_checkpoint(checkpoint_id)
    return cache[key]


def metrics_table(results: Mapping) -> pd.DataFrame:
    return pd.DataFrame([{
        "id": checkpoint_id, "step": r["info"]["step"], "branch": r["info"]["branch"],
        "train accuracy": r["train_accuracy"], "dev accuracy": r["dev_accuracy"],
        "train cost": r["train_cost"], "dev cost": r["dev_cost"],
    } for checkpoint_id, r in results.items()])


def hparams_table(results: Mapping):
    rows = {}
    for name in COMPARED_HPARAMS:
        rows[ui.HPARAM_LABELS.get(name, name)] = {
            checkpoint_id: ui.format_number(r["info"]["hparams"].get(name))
            for checkpoint_id, r in results.items()}
    rows["α at save"] = {checkpoint_id: ui.format_number(r["info"].get("alpha"))
                         for checkpoint_id, r in results.items()}
    table = pd.DataFrame.from_dict(rows, orient="index")

    def highlight(row):
        differs = len(set(row)) > 1
        return ["background-color: rgba(255, 193, 7, 0.35)" if differs else ""] * len(row)

    return table.style.apply(highlight, axis=1)


def distance_table(trainer: Trainer, run_id: str, ids: list[str]) -> pd.DataFrame:
    cache = st.session_state.setdefault("distances", {})
    table = []
    for a, b in itertools.combinations(ids, 2):
        key = (run_id, a, b)
        if key not in cache:
            try:
                cache[key] = trainer.weight_distance(a, b)
            except ValueError as error:
                st.error(f"Distance {a} ↔ {b}: {error}")
                continue
        distance = cache[key]
        table.append({"a": a, "b": b, "‖θa − θb‖": distance["total"],
                      "relative to ‖θa‖": distance["relative"]})
    return pd.DataFrame(table)


def lineage_figure(snapshot: Snapshot, results: Mapping, column: str) -> go.Figure:
    """Each checkpoint's lineage (its branch's history up to its step), overlaid."""
    cost = column == "cost"
    fig = charts.new_figure("Learning curves of their lineages" if cost
                            else "Dev accuracy of their lineages",
                            "J (smoothed)" if cost else "dev accuracy", height=340)
    for i, (checkpoint_id, result) in enumerate(results.items()):
        info = result["info"]
        branch = snapshot.branches.get(info["branch"])
        if branch is None:
            continue
        history = branch["history"]
        steps = history["step" if cost else "eval_step"]
        n = charts.index_until(steps, info["step"])
        if n == 0:
            continue
        values = history["cost_smoothed" if cost else column][:n]
        xs, ys = downsample(steps[:n], values, charts.MAX_POINTS)
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=checkpoint_id,
                                 line={"width": 2,
                                       "color": charts.BRANCH_COLORS[i % len(
                                           charts.BRANCH_COLORS)]}))
        fig.add_trace(go.Scatter(x=[info["step"]], y=[ys[-1]], mode="markers",
                                 showlegend=False, hoverinfo="skip",
                                 marker={"size": 9, "color": charts.BRANCH_COLORS[
                                     i % len(charts.BRANCH_COLORS)]}))
    if not cost:
        fig.update_yaxes(tickformat=".0%")
    fig.update_layout(legend={"orientation": "h", "yanchor": "top", "y": -0.22, "x": 0,
                              "xanchor": "left"}, margin={"b": 60})
    return fig


def top_confusions_table(top, class_names) -> pd.DataFrame:
    return pd.DataFrame([{"true class": class_names[t], "predicted": class_names[p],
                          "count": n} for t, p, n in top],
                        columns=["true class", "predicted", "count"])


def confusion_figure(matrix, class_names, title: str) -> go.Figure:
    fig = charts.new_figure(title, "true class", x_title="predicted class", height=360)
    names = list(class_names)
    fig.add_trace(go.Heatmap(z=matrix, x=names, y=names, colorscale="Blues", showscale=False,
                             texttemplate="%{z}", textfont={"size": 10},
                             hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category")
    return fig


if __name__ == "__main__":
    main()
