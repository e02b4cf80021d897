"""Trying a change on sandbox copies of the run before committing it.

- :func:`build_candidates` turns the look-ahead presets (α × ⅓ / 1 / 3, other
  optimizers, other schedules) and α's of one's own into candidate changes;
- :func:`look_ahead` runs k steps for each candidate from one state; every candidate
  sees the same mini-batches (same iterator state);
- :func:`lr_range_test` sweeps α exponentially (Smith's range test);
- :func:`switch_preview` shows the effective step size just before and just after an
  optimizer switch, fresh or carrying its moments.

Every one of them trains :class:`dlcore.sandbox.Sandbox` copies: the live run is never
touched, and ``Trainer.adopt`` commits a candidate's state if the user wants it.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from dlcore.downsample import smooth
from dlcore.hparams import RunConfig, validate_hparams
from dlcore.sandbox import Sandbox

#: α × factor presets; × 1 is the run's own settings, untouched (a decaying schedule too).
ALPHA_PRESETS = {"α × ⅓": 1 / 3, "α × 1 (unchanged)": 1.0, "α × 3": 3.0}
OPTIMIZER_PRESETS = {"Gradient descent": "gd", "Momentum": "momentum",
                     "Nesterov momentum": "nesterov", "RMSprop": "rmsprop", "Adam": "adam"}
SCHEDULE_PRESETS = {
    "Constant α": ("constant", {}),
    "Exponential decay (×0.9 per epoch)": ("exponential", {"base": 0.9}),
    "Staircase (×0.5 every 3 epochs)": ("staircase", {"factor": 0.5, "every": 3.0}),
    "1 / (1 + 0.5·epoch)": ("inverse_time", {"decay_rate": 0.5}),
}
PRESETS = [*ALPHA_PRESETS, *OPTIMIZER_PRESETS, *SCHEDULE_PRESETS]


def build_candidates(presets: Sequence[str], alphas: Sequence[float], alpha_now: float,
                     hparams: Mapping, carry: bool) -> tuple[list[dict], list[str]]:
    """Each preset's changes from the start's settings, then ``alphas`` of one's own;
    a candidate equal to another (or to the start's own settings) runs once.

    alpha_now: the α in force at the start (α presets scale it); hparams: the start's
    hyperparameters; carry: optimizer presets carry the moments that transfer.
    Returns ``(changes, labels)``.
    """
    chosen = []
    factors = [ALPHA_PRESETS[p] for p in presets if p in ALPHA_PRESETS]
    scaled = iter(alpha_candidates(alpha_now, [f for f in factors if f != 1.0]))
    for preset in presets:
        if preset in ALPHA_PRESETS:
            chosen.append((preset, {} if ALPHA_PRESETS[preset] == 1.0 else next(scaled)))
        elif preset in OPTIMIZER_PRESETS:
            optimizer = OPTIMIZER_PRESETS[preset]
            same = optimizer == hparams["optimizer"]
            chosen.append((preset, {} if same else {"optimizer": optimizer,
                                                    **({"carry_moments": True} if carry
                                                       else {})}))
        else:
            schedule, params = SCHEDULE_PRESETS[preset]
            same = schedule == hparams["schedule"] and params == dict(hparams["schedule_params"])
            chosen.append((preset, {} if same else {"schedule": schedule,
                                                    "schedule_params": dict(params)}))
    chosen += [(f"α = {alpha:.3g}", {"lr": alpha}) for alpha in alphas]
    changes, labels = [], []
    for label, change in chosen:
        if change in changes:
            continue
        changes.append(change)
        labels.append(label + (" · unchanged" if not change and "unchanged" not in label
                               else ""))
    return changes, labels


# ---------------------------------------------------------------------------
# Look-ahead
# ---------------------------------------------------------------------------


@dataclass
class Candidate:
    """One look-ahead candidate: its changes and what k steps with them gave."""

    changes: dict
    history: dict = field(default_factory=dict)
    diverged: str | None = None
    sandbox: Sandbox | None = None  # kept for commit (None when run in another process)
    payload: tuple | None = None

    @property
    def label(self) -> str:
        if not self.changes:
            return "unchanged"
        return ", ".join(f"{k}={_short(v)}" for k, v in self.changes.items())

    @property
    def final_dev_accuracy(self) -> float:
        dev = self.history.get("dev_accuracy", ())
        return float(dev[-1]) if len(dev) else float("nan")

    @property
    def final_cost(self) -> float:
        cost = self.history.get("cost", ())
        return float(np.mean(cost[-20:])) if len(cost) else float("nan")


def _short(value):
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def alpha_candidates(alpha: float, factors=(1 / 3, 1.0, 3.0)) -> list[dict]:
    """The classic look-ahead: α × {⅓, 1, 3}."""
    return [{"lr": alpha * f} for f in factors]


def _run_candidate(config, data, state, changes, steps, eval_every, progress=None):
    sandbox = Sandbox(config, data, state)
    if changes:
        sandbox.apply(**changes)
    sandbox.evaluate()  # the curves start at the common starting point
    sandbox.run(steps, eval_every=eval_every, progress=progress)
    if sandbox.step % eval_every:
        sandbox.evaluate()
    return sandbox


def _run_candidate_in_process(config, data, state, changes, steps, eval_every):
    sandbox = _run_candidate(config, data, state, changes, steps, eval_every)
    return sandbox.history(), sandbox.diverged, sandbox.commit_payload()


def look_ahead(
    config: RunConfig,
    data,
    state,
    candidates: list[dict],
    steps: int = 200,
    evaluations: int = 10,
    processes: int | None = None,
    progress=None,
) -> list[Candidate]:
    """Run ``steps`` steps from ``state`` for each candidate's changes.

    Every candidate starts from the same state and sees the same mini-batches.
    ``processes``: None picks automatically (separate processes when there
    are several cores and enough work to pay for starting them); 1 runs in
    this process. ``progress`` is called with a fraction in [0, 1].
    """
    hparams = Sandbox(config, data, state).hparams
    for changes in candidates:  # a bad candidate fails here, before any work
        validate_hparams(changes, hparams, len(data.y_train))
    eval_every = max(1, steps // max(1, evaluations))
    results = [Candidate(dict(c)) for c in candidates]
    if processes is None:
        work = (
            steps
            * len(candidates)
            * sum(v.size for k, v in state[0].items() if k.startswith("params/"))
        )
        processes = min(os.cpu_count() or 1, len(candidates)) if work > 2e9 else 1
    if processes <= 1:
        for i, result in enumerate(results):

            def report(done, i=i):
                if progress is not None:
                    progress((i + done / steps) / len(results))

            sandbox = _run_candidate(config, data, state, result.changes, steps, eval_every, report)
            result.history, result.diverged, result.sandbox = (
                sandbox.history(),
                sandbox.diverged,
                sandbox,
            )
        return results
    context = multiprocessing.get_context("spawn")  # never fork a process with threads
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        futures = {
            pool.submit(
                _run_candidate_in_process, config, data, state, r.changes, steps, eval_every
            ): r
            for r in results
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            result = futures[future]
            result.history, result.diverged, result.payload = future.result()
            if progress is not None:
                progress(done / len(results))
    return results


class _CommittedCandidate:
    def __init__(self, payload):
        self._payload = payload

    def commit_payload(self):
        return self._payload


def committable(candidate: Candidate):
    """What to pass to ``Trainer.adopt`` for a candidate, wherever it ran."""
    if candidate.sandbox is not None:
        return candidate.sandbox
    return _CommittedCandidate(candidate.payload)


# ---------------------------------------------------------------------------
# LR range test
# ---------------------------------------------------------------------------


def lr_range_test(
    config: RunConfig,
    data,
    state,
    steps: int = 200,
    low: float = 1e-6,
    high: float = 10.0,
    smoothing: float = 0.95,
    progress=None,
) -> dict:
    """Smith's LR range test on a sandbox: α grows exponentially from low to high.

    Stops early once the smoothed cost exceeds 4× its minimum (or diverges).
    Returns ``alphas``, ``costs``, ``smoothed`` and two suggestions:
    ``steepest`` (α where the smoothed cost falls fastest against log α) and
    ``min_tenth`` (one tenth of the α at the smoothed minimum).
    """
    if not (0 < low < high) or steps < 10:
        raise ValueError(
            f"need 0 < low < high and ≥ 10 steps, got low={low}, high={high}, steps={steps}"
        )
    alphas = np.exp(np.linspace(math.log(low), math.log(high), steps))
    sandbox = Sandbox(config, data, state)
    costs = []
    best = math.inf
    for i, alpha in enumerate(alphas):
        sandbox.run(1, alphas=[alpha])
        if sandbox.diverged:
            break
        cost = sandbox.last("cost")
        costs.append(cost)
        smoothed_now = smooth(np.array(costs), smoothing)[-1]
        best = min(best, smoothed_now)
        if progress is not None:
            progress((i + 1) / steps)
        if smoothed_now > 4 * best and i > 10:
            break
    costs = np.array(costs)
    alphas = alphas[: len(costs)]
    smoothed = smooth(costs, smoothing)
    minimum = int(np.argmin(smoothed))
    # Slope of the smoothed cost against log α over a window (~5% of the sweep), ignoring
    # the first 10% where the average is still warming up, and only before the minimum.
    window = max(2, steps // 20)
    log_alpha = np.log10(alphas)
    slope = np.full(len(costs), np.inf)
    slope[window:] = (smoothed[window:] - smoothed[:-window]) / (
        log_alpha[window:] - log_alpha[:-window]
    )
    first = max(window, steps // 10)
    search = slope[first : max(minimum, first + 1)]
    steepest = first + int(np.argmin(search)) - window // 2 if len(search) else minimum
    return {
        "alphas": alphas,
        "costs": costs,
        "smoothed": smoothed,
        "steepest": float(alphas[steepest]),
        "min_tenth": float(alphas[minimum] / 10),
        "minimum": float(alphas[minimum]),
    }


# ---------------------------------------------------------------------------
# Optimizer switch preview
# ---------------------------------------------------------------------------


def switch_preview(config: RunConfig, data, state, changes: dict, carry_moments: bool) -> dict:
    """Effective step (‖ΔW‖/‖W‖ per layer) of the next update without and with a switch.

    Both sandboxes start from the same state and take the same mini-batch, so
    the two numbers differ only by the optimizer: the jump (or its absence)
    that switching would cause.
    """
    before = Sandbox(config, data, state)
    before.run(1)
    after = Sandbox(config, data, state)
    after.apply(**changes, carry_moments=carry_moments)
    after.run(1)
    return {"before": before.effective_steps(), "after": after.effective_steps()}
