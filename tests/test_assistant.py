"""Each assistant rule fires on a run that shows its symptom and stays quiet on a healthy one."""

import numpy as np
import pytest

from dlcore.assistant import AssistantSettings, suggest
from dlcore.trainer import RunConfig, Trainer
from tests.test_trainer import run_steps

HPARAMS = {"lr": 1e-3, "l2": 0.0, "keep_prob": 1.0}


def fake_snapshot(
    n_evals=20,
    eval_every=50,
    dev_cost=None,
    train_acc=None,
    dev_acc=None,
    ratio=1e-3,
    events=(),
    checkpoints=(),
    hparams=HPARAMS,
    cost=None,
    grad_norm=None,
):
    """A snapshot-shaped dict of a run with the given curves (healthy by default)."""
    steps = n_evals * eval_every
    evals = np.arange(1, n_evals + 1) * eval_every
    improving = np.linspace(1.0, 0.1, n_evals)
    rng = np.random.default_rng(0)
    return {
        "history": {
            "step": np.arange(1, steps + 1),
            "cost": np.geomspace(2.3, 0.2, steps) if cost is None else np.asarray(cost),
            "grad_norm": (np.geomspace(1.0, 0.3, steps) if grad_norm is None
                          else np.asarray(grad_norm)),
            "update_ratio/fc1": ratio * np.exp(rng.normal(0, 0.2, steps)),
            "update_ratio/fc2": ratio * np.exp(rng.normal(0, 0.2, steps)),
            "eval_step": evals,
            "dev_cost": improving if dev_cost is None else np.asarray(dev_cost),
            "train_accuracy": np.linspace(0.5, 0.95, n_evals) if train_acc is None else train_acc,
            "dev_accuracy": np.linspace(0.5, 0.93, n_evals) if dev_acc is None else dev_acc,
        },
        "hparams": hparams,
        "alpha": hparams["lr"],  # a constant schedule: α now is α₀
        "events": list(events),
        "checkpoints": list(checkpoints),
        "branch": 0,
        "branches": {0: {"parent_branch": None, "fork_step": 0}},
    }


def rules(snapshot, **settings):
    return [s.rule for s in suggest(snapshot, AssistantSettings(**settings))]


def test_healthy_run_gets_no_suggestion():
    assert rules(fake_snapshot()) == []


def test_plateau_suggests_a_smaller_alpha():
    cost = np.concatenate([np.linspace(1, 0.3, 12), np.full(8, 0.3)])
    suggestions = suggest(fake_snapshot(dev_cost=cost))
    plateau = [s for s in suggestions if s.rule == "plateau"]
    assert plateau and plateau[0].action == {"update": {"lr": 5e-4}}
    assert "not improved" in plateau[0].evidence


def test_no_plateau_during_cooldown_after_a_change():
    cost = np.concatenate([np.linspace(1, 0.3, 12), np.full(8, 0.3)])
    changed = [{"kind": "change", "step": 950}]  # after evaluation 19 of 20: one since
    assert rules(fake_snapshot(dev_cost=cost, events=changed)) == []


def test_overfitting_suggests_l2_and_dropout():
    dev = np.concatenate([np.linspace(0.5, 0.9, 15), [0.89, 0.88, 0.87, 0.86, 0.85]])
    train = np.linspace(0.5, 0.99, 20)
    suggestions = [
        s for s in suggest(fake_snapshot(dev_acc=dev, train_acc=train)) if s.rule == "overfitting"
    ]
    actions = [s.action["update"] for s in suggestions]
    assert {"l2": 0.1} in actions and {"keep_prob": 0.8} in actions


@pytest.mark.parametrize(
    "ratio, rule, factor", [(0.05, "update_ratio_high", 0.1), (2e-6, "update_ratio_low", 10.0)]
)
def test_update_ratio_far_from_1e_3(ratio, rule, factor):
    suggestions = [s for s in suggest(fake_snapshot(ratio=ratio)) if s.rule == rule]
    assert suggestions
    assert suggestions[0].action["update"]["lr"] == pytest.approx(1e-3 * factor, rel=0.3)


def test_early_stopping_restores_the_best_checkpoint():
    dev = np.concatenate([np.linspace(0.5, 0.95, 8), np.full(12, 0.94)])
    checkpoints = [
        {"id": "ckpt-000003", "branch": 0, "step": 400, "metrics": {"dev_accuracy": 0.95}},
        {"id": "ckpt-000009", "branch": 0, "step": 900, "metrics": {"dev_accuracy": 0.94}},
    ]
    suggestions = [
        s
        for s in suggest(fake_snapshot(dev_acc=dev, checkpoints=checkpoints))
        if s.rule == "early_stopping"
    ]
    assert suggestions and suggestions[0].action == {"rollback": "ckpt-000003"}


def test_assistant_reads_a_real_snapshot(tmp_path):
    with Trainer(RunConfig(hidden=(16,), eval_every=10), tmp_path) as trainer:
        snap = run_steps(trainer, 30)
        assert suggest(snap) == [] or all(s.evidence for s in suggest(snap))


