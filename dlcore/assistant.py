"""The babysitter's assistant: rules that read a run's curves and suggest a change.

Each rule looks at a snapshot (``history``, ``events``, ``checkpoints``,
``hparams``, ``alpha``) and returns a :class:`Suggestion` with its evidence and an action
a person can apply with one click (and undo through the pre-change
checkpoint), or that the autopilot applies itself.

- converged: train accuracy ~100 % and the mini-batch cost ~0, or a gradient norm that
  vanished next to its early values → stop, or change the problem. No α, plateau or
  ratio proposal then: with nothing left to learn, a tiny update-to-weight ratio means
  the gradients vanished, not that α is too low;
- plateau: the dev cost stopped improving → reduce α (ReduceLROnPlateau-like,
  with patience and cooldown);
- overfitting: dev accuracy falls while train accuracy rises → L2 λ or dropout;
- update-to-weight ratio far from ~1e-3 → α too high or too low;
- early stopping: dev accuracy not improved for N evaluations → restore the best
  checkpoint, never one worse than the run now (else pause).

Every α proposal is relative to the α in force (``snapshot["alpha"]``, after any decay),
not to ``hparams["lr"]``, the α₀ the schedule was anchored at; applying it sets α now
(the schedule re-anchors there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class AssistantSettings:
    patience: int = 5  # evaluations without improvement before a plateau counts
    cooldown: int = 3  # evaluations after any change during which no rule fires
    min_delta: float = 0.01  # relative improvement of the dev cost that counts
    lr_factor: float = 0.5  # plateau: α × this
    overfit_window: int = 5  # evaluations the overfitting trend is read over
    overfit_drop: float = 0.01  # dev accuracy drop (absolute) that counts
    ratio_target: float = 1e-3  # the classic update-to-weight ratio
    ratio_tolerance: float = 10.0  # "far" means more than this factor away
    ratio_steps: int = 100  # steps the ratio's median is taken over
    early_stop_patience: int = 10  # evaluations without a new best dev accuracy
    converged_accuracy: float = 0.999  # train accuracy that leaves nothing to learn …
    converged_cost: float = 1e-3  # … with a median mini-batch cost (ratio_steps) below this
    vanished_gradient: float = 1e-4  # recent / early median gradient norm that has vanished


@dataclass(frozen=True)
class Suggestion:
    """One suggestion. ``action`` is {"update": {...}} or {"rollback": id} or {"pause": True}."""

    rule: str
    title: str
    evidence: str
    action: Mapping = field(default_factory=dict)


def suggest(snapshot, settings: AssistantSettings = AssistantSettings()) -> list[Suggestion]:
    """Every rule's suggestion for this snapshot (an empty list for a healthy run)."""
    history, hparams = snapshot["history"], snapshot["hparams"]
    eval_steps = np.asarray(history.get("eval_step", ()))
    if _in_cooldown(snapshot, eval_steps, settings):
        return []
    # 1) Converged: no α, plateau or ratio rule can help, and their evidence misleads
    # (a ratio of 1e-18 is a vanished gradient, not a too small α).
    converged = _converged(snapshot, history, hparams, settings)
    if converged:
        return converged + [s for s in _early_stopping(snapshot, history, hparams, settings)
                            if "rollback" in s.action]  # converged already says "stop"
    # 2) The ratio rule first: when α is far too small the cost also plateaus, and
    # "reduce α" would then be exactly wrong.
    suggestions = _update_ratio(snapshot, history, hparams, settings)
    too_low = any(s.rule == "update_ratio_low" for s in suggestions)
    for rule in (_plateau, _overfitting, _early_stopping):
        if rule is _plateau and too_low:
            continue
        suggestions.extend(rule(snapshot, history, hparams, settings))
    return suggestions


def _in_cooldown(snapshot, eval_steps, settings) -> bool:
    """True within `cooldown` evaluations of the last hyperparameter change or rollback."""
    changes = [e["step"] for e in snapshot["events"] if e["kind"] in ("change", "rollback")]
    if not changes:
        return False
    since = int(np.sum(eval_steps > max(changes)))
    return since < settings.cooldown


def _converged(snapshot, history, hparams, settings):
    """Nothing left to learn: the training set is fitted (train accuracy ~100 %, the
    mini-batch cost ~0), or the gradient norm vanished next to its early values."""
    n = settings.ratio_steps
    cost = np.asarray(history.get("cost", ()))
    train = np.asarray(history.get("train_accuracy", ()))
    if len(cost) < n or not len(train):
        return []
    recent_cost = float(np.median(cost[-n:]))
    fitted = (float(train[-1]) >= settings.converged_accuracy
              and recent_cost <= settings.converged_cost)
    grad = np.asarray(history.get("grad_norm", ()))
    early = recent = None
    if len(grad) >= 2 * n:  # an early window and a recent one that don't overlap
        early, recent = float(np.median(grad[:n])), float(np.median(grad[-n:]))
    vanished = early is not None and early > 0 and recent <= settings.vanished_gradient * early
    if not (fitted or vanished):
        return []
    evidence = [f"train accuracy {float(train[-1]):.1%}, median mini-batch cost "
                f"{recent_cost:.2g} over the last {n} steps"]
    if early is not None:
        evidence.append(f"gradient norm {recent:.2g}, {recent / early:.1g}× its early "
                        f"{early:.2g}" if early > 0 else f"gradient norm {recent:.2g}")
    dev = np.asarray(history.get("dev_accuracy", ()))
    if len(dev):
        evidence.append(f"dev accuracy {float(dev[-1]):.1%}")
    title = ("Converged: nothing left to learn on this data; stop, or change the problem"
             if fitted else
             "Converged: the gradients vanished; stop, or change the problem")
    return [
        Suggestion(
            "converged",
            title,
            "; ".join(evidence) + ". More steps, another α or a cut at a plateau can't "
            "help now: pause here, or change the problem (more or harder data, another "
            "network, regularisation if dev accuracy lags).",
            {"pause": True},
        )
    ]


