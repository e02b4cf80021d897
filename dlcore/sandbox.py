"""Trying a change on a copy of the live model before committing it.

A :class:`Sandbox` is a private copy of a run's complete state (weights, BN
buffers, optimizer moments, schedule, data-iterator and RNG state) that trains
with the very same step as the live run (a detached :class:`Trainer`: no
thread, nothing on disk). The live run is never touched; ``Trainer.adopt``
commits a sandbox's state as a new branch if the user wants it.

- :func:`look_ahead` runs k steps for several candidate settings from one
  state; every candidate sees the same mini-batches (same iterator state).
- :func:`lr_range_test` sweeps α exponentially (Smith's range test).
- :func:`switch_preview` shows the effective step size just before and just
  after an optimizer switch, fresh or carrying its moments.
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
from dataclasses import dataclass, field

import numpy as np

from dlcore.downsample import smooth
from dlcore.trainer import RunConfig, Trainer, _json_safe, validate_hparams


class Sandbox:
    """A copy of a run's state that trains in the caller's thread.

    ``Sandbox(config, data, state)`` where ``state = trainer.export_state()``.
    """

    def __init__(self, config: RunConfig, data, state: tuple[dict, dict]):
        arrays, meta = state
        self._trainer = Trainer.detached(config, data, arrays, meta)
        self.start_step = int(meta["info"]["step"])
        self.start_branch = int(meta["info"]["branch"])
        self.diverged: str | None = None

    @property
    def step(self) -> int:
        return self._trainer._step

    @property
    def hparams(self) -> dict:
        return dict(self._trainer._hparams)

    def apply(self, **changes) -> None:
        """Change hyperparameters as ``Trainer.update`` would (validated the same way)."""
        trainer = self._trainer
        validate_hparams(changes, trainer._settings(), len(trainer.data.y_train))
        trainer._do_update(changes, source="look-ahead")

    def run(self, steps: int, eval_every: int | None = None, alphas=None, progress=None) -> None:
        """Train ``steps`` steps (stopping early on divergence).

        alphas: optional per-step α overriding the schedule; progress: called
        with the number of steps done.
        """
        trainer = self._trainer
        if eval_every is not None:
            trainer._hparams["eval_every"] = int(eval_every)
        for i in range(steps):
            trainer._train_step(alpha=None if alphas is None else float(alphas[i]))
            if trainer._status == "diverged":
                self.diverged = trainer._divergence["cause"]
                break
            if progress is not None:
                progress(i + 1)

    def evaluate(self) -> None:
        """Record train/dev accuracy and cost now (in inference mode)."""
        self._trainer._evaluate()

    def history(self) -> dict[str, np.ndarray]:
        """Copies of what the sandbox recorded: per-step and per-evaluation columns."""
        branch = self._trainer._branches[self._trainer._branch]
        return {k: v.copy() for k, v in {**branch.steps.view(), **branch.evals.view()}.items()}

    def commit_payload(self):
        """What ``Trainer.adopt`` needs: the start point, final state, history and events."""
        trainer = self._trainer
        arrays, meta = trainer.state_copy()
        branch = trainer._branches[trainer._branch]
        events = [_json_safe(e) for e in branch.events]  # plain dicts: picklable
        return self.start_step, self.start_branch, arrays, meta, self.history(), events

    def effective_steps(self) -> dict[str, float]:
        """RMS of the last update of each weight matrix relative to its RMS (‖ΔW‖/‖W‖)."""
        steps = self._trainer._branches[self._trainer._branch].steps.view()
        return {
            k.removeprefix("update_ratio/"): float(v[-1])
            for k, v in steps.items()
            if k.startswith("update_ratio/") and len(v)
        }


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
    probe = Sandbox(config, data, state)
    for changes in candidates:  # a bad candidate fails here, before any work
        validate_hparams(changes, probe._trainer._settings(), len(data.y_train))
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
    trainer = sandbox._trainer
    costs = []
    best = math.inf
    for i, alpha in enumerate(alphas):
        trainer._train_step(alpha=float(alpha))
        if trainer._status == "diverged":
            break
        cost = float(trainer._branches[trainer._branch].steps.view()["cost"][-1])
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
