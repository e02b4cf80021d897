"""AppTest of the live training page (app.py): what it shows and what its controls do.

AppTest never fires ``run_every``; the Trainer trains in its own thread, so a test polls
the snapshot until the worker is done and then reruns the page.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from tests.conftest import APP_DIR


def metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def event_markers(spec: dict) -> list[dict]:
    """The traces that carry event hover texts (drawn on the hidden second y-axis)."""
    return [trace for trace in spec["data"] if trace.get("yaxis") == "y2"]


def test_fresh_folder_opens_a_default_run_at_step_zero(panda):
    at = panda.run()
    assert metric(at, "Step") == "0"
    assert metric(at, "α now") == "0.001"
    snapshot = panda.trainer().snapshot()
    assert snapshot.status == "idle"
    # the first start's run: real MNIST digits (README, "First start")
    assert snapshot.config["dataset"] == "mnist" and snapshot.config["dtype"] == "float32"
    assert snapshot.config["hidden"] == (128, 64) and snapshot.config["batchnorm"]
    assert snapshot.hparams["optimizer"] == "adam"
    assert [b.label for b in at.button][:4] == ["Start", "Step ×1", "Step ×10", "Step ×100"]
    charts = panda.charts(at)
    live = ("chart_cost", "chart_accuracy", "chart_alpha", "chart_update_ratio")
    assert set(live) <= set(charts)
    assert "chart_decision_regions" not in charts  # digits has 64 features
    for key in live:  # redrawn while training: margins fixed, no re-measuring per redraw
        assert charts[key]["layout"]["margin"]["autoexpand"] is False


def test_second_start_reopens_the_newest_run(panda):
    panda.run()
    first = panda.trainer()
    first.step(5)
    panda.wait_for(lambda s: s.step == 5 and s.status == "paused")
    first.checkpoint("five")
    import streamlit as st

    st.cache_resource.clear()  # a server restart
    at = panda.run()
    assert panda.trainer().run_id == first.run_id
    assert metric(at, "Step") == "5"


def test_step_10_shows_step_10_and_the_cost_curve(panda):
    at = panda.run()
    at.button(key="step_10").click().run()
    panda.wait_for(lambda s: s.step == 10 and s.status == "paused")
    at.run()
    assert metric(at, "Step") == "10"
    cost = panda.charts(at)["chart_cost"]
    raw = next(t for t in cost["data"] if t["name"] == "J (raw)")
    assert panda.values(raw["x"]) == list(range(1, 11))
    smoothed = next(t for t in cost["data"] if t["name"].startswith("J (smoothed"))
    history = panda.trainer().snapshot().history  # the engine's smoothing, not the page's
    assert panda.values(smoothed["y"]) == history["cost_smoothed"].tolist()


def test_start_then_pause(panda):
    at = panda.run()
    at.button(key="start").click().run()
    assert panda.trainer().snapshot().status == "running"
    assert at.button(key="pause").label == "Pause"
    at.button(key="pause").click().run()
    snapshot = panda.wait_for(lambda s: s.status == "paused")
    assert snapshot.step > 0
    assert at.button(key="start").label == "Start"


def test_applying_alpha_changes_the_run_and_marks_every_chart(panda):
    at = panda.run()
    at.number_input(key="hp_lr").set_value(0.01)
    at.button(key="apply").click().run()
    assert any("α 0.001 → 0.01" in s.value for s in at.success)
    snapshot = panda.wait_for(lambda s: s.hparams["lr"] == 0.01)
    change = next(e for e in snapshot.events if e["kind"] == "change")
    at.run()
    assert metric(at, "α now") == "0.01"
    for key in ("chart_cost", "chart_accuracy", "chart_alpha", "chart_update_ratio"):
        markers = event_markers(panda.charts(at)[key])
        changes = next(t for t in markers if t["name"] == "hyperparameter change")
        assert panda.values(changes["x"]) == [change["step"]]
        assert "α 0.001 → 0.01" in changes["hovertext"][0]
        lines = next(t for t in markers if t["meta"] == {"event_lines": "change"})
        assert panda.values(lines["x"]) == [change["step"], change["step"], None]
        assert panda.values(lines["y"]) == [0, 1, None]  # the full height of the plot


def test_apply_sends_only_changed_keys_and_optimizer_fields_follow_the_choice(panda):
    at = panda.run()
    assert {"hp_beta1", "hp_beta2", "hp_eps"} <= {n.key for n in at.number_input}
    at.selectbox(key="hp_optimizer").set_value("momentum").run()
    keys = {n.key for n in at.number_input}
    assert "hp_beta" in keys and not {"hp_beta1", "hp_beta2", "hp_eps"} & keys
    at.number_input(key="hp_beta").set_value(0.8)
    at.button(key="apply").click().run()
    snapshot = panda.wait_for(lambda s: s.hparams["optimizer"] == "momentum")
    change = next(e for e in snapshot.events if e["kind"] == "change")
    assert set(change["changes"]) == {"optimizer", "beta"}
    assert snapshot.hparams["beta"] == 0.8


def test_schedule_preview_and_formulas(panda):
    at = panda.run()
    at.selectbox(key="hp_schedule").set_value("staircase").run()
    preview = panda.charts(at)["schedule_preview"]
    alphas = panda.values(preview["data"][0]["y"])
    epochs = panda.values(preview["data"][0]["x"])  # paused, speed unknown: in epochs
    assert preview["layout"]["xaxis"]["title"]["text"] == "epochs"
    before = [a for e, a in zip(epochs, alphas, strict=True) if e < 10]
    after = [a for e, a in zip(epochs, alphas, strict=True) if 10 <= e < 20]
    assert set(before) == {0.001} and set(after) == {0.0005}  # factor 0.5 every 10 epochs
    assert any("factor" in latex.value for latex in at.latex)
    at.button(key="apply").click().run()
    snapshot = panda.wait_for(lambda s: s.hparams["schedule"] == "staircase")
    assert dict(snapshot.hparams["schedule_params"]) == {"factor": 0.5, "every": 10.0}


def test_invalid_hyperparameter_shows_an_error_and_leaves_the_run(panda):
    at = panda.run()
    at.number_input(key="hp_batch_size").set_value(0)  # below min: the widget refuses it
    at.run()
    at.number_input(key="hp_lr").set_value(0.01)
    at.selectbox(key="hp_schedule").set_value("exponential").run()
    at.number_input(key="hp_sched_exponential_base").set_value(1.5)  # must be ≤ 1
    at.button(key="apply").click().run()
    assert any("base" in e.value for e in at.error)
    assert panda.trainer().snapshot().hparams["lr"] == 0.001


def test_sampling_alpha_fills_the_field(panda):
    at = panda.run()
    at.number_input(key="sample_alpha_low").set_value(-3.0)
    at.number_input(key="sample_alpha_high").set_value(-2.0)
    at.button(key="draw_alpha").click().run()
    alpha = at.number_input(key="hp_lr").value
    assert 1e-3 <= alpha <= 1e-2
    assert panda.trainer().snapshot().hparams["lr"] == 0.001  # not applied yet
    at.button(key="draw_beta").click().run()
    assert 0.9 <= at.number_input(key="hp_beta1").value <= 0.999


def test_checkpoint_now_with_a_note(panda):
    at = panda.run()
    at.text_input(key="checkpoint_note").input("before the big change")
    at.button(key="checkpoint_now").click().run()
    notes = [c["note"] for c in panda.trainer().snapshot().checkpoints]
    assert "before the big change" in notes
    assert any("Saved checkpoint" in s.value for s in at.success)


def test_invalid_hidden_sizes_show_an_error_and_keep_the_run(panda):
    at = panda.run()
    run_id = panda.trainer().run_id
    at.text_input(key="new_hidden").input("abc")
    at.button(key="create_run").click().run()
    assert any("Hidden layer sizes" in e.value for e in at.error)
    assert panda.trainer().run_id == run_id
    assert len(list(panda.checkpoint_dir.iterdir())) == 1


def test_bad_upload_shows_the_reason_and_keeps_the_run(panda):
    at = panda.run()
    run_id = panda.trainer().run_id
    at.radio(key="new_dataset").set_value("upload").run()
    at.file_uploader(key="new_upload").upload("numbers.csv", b"1,2,3\n4,5,6\n", "text/csv")
    at.button(key="create_run").click().run()
    errors = " ".join(e.value for e in at.error)
    assert "numbers.csv" in errors and "header" in errors
    assert panda.trainer().run_id == run_id


def test_an_upload_claiming_a_huge_array_gets_a_message_not_a_traceback(panda):
    """An .npz whose header claims 2^40 rows: refused from the header, nothing allocated."""
    from tests.test_data_files import _npy_header

    at = panda.run()
    run_id = panda.trainer().run_id
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("X.npy", _npy_header((2**40, 2)) + b"\0" * 64)
        z.writestr("y.npy", _npy_header((2**40,), "<i8") + b"\0" * 64)
    at.radio(key="new_dataset").set_value("upload").run()
    at.file_uploader(key="new_upload").upload("huge.npz", archive.getvalue(),
                                              "application/octet-stream")
    at.button(key="create_run").click().run()
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "huge.npz" in errors and "16.0 TB" in errors
    assert panda.trainer().run_id == run_id


def test_uploaded_2d_file_starts_a_run_with_decision_regions(panda):
    at = panda.run()
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-2, 1, (40, 2)), rng.normal(2, 1, (40, 2))])
    y = np.repeat([0, 1], 40)
    buffer = io.BytesIO()
    np.savez(buffer, X=X, y=y)
    at.radio(key="new_dataset").set_value("upload").run()
    at.file_uploader(key="new_upload").upload("two_blobs.npz", buffer.getvalue())
    at.text_input(key="new_hidden").input("8")
    at.button(key="create_run").click().run()
    snapshot = panda.trainer().snapshot()
    assert snapshot.dataset["n_features"] == 2 and snapshot.config["hidden"] == (8,)
    # the file's own name, sanitised, in what the page says (the run keeps dataset.npz)
    assert any("(data from two_blobs.npz)" in s.value for s in at.success)
    at.run()
    regions = panda.charts(at)["chart_decision_regions"]
    assert [t["type"] for t in regions["data"]] == ["heatmap", "scatter"]
    assert metric(at, "Step") == "0"


def test_divergence_banner_rolls_back_with_half_the_alpha(panda):
    at = panda.run()
    trainer = panda.trainer()
    trainer.update(optimizer="gd", lr=100.0)
    trainer.step(100)
    divergence = panda.wait_for(lambda s: s.status == "diverged").divergence
    at.run()
    assert any(f"diverged at step {divergence['step']}" in e.value for e in at.error)
    alpha_input = next(n for n in at.number_input if n.key.startswith("divergence_alpha"))
    assert alpha_input.value == 50.0
    next(b for b in at.button if b.label == "Roll back to last good checkpoint").click().run()
    snapshot = panda.trainer().snapshot()  # one command: rolled back with the new α at once
    assert snapshot.hparams["lr"] == 50.0
    assert snapshot.status == "paused" and snapshot.branch == 1
    assert any("α = 50" in s.value for s in at.success)
    assert not any("diverged at step" in e.value for e in at.error)


def test_worker_error_is_shown_with_its_traceback(panda, monkeypatch):
    from dlcore.network import Network

    at = panda.run()
    trainer = panda.trainer()

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure in the training step")

    monkeypatch.setattr(Network, "loss_and_grads", broken)
    trainer.step(1)
    snapshot = panda.wait_for(lambda s: s.status == "error")
    at.run()
    assert any(snapshot.error in e.value for e in at.error)
    assert any(c.value.strip() == snapshot.error_traceback.strip() for c in at.code)


def too_small_alpha_run(panda, autopilot: bool = False):
    """A run whose α is far too small: 140 steps, evaluated every 20 (the ratio rule fires)."""
    from dlcore.trainer import RunConfig
    from pages.shared.engine import holder

    at = panda.run()
    trainer = holder().new_run(RunConfig(hidden=(16,), eval_every=20, lr=1e-7))
    if autopilot:
        at.run()
        at.toggle(key="autopilot").set_value(True).run()
        panda.wait_for(lambda s: s.autopilot)
    trainer.step(140)
    panda.wait_for(lambda s: s.step == 140 and s.status == "paused")
    return at.run()


def test_healthy_run_gets_no_suggestion(panda):
    at = panda.run()
    assert any("No suggestions" in c.value for c in at.caption)
    assert not at.toggle(key="autopilot").value
    assert not any(b.key.startswith("assistant_apply_") for b in at.button)


def test_assistant_suggests_a_larger_alpha_with_evidence_and_applies_it(panda):
    at = too_small_alpha_run(panda)
    assert any("α looks too low" in m.value for m in at.markdown)
    assert any("update-to-weight ratio" in c.value for c in at.caption)
    apply = next(b for b in at.button if b.key.startswith("assistant_apply_")
                 and b.key.endswith("update_ratio_low"))
    apply.click().run()
    snapshot = panda.wait_for(lambda s: s.hparams["lr"] > 1e-7)
    assert snapshot.hparams["lr"] == pytest.approx(1e-6)  # ×10 at most
    message = next(s.value for s in at.success if "Applied: α looks too low" in s.value)
    undo_point = next(c["id"] for c in snapshot.checkpoints if c["kind"] == "pre-change")
    assert f"roll back to {undo_point}" in message
    assert not any(b.key.startswith("assistant_apply_") for b in at.button)  # cooldown
    at.button(key="assistant_undo").click().run()
    snapshot = panda.trainer().snapshot()
    assert snapshot.hparams["lr"] == 1e-7 and snapshot.branch == 1 and snapshot.step == 140


def test_autopilot_toggle_applies_suggestions_and_logs_them(panda):
    at = too_small_alpha_run(panda, autopilot=True)
    snapshot = panda.trainer().snapshot()
    assert snapshot.autopilot and snapshot.hparams["lr"] > 1e-7
    event = next(e for e in snapshot.events if e["kind"] == "autopilot")
    assert any(f"step {event['step']} · {event['title']}" in c.value
               and event["evidence"] in c.value for c in at.caption)
    assert at.toggle(key="autopilot").value
    panda.trainer().update(autopilot=False)  # another tab turns it off
    panda.wait_for(lambda s: not s.autopilot)
    at.run()
    assert not at.toggle(key="autopilot").value


def run_of(panda, steps: int, **config):
    """A new run of ``config`` (no periodic checkpoints), ``steps`` steps trained."""
    from dlcore.trainer import RunConfig
    from pages.shared.engine import holder

    at = panda.run()
    trainer = holder().new_run(RunConfig(**config))
    trainer.step(steps)
    panda.wait_for(lambda s: s.step == steps and s.status == "paused", timeout=60)
    return at.run()


#: Three well separated blobs: a small network fits them exactly within 1,500 steps.
SEPARABLE = {"dataset": "blobs", "dataset_params": {"n_samples": 200, "spread": 0.2},
             "hidden": (8,), "lr": 0.05, "batch_size": 32, "eval_every": 20}


def test_assistant_tells_a_converged_run_to_stop_instead_of_raising_alpha(panda):
    at = run_of(panda, 1500, **SEPARABLE)
    history = panda.trainer().snapshot().history
    assert history["train_accuracy"][-1] == 1.0 and np.median(history["cost"][-100:]) < 1e-3
    titles = [m.value for m in at.markdown]
    assert any("Converged: nothing left to learn on this data; stop, or change the problem"
               in t for t in titles), titles
    assert not any(word in t for t in titles for word in ("α looks", "Plateau", "restore"))
    pause = next(b for b in at.button if b.key.startswith("assistant_apply_")
                 and b.key.endswith("converged"))
    assert pause.label == "Pause" and pause.disabled  # the run is paused already
    panda.trainer().start()
    panda.wait_for(lambda s: s.status == "running")
    at.run()
    next(b for b in at.button if b.key.endswith("converged")).click().run()
    assert panda.wait_for(lambda s: s.status == "paused")
    assert any("Start continues the run" in s.value for s in at.success)


def test_early_stopping_without_periodic_checkpoints_never_restores_a_worse_one(panda):
    """Noisy blobs: dev accuracy peaked and has not come back. The only checkpoint is the
    run's first one (an untrained network; "save each new best" is off too): restoring it
    would lose everything."""
    at = run_of(panda, 400, dataset="blobs", dataset_params={"n_samples": 300, "spread": 2.5},
                hidden=(16,), lr=0.05, eval_every=10, retention={"save_best": False})
    snapshot = panda.trainer().snapshot()
    assert [c["kind"] for c in snapshot.checkpoints] == ["initial"]
    assert snapshot.checkpoints[0]["metrics"]["dev_accuracy"] < snapshot.history[
        "dev_accuracy"][-1]
    assert any(m.value == "**Early stopping: pause**" for m in at.markdown)
    assert any("no checkpoint on this lineage is better than now" in c.value
               for c in at.caption)
    assert not any("restore" in m.value for m in at.markdown)


def test_optimizer_switch_policy_previews_and_carries_the_moments(panda):
    at = panda.run()
    panda.trainer().step(20)
    panda.wait_for(lambda s: s.step == 20 and s.status == "paused")
    at.run()
    assert not any(r.key == "switch_moments" for r in at.radio)
    at.selectbox(key="hp_optimizer").set_value("momentum").run()
    policy = at.radio(key="switch_moments")
    assert policy.value == "fresh"
    assert policy.options == ["fresh (t = 0)", "carry what transfers"]
    policy.set_value("carry").run()
    at.button(key="preview_switch").click().run()
    table = next(t.value for t in at.table if "jump" in t.value.columns)
    assert list(table["layer"]) == list(panda.trainer().snapshot().layers)
    result = at.session_state["switch_preview"]["result"]
    assert all(v > 0 for part in ("before", "after") for v in result[part].values())
    assert all(jump.startswith("×") for jump in table["jump"])
    assert any(c.value == "Previewed at step 20; the run is still there." for c in at.caption)
    assert panda.trainer().snapshot().step == 20  # previews run on sandboxes
    panda.trainer().step(7)  # the run moves on: the preview is not stale for that
    panda.wait_for(lambda s: s.step == 27 and s.status == "paused")
    at.run()
    assert any(c.value == "Previewed at step 20; the run is 7 steps further." for c in at.caption)
    at.number_input(key="hp_beta").set_value(0.8).run()  # other settings: stale
    assert any("for other settings" in c.value for c in at.caption)
    at.number_input(key="hp_beta").set_value(0.9).run()
    at.button(key="apply").click().run()
    snapshot = panda.wait_for(lambda s: s.hparams["optimizer"] == "momentum")
    change = [e for e in snapshot.events if e["kind"] == "change"][-1]
    assert change["carry_moments"] is True
    assert any("carries the moments" in s.value for s in at.success)


def test_a_folder_that_cannot_hold_runs_gets_a_message_not_a_traceback(panda, tmp_path,
                                                                       monkeypatch):
    """Like an empty read-only disk (root writes through permissions, so: a path under a
    file): every page says what is wrong and the way out; none shows a traceback."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("PANDA_CHECKPOINT_DIR", str(blocker / "checkpoints"))
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP_DIR / "app.py"), default_timeout=30).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("could not open or create a run" in e.value for e in at.error)
    assert any("PANDA_CHECKPOINT_DIR" in e.value for e in at.error)
    for page in ("pages/1_BatchNorm.py", "pages/2_Checkpoints.py", "pages/3_Look-ahead.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert any("could not open or create a run" in e.value for e in at.error), page


def test_a_new_decay_halves_alpha_in_minutes_at_the_runs_speed(panda):
    """Digits runs ~150 epochs a second: a per-epoch decay with the textbook defaults is
    over in seconds. A newly chosen schedule starts with parameters under which α halves
    in about 2 minutes at the run's speed, in the unit the user picks."""
    from pages.panels.hyperparameters import HALF_LIFE_MINUTES

    at = panda.run()
    at.session_state["last_steps_per_second"] = 1000.0  # as seen while it trained
    at.run()
    at.selectbox(key="hp_schedule_unit").set_value("steps").run()
    at.selectbox(key="hp_schedule").set_value("exponential").run()
    base = at.number_input(key="hp_sched_exponential_base").value
    half_life = HALF_LIFE_MINUTES * 60 * 1000  # steps
    assert base ** half_life == pytest.approx(0.5, rel=1e-6)
    preview = panda.charts(at)["schedule_preview"]
    assert preview["layout"]["xaxis"]["title"]["text"] == "minutes"
    assert any("halves after about 2.0 min" in c.value for c in at.caption)
    at.button(key="apply").click().run()
    snapshot = panda.wait_for(lambda s: s.hparams["schedule"] == "exponential")
    assert snapshot.hparams["schedule_unit"] == "steps"


def test_the_charts_take_a_smoothing_beta_and_an_x_axis_by_epoch_or_time(panda):
    at = panda.run()
    panda.trainer().step(150)
    snapshot = panda.wait_for(lambda s: s.step == 150 and s.status == "paused")
    at.run()
    at.slider(key="smoothing").set_value(0.9).run()
    cost = panda.charts(at)["chart_cost"]
    smoothed = next(t for t in cost["data"] if t["name"].startswith("J (smoothed"))
    assert smoothed["name"] == "J (smoothed, β = 0.9)"
    from dlcore.downsample import smooth

    expected = smooth(snapshot.history["cost"], 0.9)
    assert panda.values(smoothed["y"])[-1] == pytest.approx(expected[-1], rel=1e-9)
    at.segmented_control(key="x_axis").set_value("epoch").run()
    cost = panda.charts(at)["chart_cost"]
    assert cost["layout"]["xaxis"]["title"]["text"] == "epoch"
    raw = next(t for t in cost["data"] if t["name"] == "J (raw)")
    assert max(panda.values(raw["x"])) <= snapshot.epoch + 1
    at.segmented_control(key="x_axis").set_value("time").run()
    accuracy = panda.charts(at)["chart_accuracy"]
    assert accuracy["layout"]["xaxis"]["type"] == "date"
