"""A private copy of a run's training state that trains without touching the run.

A :class:`Sandbox` holds its own :class:`dlcore.state.TrainingState` (weights, BN
buffers, optimizer moments, schedule, data-iterator and RNG state), built from
``Trainer.export_state()``, and trains it in the caller's thread with the live run's
very step (:func:`dlcore.loop.train_step`). Nothing is written to disk and the live run
never sees it; ``Trainer.adopt(sandbox)`` commits its state as a new branch.
:mod:`dlcore.lookahead` builds look-ahead comparisons, the LR range test and the
optimizer-switch preview on sandboxes.
"""

from __future__ import annotations

from dlcore import loop
from dlcore.branches import Branch
from dlcore.checkpoint import json_safe
from dlcore.history import Schemas
from dlcore.hparams import RUN_SETTINGS, RunConfig, validate_hparams
from dlcore.state import TrainingState


class Sandbox:
    """A copy of a run's state that trains in the caller's thread.

    ``Sandbox(config, data, state)`` where ``state = trainer.export_state()``.
    """

    def __init__(self, config: RunConfig, data, state: tuple[dict, dict]):
        arrays, meta = state
        self.config, self.data = config, data
        self.state = TrainingState.from_checkpoint(arrays, meta, config, data)
        self.start_step = int(meta["info"]["step"])
        self.start_branch = int(meta["info"]["branch"])
        self.diverged: str | None = None
        self._history = Branch(Schemas.of(self.state.network))

    @property
    def step(self) -> int:
        return self.state.step

    @property
    def hparams(self) -> dict:
        return dict(self.state.hparams)

    def apply(self, **changes) -> None:
        """Change hyperparameters as ``Trainer.update`` would (validated the same way)."""
        changes = validate_hparams(changes, self.state.hparams, len(self.data.y_train))
        carry_moments = changes.pop("carry_moments", False)
        for name in RUN_SETTINGS:  # the live run's settings: nothing to do in a sandbox
            changes.pop(name, None)
        if changes:
            details = self.state.change(changes, carry_moments)
            self._history.record_event("change", self.state.step, self.start_branch,
                                       **details, source="look-ahead")

    def run(self, steps: int, eval_every: int | None = None, alphas=None, progress=None) -> None:
        """Train ``steps`` steps, evaluating at every multiple of ``eval_every`` (default:
        the run's), stopping early on divergence (``diverged`` says why).

        alphas: optional per-step α overriding the schedule; progress: called with the
        number of steps done.
        """
        eval_every = int(eval_every or self.state.hparams["eval_every"])
        for i in range(steps):
            alpha = None if alphas is None else float(alphas[i])
            result = loop.train_step(self.state, self.data, alpha,
                                     divergence_factor=self.config.divergence_factor)
            if isinstance(result, loop.Divergence):
                self.diverged = result.cause
                break
            self._history.record_step(result)
            if self.state.step % eval_every == 0:
                self.evaluate()
            if progress is not None:
                progress(i + 1)

    def evaluate(self) -> None:
        """Record train/dev accuracy and cost now (in inference mode)."""
        self._history.record_evaluation(loop.evaluate(self.state, self.data))

    def last(self, column: str) -> float:
        """The newest recorded value of a per-step column, e.g. ``"cost"``."""
        return float(self._history.steps.last(column))

    def history(self) -> dict:
        """Copies of what the sandbox recorded: per-step and per-evaluation columns."""
        return {k: v.copy() for k, v in self._history.history().items()}

    def commit_payload(self) -> tuple:
        """What ``Trainer.adopt`` needs: the start point, final state, history and events."""
        arrays, meta = self.state.to_checkpoint()
        events = [json_safe(e) for e in self._history.events]  # plain dicts: picklable
        return self.start_step, self.start_branch, arrays, meta, self.history(), events

    def effective_steps(self) -> dict[str, float]:
        """‖ΔW‖/‖W‖ of the last update of each weight matrix, by layer."""
        steps = self._history.steps.view()
        return {k.removeprefix("update_ratio/"): float(v[-1])
                for k, v in steps.items() if k.startswith("update_ratio/") and len(v)}