def test_autopilot_applies_a_suggestion_and_logs_it(tmp_path):
    """A run with α far too small: the ratio rule fires and the autopilot raises α."""
    with Trainer(RunConfig(hidden=(16,), eval_every=20, lr=1e-7), tmp_path) as trainer:
        trainer.update(autopilot=True)
        snap = run_steps(trainer, 140)
        autopilot = [e for e in snap.events if e["kind"] == "autopilot"]
        assert autopilot and autopilot[0]["rule"] == "update_ratio_low"
        change = [e for e in snap.events if e["kind"] == "change"][-1]
        assert change["source"] == "autopilot: update_ratio_low"
        assert snap.hparams["lr"] > 1e-7


def test_a_too_small_alpha_is_not_told_to_shrink_on_its_plateau():
    cost = np.concatenate([np.linspace(1, 0.9, 12), np.full(8, 0.9)])
    assert rules(fake_snapshot(dev_cost=cost, ratio=2e-6)) == ["update_ratio_low"]


def test_alpha_proposals_start_from_the_alpha_in_force_not_the_schedules_anchor(tmp_path):
    """Exponential decay, base 0.5: after 40 epochs α is ~1e-15 while hparams["lr"] (α₀,
    the anchor) is still 1e-3. "α too low" must propose a multiple of α now, and its title
    must say both."""
    config = RunConfig(dataset="blobs", dataset_params={"n_samples": 300}, hidden=(8,),
                       batch_size=240, eval_every=10, schedule="exponential",
                       schedule_params={"base": 0.5})
    with Trainer(config, tmp_path) as trainer:
        snap = run_steps(trainer, 150)  # one step an epoch: 150 epochs
        assert snap.hparams["lr"] == 1e-3 and snap.alpha < 1e-12 * 1.0001
        ratio_low = [s for s in suggest(snap) if s.rule == "update_ratio_low"]
        assert ratio_low, [s.title for s in suggest(snap)]
        proposal = ratio_low[0].action["update"]["lr"]
        assert snap.alpha < proposal <= 10 * snap.alpha
        assert f"{snap.alpha:.3g} → {proposal:.3g}" in ratio_low[0].title
        # applying it sets α now (the schedule re-anchors there), as the title says
        trainer.update(lr=proposal)
        assert trainer.snapshot().alpha == pytest.approx(proposal)


def converged_snapshot(dev=None, **curves):
    """Digits after a minute: every training example right, the cost 1e-6, the gradients
    a millionth of their early size, and so an update-to-weight ratio of 3e-18."""
    steps = 20 * 50
    if dev is None:
        dev = np.concatenate([np.linspace(0.5, 0.975, 8), np.full(12, 0.975)])
    return fake_snapshot(
        train_acc=np.concatenate([np.linspace(0.5, 1.0, 8), np.ones(12)]), dev_acc=dev,
        dev_cost=np.concatenate([np.linspace(1, 0.09, 8), np.full(12, 0.09)]),
        cost=np.geomspace(2.3, 1e-6, steps), grad_norm=np.geomspace(1.0, 1e-6, steps),
        ratio=3e-18, **curves)


def test_a_converged_run_is_told_to_stop_not_to_raise_alpha():
    suggestions = suggest(converged_snapshot())
    assert [s.rule for s in suggestions] == ["converged"]  # no α, plateau or ratio move
    converged = suggestions[0]
    assert "nothing left to learn" in converged.title and "change the problem" in converged.title
    assert "train accuracy 100.0%" in converged.evidence
    assert converged.action == {"pause": True}


def test_a_vanished_gradient_counts_as_converged_too():
    steps = 20 * 50
    snapshot = fake_snapshot(grad_norm=np.geomspace(1.0, 1e-7, steps), ratio=1e-12)
    suggestions = suggest(snapshot)
    assert [s.rule for s in suggestions] == ["converged"]
    assert "gradients vanished" in suggestions[0].title
    assert "gradient norm" in suggestions[0].evidence


def test_a_converged_run_may_still_go_back_to_a_better_checkpoint():
    checkpoints = [{"id": "ckpt-000004", "branch": 0, "step": 400,
                    "metrics": {"dev_accuracy": 0.98}}]
    dev = np.concatenate([np.linspace(0.5, 0.98, 8), np.full(12, 0.975)])  # best at 400
    suggestions = suggest(converged_snapshot(dev, checkpoints=checkpoints))
    assert [s.rule for s in suggestions] == ["converged", "early_stopping"]
    assert suggestions[1].action == {"rollback": "ckpt-000004"}


def test_early_stopping_never_restores_a_checkpoint_worse_than_now():
    """The run's initial checkpoint (dev 6.7 %) is on every lineage; now dev is 94 %."""
    dev = np.concatenate([np.linspace(0.5, 0.95, 8), np.full(12, 0.94)])
    checkpoints = [
        {"id": "ckpt-000000", "branch": 0, "step": 0, "metrics": {"dev_accuracy": 0.067}},
        {"id": "ckpt-000001", "branch": 0, "step": 300, "metrics": {"dev_accuracy": 0.94}},
        {"id": "ckpt-000002", "branch": 0, "step": 350, "metrics": {}},
    ]
    suggestions = [s for s in suggest(fake_snapshot(dev_acc=dev, checkpoints=checkpoints))
                   if s.rule == "early_stopping"]
    assert [s.action for s in suggestions] == [{"pause": True}]
    assert "no checkpoint on this lineage is better than now" in suggestions[0].evidence
