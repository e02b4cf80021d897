"""AppTest of the BatchNorm and Checkpoints pages."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

BATCHNORM = "pages/1_BatchNorm.py"
CHECKPOINTS = "pages/2_Checkpoints.py"


def trained(panda, steps: int = 100):
    """The default run after ``steps`` steps (evaluated every 50)."""
    panda.run()
    panda.trainer().step(steps)
    return panda.wait_for(lambda s: s.step == steps and s.status == "paused")


def dataframe(at, column: str):
    """The table with this column (st.dataframe keeps no key without a selection)."""
    return next(df.value for df in at.dataframe if column in df.value.columns)


def test_batchnorm_page_shows_heatmaps_per_unit_and_step(panda):
    trained(panda)
    at = panda.run(BATCHNORM)
    charts = panda.charts(at)
    heatmap = charts["bn_running_mean_heatmap"]
    assert "bn1" in heatmap["layout"]["title"]["text"]
    trace = heatmap["data"][0]
    assert trace["type"] == "heatmap"
    assert panda.values(trace["x"]) == [0, 50, 100]  # one column per evaluation
    units = len(panda.trainer().snapshot().bn["bn1"]["gamma"])
    assert len(panda.values(trace["z"])) == units  # one row per unit of bn1
    assert {"bn_running_var_heatmap", "bn_units_mean", "bn_error_var", "bn_gamma_beta",
            "bn_accuracy_modes"} <= set(charts)
    names = {(t["legendgroup"], t["name"]) for t in charts["bn_units_mean"]["data"]}
    assert {("unit 0", "running"), ("unit 0", "mini-batch"),
            ("unit 0", "population (now)")} <= names
    error = next(t for t in charts["bn_error_var"]["data"] if t["name"].startswith("error"))
    assert panda.values(error["y"]) == panda.trainer().snapshot().bn["bn1"]["var_error"].tolist()
    assert any("test time" in m.value for m in at.markdown)


BATCHNORM_CHARTS = ["bn_accuracy_modes", "bn_gamma_beta", "bn_running_mean_heatmap",
                    "bn_running_var_heatmap", "bn_units_mean", "bn_units_var", "bn_error_mean",
                    "bn_error_var"]


def test_batchnorm_page_always_draws_the_same_eight_charts(panda):
    """Same elements in the same order whatever the data: a refresh replaces each chart
    in place (nothing appears, disappears or moves)."""
    panda.run()
    at = panda.run(BATCHNORM)  # step 0: one evaluation
    assert [c.key for c in at.get("plotly_chart")] == BATCHNORM_CHARTS
    at.multiselect(key="bn_units_bn1").set_value([]).run()  # no unit selected
    assert [c.key for c in at.get("plotly_chart")] == BATCHNORM_CHARTS
    note = panda.charts(at)["bn_units_mean"]["layout"]["annotations"][0]["text"]
    assert note == "Select units above"
    trained(panda, 100)
    at.run()
    assert [c.key for c in at.get("plotly_chart")] == BATCHNORM_CHARTS


def page_module(path: str):
    """A page as a module (its figure and table functions), without running it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(Path(path).stem.lower(), path)
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    return page


def batchnorm_page():
    return page_module(BATCHNORM)


def test_batchnorm_page_shows_the_training_pages_windows(panda):
    from pages.shared.charts import WINDOWS

    trained(panda, 1000)  # 21 evaluations, every 50 steps
    at = panda.run(BATCHNORM)
    assert at.segmented_control(key="bn_window").options == list(WINDOWS)
    lines = panda.charts(at)["bn_units_mean"]["data"]
    batch = next(t for t in lines if t["name"] == "mini-batch")
    # a short window: each mini-batch visible
    assert batch["legendgroup"] == "unit 0" and batch["mode"] == "markers"
    at.segmented_control(key="bn_window").set_value("Last 500").run()
    charts = panda.charts(at)
    last_500 = list(range(550, 1001, 50))
    assert panda.values(charts["bn_running_mean_heatmap"]["data"][0]["x"]) == last_500
    running = next(t for t in charts["bn_units_mean"]["data"] if t["name"] == "running")
    assert panda.values(running["x"]) == last_500
    assert panda.values(charts["bn_accuracy_modes"]["data"][0]["x"]) == last_500


def test_batchnorm_long_windows_smooth_mini_batch_statistics_and_cap_heatmaps(panda):
    page = batchnorm_page()
    stats = trained(panda, 1000).bn["bn1"]
    steps = list(stats["history"]["eval_step"])
    page.MAX_BATCH_MARKERS, page.MAX_HEATMAP_COLUMNS = 10, 8  # as if 21 were many
    lines = page.unit_lines_figure(stats, "bn1", [0], "mean", "μ", None)
    assert [t.name for t in lines.data] == ["running", "mini-batch, smoothed",
                                            "population (now)"]
    assert lines.data[1].mode == "lines"
    heatmap = page.running_heatmap(stats["history"], "bn1", "running_var", "σ²", "Viridis",
                                   None).data[0]
    assert list(heatmap.x) == steps[::-3][::-1]  # every 3rd, back from the newest
    assert len(heatmap.z[0]) == len(heatmap.x) == 7