def _plateau(snapshot, history, hparams, settings):
    dev_cost = np.asarray(history.get("dev_cost", ()))
    if len(dev_cost) <= settings.patience:
        return []
    best_before = float(np.min(dev_cost[: -settings.patience]))
    recent_best = float(np.min(dev_cost[-settings.patience :]))
    if recent_best < best_before * (1 - settings.min_delta):
        return []
    alpha = snapshot["alpha"]
    new_lr = alpha * settings.lr_factor
    steps = history["eval_step"]
    return [
        Suggestion(
            "plateau",
            f"Plateau: reduce α {alpha:.3g} → {new_lr:.3g}",
            f"dev cost has not improved by {settings.min_delta:.0%} in the last "
            f"{settings.patience} "
            f"evaluations (steps {steps[-settings.patience]}–{steps[-1]}): best {recent_best:.4g} "
            f"vs {best_before:.4g} before",
            {"update": {"lr": new_lr}},
        )
    ]


def _overfitting(snapshot, history, hparams, settings):
    train = np.asarray(history.get("train_accuracy", ()))
    dev = np.asarray(history.get("dev_accuracy", ()))
    window = settings.overfit_window
    if len(dev) < window:
        return []
    dev_window, train_window = dev[-window:], train[-window:]
    dev_drop = float(np.max(dev_window) - dev_window[-1])
    train_rise = float(train_window[-1] - train_window[0])
    if dev_drop < settings.overfit_drop or train_rise <= 0:
        return []
    evidence = (
        f"over the last {window} evaluations dev accuracy fell {dev_drop:.1%} from its "
        f"best while train accuracy rose {train_rise:.1%} (gap now "
        f"{train_window[-1] - dev_window[-1]:.1%})"
    )
    l2 = hparams["l2"]
    new_l2 = 0.1 if l2 == 0 else l2 * 3
    out = [
        Suggestion(
            "overfitting",
            f"Overfitting: raise L2 λ to {new_l2:.3g}",
            evidence,
            {"update": {"l2": new_l2}},
        )
    ]
    if hparams["keep_prob"] > 0.55:
        keep_prob = round(max(0.5, hparams["keep_prob"] - 0.2), 2)
        out.append(
            Suggestion(
                "overfitting",
                f"Overfitting: dropout, keep-prob {keep_prob}",
                evidence,
                {"update": {"keep_prob": keep_prob}},
            )
        )
    return out


def _update_ratio(snapshot, history, hparams, settings):
    columns = [
        np.asarray(v[-settings.ratio_steps :])
        for k, v in history.items()
        if k.startswith("update_ratio/")
    ]
    if not columns or len(columns[0]) < settings.ratio_steps:
        return []
    ratio = float(np.median(np.mean(columns, axis=0)))
    target, tolerance = settings.ratio_target, settings.ratio_tolerance
    if target / tolerance <= ratio <= target * tolerance or not np.isfinite(ratio) or ratio <= 0:
        return []
    factor = float(np.clip(target / ratio, 0.1, 10.0))
    alpha = snapshot["alpha"]
    new_lr = alpha * factor
    too = "high" if ratio > target else "low"
    return [
        Suggestion(
            f"update_ratio_{too}",
            f"α looks too {too}: try α {alpha:.3g} → {new_lr:.3g}",
            f"median update-to-weight ratio ‖ΔW‖/‖W‖ over the last {settings.ratio_steps} steps is "
            f"{ratio:.2g}, more than {tolerance:g}× from the usual ~{target:g}",
            {"update": {"lr": new_lr}},
        )
    ]


def _early_stopping(snapshot, history, hparams, settings):
    dev = np.asarray(history.get("dev_accuracy", ()))
    patience = settings.early_stop_patience
    if len(dev) <= patience:
        return []
    if np.max(dev[-patience:]) >= np.max(dev[:-patience]):
        return []
    best_index = int(np.argmax(dev))
    best_step = int(history["eval_step"][best_index])
    now = float(dev[-1])
    # Only a checkpoint better than the run now: restoring a worse one would lose ground.
    candidates = [c for c in lineage_checkpoints(snapshot)
                  if (c.get("metrics") or {}).get("dev_accuracy", -1.0) > now]
    best = max(candidates, key=lambda c: (c["metrics"]["dev_accuracy"], -c["step"]), default=None)
    evidence = (
        f"dev accuracy has not beaten {dev[best_index]:.2%} (step {best_step}) in "
        f"the last {patience} evaluations"
    )
    if best is None:
        return [Suggestion("early_stopping", "Early stopping: pause",
                           f"{evidence}; no checkpoint on this lineage is better than now "
                           f"({now:.2%}), so there is nothing better to restore",
                           {"pause": True})]
    return [
        Suggestion(
            "early_stopping",
            f"Early stopping: restore {best['id']} (dev {best['metrics']['dev_accuracy']:.2%})",
            evidence,
            {"rollback": best["id"]},
        )
    ]


def lineage_checkpoints(snapshot) -> list:
    """Checkpoints on the active branch's lineage: its own and its ancestors' up to each fork."""
    limits, branch, limit = {}, snapshot["branch"], None
    while branch is not None:
        limits[branch] = limit
        info = snapshot["branches"].get(branch)
        if info is None:
            break
        branch, limit = info["parent_branch"], info["fork_step"]
    return [
        c
        for c in snapshot["checkpoints"]
        if c["branch"] in limits
        and (limits[c["branch"]] is None or c["step"] <= limits[c["branch"]])
    ]
