"""Look-ahead sandboxes, the LR range test and the optimizer switch policy."""

import numpy as np
import pytest

from dlcore import lookahead as sb
from dlcore.trainer import RunConfig, Trainer
from tests.test_trainer import run_steps
from tests.test_training import train


@pytest.fixture
def trainer(tmp_path):
    with Trainer(RunConfig(hidden=(32, 16), keep_prob=0.9, eval_every=20), tmp_path) as t:
        run_steps(t, 60)
        yield t


def live_state(trainer):
    arrays, meta = trainer.export_state()
    return {k: v.copy() for k, v in arrays.items()}, meta


def test_sandboxes_never_change_the_live_run(trainer):
    state_before = live_state(trainer)
    snap_before = trainer.snapshot()
    state = trainer.export_state()
    results = sb.look_ahead(
        trainer.config, trainer.data, state, sb.alpha_candidates(1e-3), steps=50, processes=1
    )
    sb.lr_range_test(trainer.config, trainer.data, state, steps=50)
    sb.switch_preview(trainer.config, trainer.data, state, {"optimizer": "rmsprop"}, True)
    assert all(len(r.history["cost"]) == 50 for r in results)
    arrays_after, meta_after = trainer.export_state()
    for key, value in state_before[0].items():
        np.testing.assert_array_equal(arrays_after[key], value, err_msg=key)  # bit for bit
    assert meta_after["iterator"] == state_before[1]["iterator"]
    assert meta_after["dropout_rng"] == state_before[1]["dropout_rng"]
    snap_after = trainer.snapshot()
    assert snap_after.step == snap_before.step and snap_after.events == snap_before.events
    assert len(snap_after.checkpoints) == len(snap_before.checkpoints)


def test_look_ahead_candidates_see_the_same_mini_batches(trainer):
    """Same changes twice give identical curves; the unchanged candidate reproduces the live run."""
    state = trainer.export_state()
    same = sb.look_ahead(
        trainer.config, trainer.data, state, [{}, {}, {"lr": 3e-3}], steps=40, processes=1
    )
    np.testing.assert_array_equal(same[0].history["cost"], same[1].history["cost"])
    # the first step's cost is computed before any update: equal for every candidate
    assert same[0].history["cost"][0] == same[2].history["cost"][0]
    live = run_steps(trainer, 40)
    np.testing.assert_array_equal(same[0].history["cost"], live.history["cost"][-40:])


def test_look_ahead_in_processes_matches_in_process(trainer):
    state = trainer.export_state()
    candidates = sb.alpha_candidates(1e-3)
    here = sb.look_ahead(trainer.config, trainer.data, state, candidates, steps=30, processes=1)
    there = sb.look_ahead(trainer.config, trainer.data, state, candidates, steps=30, processes=2)
    for a, b in zip(here, there, strict=True):
        np.testing.assert_array_equal(a.history["cost"], b.history["cost"])
        np.testing.assert_array_equal(a.history["dev_accuracy"], b.history["dev_accuracy"])


def test_bad_candidate_fails_before_any_work(trainer):
    with pytest.raises(ValueError, match="lr"):
        sb.look_ahead(trainer.config, trainer.data, trainer.export_state(), [{"lr": -1}])


def test_committing_a_candidate_continues_from_its_state_on_a_new_branch(trainer):
    state = trainer.export_state()
    results = sb.look_ahead(
        trainer.config, trainer.data, state, sb.alpha_candidates(1e-3), steps=30, processes=1
    )
    chosen = results[2]
    branch = trainer.adopt(sb.committable(chosen))
    snap = trainer.snapshot()
    assert snap.branch == branch == 1 and snap.step == 90 and snap.status == "paused"
    assert snap.hparams["lr"] == pytest.approx(3e-3)
    np.testing.assert_array_equal(snap.history["cost"][-30:], chosen.history["cost"])
    assert len(snap.branches[0]["history"]["step"]) == 60  # the old branch is kept
    assert [e["kind"] for e in snap.events][-2:] == ["rollback", "checkpoint"]
    # the committed branch continues exactly like the sandbox would have
    sandbox = sb.Sandbox(trainer.config, trainer.data, trainer.export_state())
    sandbox.run(10)
    np.testing.assert_array_equal(
        run_steps(trainer, 10).history["cost"][-10:], sandbox.history()["cost"]
    )