def test_batchnorm_page_follows_the_chosen_layer(panda):
    trained(panda, 50)
    at = panda.run(BATCHNORM)
    at.segmented_control(key="bn_layer").set_value("bn2").run()
    heatmap = panda.charts(at)["bn_running_var_heatmap"]
    assert "bn2" in heatmap["layout"]["title"]["text"]
    units = len(panda.trainer().snapshot().bn["bn2"]["gamma"])
    assert len(panda.values(heatmap["data"][0]["z"])) == units


def test_batchnorm_page_says_so_when_the_run_has_none(panda):
    at = panda.run()
    at.toggle(key="new_batchnorm").set_value(False)
    at.button(key="create_run").click().run()
    at = panda.run(BATCHNORM)
    assert any("no BatchNorm" in i.value for i in at.info)
    assert not panda.charts(at)


def test_checkpoints_page_lists_compares_and_rolls_back(panda):
    trained(panda)
    trainer = panda.trainer()
    manual = trainer.checkpoint("after 100 steps")
    at = panda.run(CHECKPOINTS)
    table = dataframe(at, "kind")
    listed = [c["id"] for c in reversed(trainer.snapshot().checkpoints)]  # newest first
    assert list(table["id"]) == listed and listed[0] == manual and listed[-1] == "ckpt-000000"
    assert list(table["note"])[0] == "after 100 steps"
    # the run kept its best dev accuracy so far by itself (the retention policy's save_best)
    assert any(note.startswith("best dev accuracy so far") for note in table["note"])
    tree = panda.charts(at)["branch_tree"]
    assert {t.get("name") for t in tree["data"]} >= {"initial", "manual"}

    at.multiselect(key="compare_ids").set_value([manual, "ckpt-000000"]).run()
    metrics = dataframe(at, "train cost")
    assert list(metrics["id"]) == [manual, "ckpt-000000"]
    assert metrics["dev accuracy"].iloc[0] > metrics["dev accuracy"].iloc[1]
    assert {"compare_cost", "compare_accuracy", f"confusion_{manual}"} <= set(panda.charts(at))
    distance = dataframe(at, "‖θa − θb‖")
    assert distance["‖θa − θb‖"].iloc[0] > 0

    at.selectbox(key="action_checkpoint").set_value("ckpt-000000")
    at.button(key="rollback").click().run()
    assert any("branch 1" in s.value for s in at.success)
    snapshot = trainer.snapshot()
    assert snapshot.branch == 1 and snapshot.step == 0
    tree = panda.charts(at)["branch_tree"]
    assert tree["layout"]["yaxis"]["ticktext"] == ["branch 0", "branch 1 (now)"]


def checkpoints_page():
    return page_module(CHECKPOINTS)


def test_branch_tree_draws_old_branches_solid_and_keeps_labels_apart(panda):
    """Two pre-change checkpoints 20 steps apart on a 4,000-step lane: their labels would
    overlap, so the second goes below the lane; a third that close keeps only its marker."""
    page = checkpoints_page()
    trained(panda, 10)
    snapshot = panda.trainer().snapshot()
    rows = [{"id": f"ckpt-{i:06d}", "step": step, "branch": 0, "kind": kind, "note": "",
             "hparams": {}, "alpha": 1e-3}
            for i, (step, kind) in enumerate([(0, "initial"), (2010, "pre-change"),
                                              (2030, "pre-change"), (2040, "manual"),
                                              (4020, "manual")])]
    places = page.label_places(rows, page.LABEL_PLOT_PX / 4020)
    assert places == {"ckpt-000000": "top center", "ckpt-000001": "top center",
                      "ckpt-000002": "bottom center", "ckpt-000003": None,
                      "ckpt-000004": "top center"}
    tree = page.branch_tree_figure(rows, snapshot)
    lanes = [t for t in tree.data if t.mode == "lines" and t.line.dash is None]
    assert lanes and all(t.opacity in (None, 1) and t.line.width >= 3 for t in lanes)
    manual = next(t for t in tree.data if t.name == "manual")
    assert list(manual.text) == ["", "manual"] and manual.cliponaxis is False


def test_checkpoint_table_keeps_missing_numbers_as_numbers(panda):
    """A checkpoint between two evaluations has no accuracy: NaN in a float column (which
    st.dataframe can show as "–"), never the object None."""
    trained(panda, 10)
    trainer = panda.trainer()
    trainer.step(7)
    panda.wait_for(lambda s: s.step == 17 and s.status == "paused")
    trainer.checkpoint("between evaluations")
    snapshot = trainer.snapshot()
    table = checkpoints_page().checkpoint_table(list(snapshot.checkpoints), snapshot)
    assert all(table[c].dtype == float for c in ("α", "train accuracy", "dev accuracy"))
    newest = table.iloc[0]
    assert newest["note"] == "between evaluations" and newest["dev accuracy"] != newest[
        "dev accuracy"]  # NaN


