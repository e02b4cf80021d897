"""The training engine: live commands, checkpoints, branches, divergence, restart."""

import dataclasses
import json
import threading
import time
import zipfile

import numpy as np
import pytest

from dlcore import checkpoint as ckptio
from dlcore import loop
from dlcore.network import Network
from dlcore.trainer import CHECKPOINT_FORMAT, RunConfig, Trainer

# Checkpoints only where a test asks for them (no best-so-far ones of its own), and an
# evaluation at every multiple of eval_every however loaded the machine is.
SMALL = dict(hidden=(32, 16), eval_every=10, retention={"save_best": False}, eval_share=1.0)


def wait_until_idle(trainer, timeout=60):
    """Wait for the worker to finish queued steps (status leaves "running")."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = trainer.snapshot()
        if trainer.idle():
            return snap
        time.sleep(0.005)
    raise TimeoutError(f"still {trainer.snapshot().status} after {timeout}s")


def run_steps(trainer, n):
    trainer.step(n)
    return wait_until_idle(trainer)


@pytest.fixture
def make_trainer(tmp_path):
    trainers = []

    def make(**overrides):
        trainer = Trainer(RunConfig(**{**SMALL, **overrides}), tmp_path)
        trainers.append(trainer)
        return trainer

    yield make
    for trainer in trainers:
        trainer.stop()


def checkpoint_arrays(trainer, checkpoint_id):
    arrays, _ = ckptio.read(trainer.run_dir / f"{checkpoint_id}.npz", CHECKPOINT_FORMAT)
    return arrays


# -- live control ------------------------------------------------------------


def test_new_run_is_idle_at_step_zero_with_an_initial_checkpoint(make_trainer):
    snap = make_trainer().snapshot()
    assert snap.status == "idle" and snap.step == 0
    assert [c["kind"] for c in snap.checkpoints] == ["initial"]
    assert len(snap.history["eval_step"]) == 1  # evaluated at step 0
    assert snap.hparams["lr"] == 1e-3 and snap.hparams["optimizer"] == "adam"


def test_update_ratio_is_the_weight_change_over_the_weight_norm(make_trainer):
    """update_ratio/<layer> = ‖W_after − W_before‖ / ‖W_before‖ of the step it records."""
    trainer = make_trainer(dtype="float64")
    run_steps(trainer, 3)
    before, _ = trainer.export_state()
    snap = run_steps(trainer, 1)
    after, _ = trainer.export_state()
    for layer in snap.layers:
        W0, W1 = before[f"params/{layer}.W"], after[f"params/{layer}.W"]
        expected = np.linalg.norm(W1 - W0) / np.linalg.norm(W0)
        assert snap.history[f"update_ratio/{layer}"][-1] == pytest.approx(expected, rel=1e-5)


def test_step_n_runs_exactly_n_steps_then_pauses(make_trainer):
    trainer = make_trainer()
    snap = run_steps(trainer, 25)
    assert snap.status == "paused" and snap.step == 25
    np.testing.assert_array_equal(snap.history["step"], np.arange(1, 26))
    assert list(snap.history["eval_step"]) == [0, 10, 20]
    assert run_steps(trainer, 5).step == 30


def test_start_and_pause(make_trainer):
    trainer = make_trainer()
    trainer.start()
    time.sleep(0.3)
    assert trainer.snapshot().status == "running"
    trainer.pause()
    snap = wait_until_idle(trainer)
    assert snap.status == "paused" and snap.step > 0
    time.sleep(0.1)
    assert trainer.snapshot().step == snap.step


def test_alpha_changed_at_step_k_applies_from_step_k_plus_1_and_is_marked(make_trainer):
    trainer = make_trainer()
    run_steps(trainer, 20)
    trainer.update(lr=0.01)
    snap = run_steps(trainer, 5)
    lr = dict(zip(snap.history["step"], snap.history["lr"], strict=True))
    assert lr[20] == 1e-3 and lr[21] == 0.01
    change = [e for e in snap.events if e["kind"] == "change"]
    assert len(change) == 1 and change[0]["step"] == 20
    assert list(change[0]["changes"]["lr"]) == [1e-3, 0.01]
    # a pre-change checkpoint at step 20 holds the old α, so the change can be undone
    pre = [c for c in snap.checkpoints if c["kind"] == "pre-change"]
    assert pre[0]["step"] == 20 and pre[0]["hparams"]["lr"] == 1e-3


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(lr=-1), "lr"),
        (dict(lr=float("nan")), "finite"),
        (dict(lr="0.1"), "number"),
        (dict(optimizer="sgd"), "optimizer"),
        (dict(beta1=1.0), "beta1"),
        (dict(eps=0), "eps"),
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2.5), "whole"),
        (dict(keep_prob=0), "keep_prob"),
        (dict(l2=-0.1), "l2"),
        (dict(bn_momentum=1), "bn_momentum"),
        (dict(schedule="cosine"), "cosine"),
        (dict(schedule="exponential", schedule_params={"base": 2}), "base"),
        (dict(eval_every=0), "eval_every"),
        (dict(colour="red"), "unknown"),
        (dict(batch_size=10**9), "batch_size"),
    ],
)
def test_invalid_updates_raise_at_once_and_change_nothing(make_trainer, bad, message):
    trainer = make_trainer()
    before = trainer.snapshot()
    with pytest.raises(ValueError, match=message):
        trainer.update(**bad)
    time.sleep(0.05)
    after = trainer.snapshot()
    assert dict(after.hparams) == dict(before.hparams)
    assert len(after.checkpoints) == len(before.checkpoints) and after.events == before.events


def test_switching_optimizer_starts_fresh_moments(make_trainer):
    trainer = make_trainer()
    run_steps(trainer, 10)
    trainer.update(optimizer="momentum", beta=0.8)
    run_steps(trainer, 1)
    _, meta = trainer.export_state()
    assert meta["optimizer"] == {"name": "momentum", "t": 1}
    # changing only a β keeps the moments and the step counter
    trainer.update(beta=0.85)
    run_steps(trainer, 1)
    _, meta = trainer.export_state()
    assert meta["optimizer"]["t"] == 2 and meta["info"]["hparams"]["beta"] == 0.85


def test_new_schedule_continues_from_current_alpha_and_counts_epochs_from_the_change(make_trainer):
    trainer = make_trainer(batch_size=128)  # 1437 training examples: 11 steps an epoch
    run_steps(trainer, 30)
    alpha_before = trainer.snapshot().alpha
    trainer.update(schedule="inverse_sqrt", schedule_params={"k": 3.0})
    snap = run_steps(trainer, 40)
    start_epoch = snap.history["epoch"][30]
    for epoch, lr in zip(snap.history["epoch"][30:], snap.history["lr"][30:], strict=True):
        epochs = max(epoch - start_epoch, 1)
        assert lr == pytest.approx(alpha_before * np.sqrt(1) / np.sqrt(epochs), rel=1e-12)
    # typing α by hand re-anchors the schedule there
    trainer.update(lr=0.05)
    snap = run_steps(trainer, 1)
    assert snap.history["lr"][-1] == pytest.approx(0.05, rel=1e-12)


def test_speed_limit_slows_training(make_trainer):
    trainer = make_trainer()
    trainer.update(speed_limit=20)
    trainer.start()
    time.sleep(1.0)
    trainer.pause()
    steps = wait_until_idle(trainer).step
    assert 5 <= steps <= 30
    assert not [c for c in trainer.snapshot().checkpoints if c["kind"] == "pre-change"]


# -- checkpoints, rollback, replay -------------------------------------------


def test_rollback_replays_the_original_continuation_bit_for_bit(make_trainer):
    """Dropout on, L2 on, periodic checkpoints: 250 steps after the restore match exactly."""
    trainer = make_trainer(keep_prob=0.8, l2=0.01, checkpoint_every=40, dtype="float32")
    run_steps(trainer, 50)
    start = trainer.checkpoint("fork point")
    run_steps(trainer, 250)
    end_a = trainer.checkpoint("end of branch 0")
    original = trainer.snapshot()
    branch = trainer.rollback(start)
    assert branch == 1
    snap = run_steps(trainer, 250)
    assert snap.branch == 1 and snap.step == 300
    end_b = trainer.checkpoint("end of branch 1")
    for name in ("step", "cost", "lr", "grad_norm", "update_ratio/fc1"):
        np.testing.assert_array_equal(snap.history[name], original.history[name], err_msg=name)
    np.testing.assert_array_equal(snap.history["dev_accuracy"], original.history["dev_accuracy"])
    a, b = checkpoint_arrays(trainer, end_a), checkpoint_arrays(trainer, end_b)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_rollback_keeps_the_old_branch_and_records_the_fork(make_trainer):
    trainer = make_trainer()
    run_steps(trainer, 20)
    fork = trainer.checkpoint()
    run_steps(trainer, 20)
    trainer.rollback(fork)
    snap = run_steps(trainer, 5)
    assert snap.branch == 1 and snap.step == 25
    assert len(snap.branches[0]["history"]["step"]) == 40
    assert snap.branches[1]["fork_step"] == 20 and snap.branches[1]["from_checkpoint"] == fork
    assert [e["kind"] for e in snap.events if e["kind"] == "rollback"] == ["rollback"]
    kinds = [c["kind"] for c in snap.checkpoints]
    assert "rollback" in kinds


def test_rollback_and_delete_reject_bad_ids(make_trainer):
    trainer = make_trainer()
    for bad in ["../../etc/passwd", "ckpt-999999", "/tmp/x", "ckpt-000000.npz", 7]:
        with pytest.raises(ValueError):
            trainer.rollback(bad)
    with pytest.raises(ValueError, match="stands on"):
        trainer.delete_checkpoint(trainer.snapshot().last_good_checkpoint)


def test_delete_checkpoint(make_trainer):
    trainer = make_trainer()
    run_steps(trainer, 3)
    first = trainer.checkpoint()
    run_steps(trainer, 3)
    trainer.checkpoint()
    trainer.delete_checkpoint(first)
    assert first not in [c["id"] for c in trainer.snapshot().checkpoints]
    assert not (trainer.run_dir / f"{first}.npz").exists()


# -- divergence and errors ---------------------------------------------------


def test_divergence_with_a_huge_alpha_is_caught_before_anything_bad_is_saved(make_trainer):
    trainer = make_trainer(lr=10.0, checkpoint_every=5)  # Adam: the output layer blows up
    snap = run_steps(trainer, 300)
    assert snap.status == "diverged"
    assert snap.divergence["step"] == snap.step + 1 and snap.divergence["cause"]
    assert np.all(np.isfinite(snap.history["cost"]))
    for path in trainer.run_dir.glob("ckpt-*.npz"):
        ckptio.read(path, CHECKPOINT_FORMAT)  # raises on NaN/inf
    # roll back to the last good checkpoint with a smaller α: continues cleanly
    trainer.rollback(snap.divergence["last_good_checkpoint"])
    trainer.update(lr=0.05)
    snap = run_steps(trainer, 50)
    assert snap.status == "paused" and np.all(np.isfinite(snap.history["cost"]))


def test_one_hard_batch_of_a_converged_net_is_trained_on_not_a_divergence(make_trainer):
    """Found by the eight-hour soak: a converged net (cost ~0.004) met a batch it got
    confidently wrong (cost 1.2 > ln 3). The guard refused it; every rollback replays the
    same data order, so the run met it again for ever. A spike the net does not also
    have on other rows is trained on; one it has everywhere is still a divergence."""
    trainer = make_trainer(dataset="blobs", dataset_params={"n_samples": 3000, "spread": 0.2},
                           hidden=(8,), lr=0.05, batch_size=32)
    snap = run_steps(trainer, 1500)
    assert snap.status == "paused" and np.median(snap.history["cost"][-50:]) < 0.01
    converged = trainer.checkpoint()
    run, clean = trainer._run, trainer._run.data.y_train

    def labels(y):  # the run is paused: its worker reads no data meanwhile
        run.data = dataclasses.replace(run.data, y_train=y)

    # every row after the guard's reference rows mislabelled: each batch is "hard"
    labels(np.concatenate([clean[:loop.CONFIRM_ROWS], (clean[loop.CONFIRM_ROWS:] + 1) % 3]))
    snap = run_steps(trainer, 20)
    assert snap.status == "paused" and snap.step == 1520
    assert max(snap.history["cost"][-20:]) > 10 * np.mean(snap.history["cost"][-70:-20])
    # the net is as bad on the reference rows too: a divergence, refused as before
    trainer.rollback(converged)
    labels((clean + 1) % 3)
    snap = run_steps(trainer, 20)
    assert snap.status == "diverged" and snap.step == 1500


def test_an_exception_in_the_worker_is_reported_and_the_run_stays_usable(make_trainer, monkeypatch):
    trainer = make_trainer()
    run_steps(trainer, 5)
    real = Network.loss_and_grads

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(Network, "loss_and_grads", broken)
    snap = run_steps(trainer, 5)
    assert snap.status == "error" and "simulated failure" in snap.error
    assert "Traceback" in snap.error_traceback
    monkeypatch.setattr(Network, "loss_and_grads", real)
    snap = run_steps(trainer, 5)
    assert snap.status == "paused" and snap.step == 10 and snap.error is None


# -- restart and damaged files -----------------------------------------------


def test_open_after_restart_restores_the_run_its_branches_and_curves(tmp_path):
    with Trainer(RunConfig(**SMALL, checkpoint_every=25), tmp_path) as trainer:
        run_steps(trainer, 60)
        fork = trainer.checkpoint("fork")
        run_steps(trainer, 20)
        trainer.rollback(fork)
        run_steps(trainer, 30)
        trainer.update(lr=0.002)
        run_steps(trainer, 10)
    before = trainer.snapshot()
    with Trainer.open(tmp_path) as reopened:
        after = reopened.snapshot()
        assert after.status == "paused"
        assert after.step == before.step == 100 and after.branch == 1
        assert after.hparams["lr"] == 0.002
        np.testing.assert_array_equal(after.history["cost"], before.history["cost"])
        np.testing.assert_array_equal(after.history["dev_accuracy"], before.history["dev_accuracy"])
        assert len(after.branches[0]["history"]["step"]) == 80
        assert [e["kind"] for e in after.events] == [e["kind"] for e in before.events]
        assert run_steps(reopened, 5).step == 105


def test_damaged_checkpoints_are_reported_and_skipped(tmp_path):
    with Trainer(RunConfig(**SMALL), tmp_path) as trainer:
        run_steps(trainer, 10)
        good = trainer.checkpoint("good")
        run_steps(trainer, 10)
        newest = trainer.checkpoint("newest")
        run_dir = trainer.run_dir
    data = (run_dir / f"{newest}.npz").read_bytes()
    (run_dir / f"{newest}.npz").write_bytes(data[: len(data) // 2])  # truncated
    (run_dir / "ckpt-000090.npz").write_bytes(b"not a zip at all")
    with zipfile.ZipFile(run_dir / "ckpt-000091.npz", "w") as z:
        z.writestr("params/fc1.W.npy", b"garbage")
    arrays, meta = ckptio.read(run_dir / f"{good}.npz", CHECKPOINT_FORMAT)
    meta["info"]["id"] = "ckpt-000092"
    arrays["meta.json"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(run_dir / "ckpt-000092.npz", **arrays, evil=np.array([{"a": 1}], dtype=object))
    (run_dir / ".ckpt-000093.npz.tmp-123").write_bytes(data)  # a crash's leftover
    with Trainer.open(tmp_path) as reopened:
        snap = reopened.snapshot()
        damaged = {d["file"]: d["reason"] for d in snap.damaged}
        assert set(damaged) == {
            f"{newest}.npz",
            "ckpt-000090.npz",
            "ckpt-000091.npz",
            "ckpt-000092.npz",
        }
        assert "object" in damaged["ckpt-000092.npz"] or "pickle" in damaged["ckpt-000092.npz"]
        assert snap.last_good_checkpoint == good and snap.step == 10
        assert not (run_dir / ".ckpt-000093.npz.tmp-123").exists()
        assert run_steps(reopened, 3).step == 13


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    with Trainer(RunConfig(**SMALL), tmp_path, run_id="small") as small:
        small_dir = small.run_dir
    with Trainer(RunConfig(hidden=(8,), eval_every=10), tmp_path, run_id="other") as other:
        foreign = other.snapshot().checkpoints[0]["id"]
        other_file = other.run_dir / f"{foreign}.npz"
    (small_dir / "ckpt-000050.npz").write_bytes(other_file.read_bytes())
    with Trainer.open(tmp_path, "small") as reopened:
        reasons = [d["reason"] for d in reopened.snapshot().damaged]
        assert any("ckpt-000050.npz" in r for r in reasons)


# -- concurrency -------------------------------------------------------------


def test_many_threads_issuing_random_commands(make_trainer):
    """Hundreds of valid and invalid commands from several threads: nothing escapes."""
    trainer = make_trainer(checkpoint_every=30)
    errors = []

    def hammer(seed):
        rng = np.random.default_rng(seed)
        for _ in range(60):
            choice = rng.integers(9)
            try:
                if choice == 0:
                    trainer.start()
                elif choice == 1:
                    trainer.pause()
                elif choice == 2:
                    trainer.step(int(rng.integers(1, 5)))
                elif choice == 3:
                    trainer.update(lr=float(10 ** rng.uniform(-4, -2)))
                elif choice == 4:
                    trainer.update(lr=float(rng.choice([-1, 0, np.nan])))
                elif choice == 5:
                    trainer.update(
                        optimizer=str(rng.choice(["gd", "momentum", "rmsprop", "adam", "bad"]))
                    )
                elif choice == 6:
                    trainer.checkpoint("stress")
                elif choice == 7:
                    ids = [c["id"] for c in trainer.snapshot().checkpoints]
                    trainer.rollback(str(rng.choice(ids)))
                else:
                    trainer.snapshot()
            except ValueError:
                pass
            except Exception as error:  # anything else is a bug
                errors.append(error)

    threads = [threading.Thread(target=hammer, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    trainer.pause()
    snap = wait_until_idle(trainer)
    assert errors == []
    assert snap.status in ("paused", "idle") and snap.error is None
    steps = snap.history["step"]
    np.testing.assert_array_equal(steps, np.arange(1, len(steps) + 1))  # lineage is contiguous
    assert snap.step == (steps[-1] if len(steps) else 0)
    assert run_steps(trainer, 3).step == snap.step + 3


def test_rollback_with_new_hyperparameters_is_one_command(make_trainer):
    trainer = make_trainer()
    run_steps(trainer, 20)
    fork = trainer.checkpoint()
    run_steps(trainer, 10)
    with pytest.raises(ValueError, match="lr"):
        trainer.rollback(fork, lr=-1)
    assert trainer.snapshot().branch == 0  # nothing happened
    trainer.rollback(fork, lr=5e-4)
    snap = run_steps(trainer, 2)
    assert snap.branch == 1 and snap.hparams["lr"] == 5e-4 and snap.history["lr"][-1] == 5e-4
    kinds = [c["kind"] for c in snap.checkpoints if c["branch"] == 1]
    assert kinds == ["rollback"]  # the rollback checkpoint is the change's undo point


def test_batchnorm_picture_follows_a_rollback_and_reports_the_estimate_error(make_trainer):
    trainer = make_trainer()
    initial = trainer.snapshot().checkpoints[0]["id"]
    run_steps(trainer, 30)
    trained = trainer.snapshot().bn["bn1"]
    assert not np.all(trained["gamma"] == 1)
    np.testing.assert_array_equal(
        trained["mean_error"], trained["running_mean"] - trained["population_mean"]
    )
    trainer.rollback(initial)
    restored = trainer.snapshot().bn["bn1"]
    assert np.all(restored["gamma"] == 1) and np.all(restored["running_mean"] == 0)


def test_rolling_back_to_a_pre_change_checkpoint_leaves_the_change_out(make_trainer, tmp_path):
    trainer = make_trainer()
    run_steps(trainer, 10)
    trainer.update(lr=0.002)
    trainer.update(l2=0.01)
    snap = run_steps(trainer, 5)
    first, second = [c for c in snap.checkpoints if c["kind"] == "pre-change"]
    trainer.rollback(second["id"])  # after the α change, before the λ change
    events = trainer.snapshot().events
    changes = [dict(e["changes"]) for e in events if e["kind"] == "change"]
    assert [list(c) for c in changes] == [["lr"]]
    assert trainer.snapshot().hparams["lr"] == 0.002 and trainer.snapshot().hparams["l2"] == 0
    trainer.stop()
    with Trainer.open(tmp_path) as reopened:
        changes = [dict(e["changes"]) for e in reopened.snapshot().events if e["kind"] == "change"]
        assert [list(c) for c in changes] == [["lr"]]


def test_a_new_run_can_start_from_another_runs_state(tmp_path):
    """start_from: the state is checked like a checkpoint and continues exactly."""
    with Trainer(RunConfig(**SMALL), tmp_path / "a") as source:
        run_steps(source, 30)
        state = source.export_state()
        reference = run_steps(source, 10).history["cost"][-10:]
    with Trainer(RunConfig(**SMALL), tmp_path / "b", start_from=state,
                 note="from run a at step 30") as started:
        snap = started.snapshot()
        assert snap.step == 30 and snap.checkpoints[0]["note"] == "from run a at step 30"
        np.testing.assert_array_equal(run_steps(started, 10).history["cost"][-10:], reference)
    other = RunConfig(**{**SMALL, "hidden": (8,)})
    with pytest.raises(ValueError, match="architecture"):
        Trainer(other, tmp_path / "c", start_from=state)
    assert not list((tmp_path / "c").glob("*/run.json"))