def test_range_test_suggestion_lies_within_a_decade_of_the_best_alpha_on_digits(tmp_path):
    """Best α on digits (Adam + BN, 5 epochs from scratch) vs the range test's suggestions."""
    with Trainer(RunConfig(hidden=(64, 32)), tmp_path) as trainer:
        result = sb.lr_range_test(trainer.config, trainer.data, trainer.export_state(), steps=200)
        grid = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1]
        dev = [train(trainer.data, epochs=5, lr=lr)[1][-1] for lr in grid]
    best = grid[int(np.argmax(dev))]
    print(
        f"best α {best:g} (dev {max(dev):.3f}); steepest {result['steepest']:.3g}, "
        f"min/10 {result['min_tenth']:.3g}"
    )
    for suggestion in (result["steepest"], result["min_tenth"]):
        assert best / 10 <= suggestion <= best * 10
    assert np.all(np.diff(result["alphas"]) > 0)


def test_optimizer_switch_fresh_vs_carrying_moments(trainer):
    state = trainer.export_state()  # Adam, 60 steps in
    fresh = sb.switch_preview(trainer.config, trainer.data, state, {"optimizer": "momentum"}, False)
    carry = sb.switch_preview(trainer.config, trainer.data, state, {"optimizer": "momentum"}, True)
    # fresh momentum's first step is α(1−β)g: ~10× smaller than with Adam's carried v
    for layer in fresh["after"]:
        assert fresh["after"][layer] < carry["after"][layer]
    assert fresh["before"] == carry["before"]
    # the live switch: carry_moments moves Adam's first moment into momentum's v
    trainer.update(optimizer="momentum", carry_moments=True)
    run_steps(trainer, 1)
    assert trainer.export_state()[1]["optimizer"] == {"name": "momentum", "t": 61}
    events = [e for e in trainer.snapshot().events if e["kind"] == "change"]
    assert events[-1]["carry_moments"] is True


def test_carried_state_maps_moments_by_meaning(trainer):
    from dlcore.hparams import carried_state
    from dlcore.optim import make_optimizer

    arrays, _ = trainer.export_state()
    params = {k.removeprefix("params/"): v for k, v in arrays.items() if k.startswith("params/")}
    adam = make_optimizer("adam", 1e-3)
    grads = {k: np.ones_like(v) for k, v in params.items()}
    adam.step({k: v.copy() for k, v in params.items()}, grads)
    rms = make_optimizer("rmsprop", 1e-3)
    state = carried_state(adam, rms, params)
    assert set(state["moments"]) == {f"{k}/s" for k in params} and state["t"] == 1
    np.testing.assert_array_equal(
        state["moments"]["fc1.W/s"], adam.state_dict()["moments"]["fc1.W/s"]
    )
    back = carried_state(make_optimizer("momentum", 1e-3), make_optimizer("adam", 1e-3), params)
    assert back["t"] == 0 and all(np.all(v == 0) for v in back["moments"].values())


def test_committing_a_look_ahead_from_a_checkpoint_on_another_branch(trainer):
    fork = trainer.snapshot().checkpoints[0]["id"]  # step 0, branch 0
    run_steps(trainer, 10)
    trainer.rollback(trainer.checkpoint("to leave branch 0"))  # now on branch 1
    state = trainer.export_state(fork)
    results = sb.look_ahead(
        trainer.config, trainer.data, state, [{"lr": 2e-3}], steps=20, processes=1
    )
    branch = trainer.adopt(sb.committable(results[0]))
    snap = trainer.snapshot()
    assert branch == 2 and snap.step == 20 and snap.branches[2]["parent_branch"] == 0
    assert snap.branches[2]["fork_step"] == 0