def test_delete_asks_for_confirmation_and_spares_the_current_checkpoint(panda):
    trained(panda, 10)
    trainer = panda.trainer()
    first = trainer.checkpoint("first")
    trainer.checkpoint("second")  # the run now stands on this one
    at = panda.run(CHECKPOINTS)
    at.selectbox(key="action_checkpoint").set_value(first).run()
    assert at.button(key="delete").disabled
    at.checkbox(key="confirm_delete").check().run()
    at.button(key="delete").click().run()
    assert first not in [c["id"] for c in trainer.snapshot().checkpoints]
    assert first not in list(dataframe(at, "kind")["id"])
    at.selectbox(key="action_checkpoint").set_value(trainer.snapshot().last_good_checkpoint).run()
    assert at.checkbox(key="confirm_delete").disabled and at.button(key="delete").disabled


def test_the_list_follows_the_disk(panda):
    trained(panda, 10)
    trainer = panda.trainer()
    extra = trainer.checkpoint("to be removed by someone else")
    at = panda.run(CHECKPOINTS)
    assert extra in list(dataframe(at, "kind")["id"])
    run_dir = Path(trainer.snapshot().checkpoint_dir)
    # Another process: removes one checkpoint, copies another under a new name, drops junk.
    (run_dir / f"{extra}.npz").unlink()
    shutil.copy(run_dir / "ckpt-000000.npz", run_dir / "ckpt-000090.npz")
    (run_dir / "ckpt-000091.npz").write_bytes(b"not a checkpoint")
    (run_dir / ".ckpt-000092.npz.tmp-1").write_bytes(b"half written")
    at.run()
    ids = list(dataframe(at, "kind")["id"])
    assert extra not in ids and "ckpt-000000" in ids
    damaged = dataframe(at, "reason")
    assert set(damaged["file"]) == {"ckpt-000090.npz", "ckpt-000091.npz"}
    assert all(damaged["reason"].str.len() > 0)


def test_pages_show_divergence_too(panda):
    panda.run()
    trainer = panda.trainer()
    trainer.update(optimizer="gd", lr=100.0)
    trainer.step(50)
    panda.wait_for(lambda s: s.status == "diverged")
    for page in (BATCHNORM, CHECKPOINTS):
        at = panda.run(page)
        assert any("diverged at step" in e.value for e in at.error)


def test_export_prepares_the_model_card_and_history_only_when_asked(panda):
    trained(panda, 20)
    manual = panda.trainer().checkpoint("to export")
    at = panda.run(CHECKPOINTS)
    assert not at.get("download_button")  # nothing computed yet
    assert at.selectbox(key="export_checkpoint").value == manual
    at.button(key="prepare_export").click().run()
    assert [b.label for b in at.get("download_button")] == [
        "Download model (.npz)", "Download model card (.json)"]
    card = json.loads(at.session_state["export_model"]["card"])
    assert card["checkpoint"] == manual and card["step"] == 20
    at.selectbox(key="export_checkpoint").set_value("ckpt-000000").run()
    assert not at.get("download_button")  # prepared for another checkpoint
    at.button(key="prepare_history").click().run()
    assert [b.label for b in at.get("download_button")] == ["Download history (.csv)"]
    rows = list(csv.DictReader(io.StringIO(at.session_state["export_history"]["csv"])))
    assert len(rows) == 20 and rows[-1]["step"] == "20"


def test_the_retention_policy_is_shown_and_settable_on_the_checkpoints_page(panda):
    from dlcore.trainer import RunConfig
    from pages.shared.engine import holder

    panda.run()
    trainer = holder().new_run(RunConfig(dataset="blobs", hidden=(8,), checkpoint_every=10,
                                         retention={"keep_last": None, "min_seconds": 0,
                                                    "save_best": False}))
    trainer.step(200)
    panda.wait_for(lambda s: s.step == 200 and s.status == "paused")
    at = panda.run(CHECKPOINTS)
    assert any("Keeps every periodic checkpoint" in m.value for m in at.markdown)
    assert at.toggle(key="retention_keep_all").value is True
    at.toggle(key="retention_keep_all").set_value(False).run()
    at.number_input(key="retention_keep_last").set_value(3)
    at.toggle(key="retention_keep_log_spaced").set_value(False)
    at.number_input(key="retention_keep_best").set_value(0)
    at.button(key="retention_apply").click().run()
    assert not at.exception
    assert any("Policy applied" in s.value and "newest 3" in s.value for s in at.success)
    snap = trainer.snapshot()
    assert snap.retention["keep_last"] == 3
    assert sum(c["kind"] == "periodic" for c in snap.checkpoints) == 3
    assert any("newest 3" in m.value for m in at.markdown)
