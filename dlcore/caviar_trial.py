"""One caviar trial: what a search runs, how long, and the file a trial's state goes in.

- :class:`Plan` is a search as the user set it up: the space, how many trials, the
  budget per trial (steps or epochs) and how often a trial reports, the search
  algorithm, early stopping (ASHA), the seed. Checked on construction.
- :func:`train_trial` trains one point of the space from step 0 with the live run's own
  step (a :class:`dlcore.sandbox.Sandbox`, so :func:`dlcore.loop.train_step` and
  :func:`dlcore.loop.evaluate`) and yields a :class:`Report` at each evaluation.
- :func:`write_trial_file` / :func:`read_trial_file`: a trial's state and history in one
  ``.npz`` (``state/…`` and ``history/…`` arrays, JSON metadata; no pickle), the format
  of Ray Tune's trial checkpoints and of the copies kept in the run's folder.

Ray never appears here: a Ray worker imports this module and calls :func:`train_trial`
(:mod:`dlcore.caviar_ray`); a benchmark can call it bare.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlcore import checkpoint as ckptio
from dlcore.hparams import RunConfig
from dlcore.sandbox import Sandbox
from dlcore.search_space import SearchSpace
from dlcore.state import TrainingState

TRIAL_FORMAT = "panda-caviar-trial-v1"
ALGORITHMS = {"random": "Random search (dlcore.sampling)",
              "tpe": "Bayesian optimisation: Optuna's TPE"}
UNITS = ("steps", "epochs")
MAX_TRIALS = 10_000
#: Metrics a trial reports at each evaluation (Ray Tune's result keys).
METRICS = ("step", "progress", "dev_accuracy", "dev_cost", "train_accuracy", "train_cost",
           "cost")


@dataclass(frozen=True)
class Plan:
    """A search: ``trials`` points of ``space``, each trained ``budget`` steps or epochs
    (``unit``) and evaluated ``evaluations`` times on the way (each evaluation is a
    report, and ASHA decides at reports).

    algorithm: "random" (points drawn with :mod:`dlcore.sampling` from ``seed``) or "tpe"
    (Optuna's TPE asks for each point). early_stopping: ASHA stops a trial whose dev
    accuracy at a rung (``grace`` × η^k budget units) is below the best 1/η of the trials
    that reached it. max_concurrent: trials at once (None: one per CPU of the cluster).
    keep_states: how many trials (the best) keep their trained state on disk.
    """

    space: SearchSpace
    trials: int = 16
    budget: float = 500
    unit: str = "steps"
    evaluations: int = 10
    algorithm: str = "random"
    early_stopping: bool = True
    reduction_factor: int = 3
    grace: float | None = None
    seed: int = 0
    max_concurrent: int | None = None
    keep_states: int = 8

    def __post_init__(self):
        def whole(name, value, low, high=None):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
                    value < low or (high is not None and value > high):
                bound = f"between {low} and {high}" if high is not None else f"≥ {low}"
                raise ValueError(f"{name} must be a whole number {bound}, got {value!r}")

        if isinstance(self.trials, (int, np.integer)) and self.trials == 0:
            raise ValueError("A search needs at least one trial (the number of trials is 0).")
        whole("number of trials", self.trials, 1, MAX_TRIALS)
        if self.unit not in UNITS:
            raise ValueError(f"budget unit must be one of {UNITS}, got {self.unit!r}")
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, float)) or \
                not (math.isfinite(self.budget) and self.budget > 0):
            raise ValueError(f"budget per trial must be a number > 0, got {self.budget!r}")
        if self.unit == "steps" and not float(self.budget).is_integer():
            raise ValueError(f"a budget in steps must be whole, got {self.budget!r}")
        whole("evaluations per trial", self.evaluations, 1, 1000)
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {list(ALGORITHMS)}, got "
                             f"{self.algorithm!r}")
        whole("reduction factor η", self.reduction_factor, 2, 10)
        if self.grace is not None and not (isinstance(self.grace, (int, float)) and
                                           0 < self.grace <= self.budget):
            raise ValueError(f"the grace period must be in (0, budget = {self.budget:g}], "
                             f"got {self.grace!r}")
        whole("seed", self.seed, 0)
        if self.max_concurrent is not None:
            whole("trials at once", self.max_concurrent, 1, 1024)
        whole("states kept", self.keep_states, 0, MAX_TRIALS)

    @property
    def grace_period(self) -> float:
        """Budget units before ASHA's first decision: as given, else budget / η² (two rungs
        before the end)."""
        return self.grace if self.grace is not None else self.budget / self.reduction_factor**2

    def rungs(self) -> list[float]:
        """Where ASHA decides (budget units): grace · η^k below the budget."""
        rungs, at = [], self.grace_period
        while at < self.budget - 1e-9:
            rungs.append(at)
            at *= self.reduction_factor
        return rungs

    def steps_for(self, batch_size: int, n_train: int) -> tuple[int, int]:
        """``(steps, eval_every)`` of a trial with this mini-batch size."""
        per_epoch = max(1, n_train // batch_size)  # the engine drops a short tail
        steps = int(self.budget) if self.unit == "steps" else math.ceil(self.budget * per_epoch)
        return steps, max(1, math.ceil(steps / self.evaluations))

    def progress(self, step: int, batch_size: int, n_train: int) -> float:
        """Budget units done after ``step`` steps (ASHA's clock)."""
        return float(step) if self.unit == "steps" else step / max(1, n_train // batch_size)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "space": self.space.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping) -> Plan:
        try:
            return cls(**{**d, "space": SearchSpace.from_dict(d["space"])})
        except (KeyError, TypeError) as error:
            raise ValueError(f"not a search plan ({error})") from None


@dataclass(frozen=True)
class Report:
    """What a trial says at an evaluation: ``metrics`` (:data:`METRICS`, plus
    ``diverged``: the cause or ""), and its state and history there (None once
    diverged: the step that would diverge was refused, nothing is worth keeping)."""

    metrics: dict
    state: tuple[dict, dict] | None
    history: dict | None


def fresh_state(config: RunConfig, data) -> tuple[dict, dict]:
    """``(arrays, meta)`` of step 0 of a run of ``config``: the start of every trial, and
    the very state a run of the same config starts from."""
    return _on_branch_0(TrainingState.fresh(config, data))


def _on_branch_0(state: TrainingState) -> tuple[dict, dict]:
    """A trial's state as a checkpoint holds it: every trial grows from step 0 of
    branch 0, so that is where it can be adopted."""
    arrays, meta = state.to_checkpoint()
    meta["info"]["branch"] = 0
    return arrays, meta


def train_trial(config: RunConfig, data, plan: Plan,
                resume: tuple[dict, dict, dict] | None = None) -> Iterator[Report]:
    """Train one trial, yielding a :class:`Report` after each evaluation.

    config: the trial's RunConfig (``SearchSpace.config_for``); data: the run's Dataset.
    resume: ``(arrays, meta, history)`` of a checkpoint of this trial to go on from (Ray
    Tune restoring a trial); the history is carried over in front of the new rows.
    Stops at the budget, or after the report that says it diverged.
    """
    n_train = len(data.y_train)
    steps, eval_every = plan.steps_for(config.batch_size, n_train)
    if resume is None:
        sandbox, before = Sandbox(config, data, fresh_state(config, data)), None
    else:
        arrays, meta, before = resume
        sandbox = Sandbox(config, data, (arrays, meta))
    while sandbox.step < steps:
        # 1) up to the next evaluation point (a multiple of eval_every, or the end)
        chunk = min(eval_every - sandbox.step % eval_every, steps - sandbox.step)
        sandbox.run(chunk, eval_every=eval_every)
        if sandbox.diverged:
            history = _joined(before, sandbox.history())
            yield Report(_metrics(history, sandbox.step, plan.progress(
                sandbox.step, config.batch_size, n_train), sandbox.diverged), None, None)
            return
        if sandbox.step % eval_every:
            sandbox.evaluate()
        # 2) the report, with the state and the whole history so far
        history = _joined(before, sandbox.history())
        progress = plan.progress(sandbox.step, config.batch_size, n_train)
        yield Report(_metrics(history, sandbox.step, progress), _on_branch_0(sandbox.state),
                     history)


def _metrics(history: Mapping, step: int, progress: float, diverged: str = "") -> dict:
    """The newest evaluation's numbers, the smoothed mini-batch cost, where it stands."""
    evals = {k: history[k] for k in ("dev_accuracy", "dev_cost", "train_accuracy",
                                     "train_cost")}
    metrics = {k: float(v[-1]) if len(v) else 0.0 for k, v in evals.items()}
    smoothed = history["cost_smoothed"]
    metrics.update(step=step, progress=progress,
                   cost=float(smoothed[-1]) if len(smoothed) else math.nan,
                   diverged=diverged)
    if diverged and not len(evals["dev_cost"]):
        metrics["dev_cost"] = math.inf  # never evaluated: no dev accuracy to speak of
    return metrics


def _joined(before: dict | None, after: dict) -> dict:
    """History columns: a resumed trial's earlier rows, then the new ones."""
    if not before:
        return after
    return {k: np.concatenate([before[k], v]) if k in before else v for k, v in after.items()}


# ---------------------------------------------------------------------------
# The trial file: state + history, one .npz
# ---------------------------------------------------------------------------


def write_trial_file(path: Path, state: tuple[dict, dict], history: Mapping,
                     info: Mapping) -> None:
    """``state/<key>`` and ``history/<column>`` arrays plus JSON meta (the state's meta,
    and ``info``: trial number, point, metrics …), written atomically."""
    arrays, meta = state
    payload = {f"state/{k}": v for k, v in arrays.items()}
    payload.update({f"history/{k}": np.asarray(v) for k, v in history.items()})
    ckptio.write_atomic(Path(path), payload, {"format": TRIAL_FORMAT, "state": meta,
                                              "trial": ckptio.json_safe(dict(info))})


def read_trial_file(path: Path) -> tuple[tuple[dict, dict], dict, dict]:
    """``((arrays, meta), history, info)`` from :func:`write_trial_file`'s file.

    CheckpointError (a ValueError) for a damaged or foreign file; loaded without pickle.
    """
    payload, meta = ckptio.read(Path(path), TRIAL_FORMAT)
    try:
        arrays = {k.removeprefix("state/"): v for k, v in payload.items()
                  if k.startswith("state/")}
        history = {k.removeprefix("history/"): v for k, v in payload.items()
                   if k.startswith("history/")}
        return (arrays, meta["state"]), history, meta["trial"]
    except (KeyError, TypeError) as error:
        raise ckptio.CheckpointError(f"{Path(path).name}: incomplete trial file ({error})") \
            from None
