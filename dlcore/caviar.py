"""Caviar: many models in parallel, for when there is the compute (the course's
"Pandas vs. Caviar"), and the hand-off of the best one to babysitting.

A :class:`Study` is every search round of one run, kept in the run's folder under
``caviar/round-<n>/`` (:mod:`dlcore.caviar_rounds`: JSON and ``.npz``, written
atomically, read back after a server restart).

- :meth:`Study.start` runs a :class:`dlcore.caviar_trial.Plan` as a new round in a
  background :class:`Search` thread (Ray Tune does the work, :mod:`dlcore.caviar_ray`);
  :meth:`Study.cancel` stops every trial.
- :meth:`Study.narrowed_plan`: coarse to fine, the next round's plan with every range
  narrowed around the best K trials.
- :meth:`Study.handoff`: a trial's config, with its trained state if kept, as a
  :class:`Handoff` that ``Trainer.adopt`` takes as a new branch (same architecture) or
  ``Trainer(config, …, start_from=handoff.state)`` as a new run.

Nothing here imports Ray; :func:`ray_missing` says how to install it.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlcore import checkpoint as ckptio
from dlcore.caviar_rounds import Round, RoundView
from dlcore.caviar_trial import Plan, fresh_state, read_trial_file
from dlcore.data import BUILTIN_DATASETS
from dlcore.hparams import RunConfig
from dlcore.sandbox import Sandbox
from dlcore.search_space import same_architecture

INSTALL_COMMAND = "pip install -r requirements-caviar.txt"
ROUND_NAME = re.compile(r"^round-([0-9]{1,6})\Z")


def ray_missing() -> str | None:
    """Why caviar can't run here (Ray Tune or Optuna not installed), or None."""
    missing = [name for name, module in (("ray[tune]", "ray"), ("optuna", "optuna"))
               if importlib.util.find_spec(module) is None]
    if not missing:
        return None
    return (f"Caviar needs {' and '.join(missing)}, which Panda's light install leaves out. "
            f"Install it with `{INSTALL_COMMAND}` and restart the server.")


# ---------------------------------------------------------------------------
# The search thread
# ---------------------------------------------------------------------------

#: run_search(plan, base, data, name, on_events, cancelled) -> session, as in caviar_ray.
Backend = Callable


def _ray_backend(*args):
    from dlcore import caviar_ray

    return caviar_ray.run_search(*args)


class Search:
    """One round's search in a background thread of the server: Ray Tune runs the
    trials; this thread records what they report (:meth:`Round.absorb`)."""

    def __init__(self, round_: Round, base: RunConfig, data, backend: Backend | None = None):
        self.round, self.base, self.data = round_, base, data
        self.backend = backend or _ray_backend
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True,
                                        name=f"panda-caviar-round-{round_.number}")

    def start(self) -> None:
        self._thread.start()

    def cancel(self) -> None:
        """Stop every trial; the round ends "cancelled" once Ray has stopped them."""
        if self.running:
            self._cancel.set()
            self.round.set_status("cancelling", "Stopping every trial…")

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        round_ = self.round
        try:
            round_.set_status("starting", "Starting Ray (the first search of a server "
                                          "takes a while)…")
            session = self.backend(round_.plan, self.base, self.data,
                                   f"round-{round_.number}", self._absorb,
                                   self._cancel.is_set)
        except Exception as error:  # Ray missing or unreachable, Tune's own errors, disk
            message = (str(error) or type(error).__name__).rstrip(". ")
            round_.finish("failed", f"The search stopped: {message}. The run was not "
                                    "touched.")
            return
        session = dataclasses.asdict(session) if dataclasses.is_dataclass(session) else None
        status = "cancelled" if self._cancel.is_set() else "finished"
        with round_.lock:
            if session:
                round_.header["session"] = session
        round_.finish(status, "Cancelled: every trial was stopped." if status == "cancelled"
                      else "")

    def _absorb(self, events: list) -> None:
        round_ = self.round
        if round_.header["status"] == "starting" and not self._cancel.is_set():
            round_.set_status("running")
        round_.absorb(events)


# ---------------------------------------------------------------------------
# Every round of a run
# ---------------------------------------------------------------------------


class Study:
    """Every caviar round of one run (``<run folder>/caviar/``) and the search running.

    Thread-safe; one per run folder per server (the page keeps it cached).
    """

    def __init__(self, run_dir, backend: Backend | None = None):
        self.run_dir = Path(run_dir)
        self.folder = self.run_dir / "caviar"
        self.backend = backend
        self._lock = threading.Lock()
        self._search: Search | None = None
        self.rounds: dict[int, Round] = {}
        #: Round folders that could not be read: (name, reason).
        self.damaged: list[tuple[str, str]] = []
        self._load()

    def _load(self) -> None:
        if not self.folder.is_dir() or self.folder.is_symlink():
            return
        for path in sorted(self.folder.iterdir()):
            match = ROUND_NAME.match(path.name)
            if not match or path.is_symlink() or not path.is_dir():
                continue
            try:
                self.rounds[int(match.group(1))] = Round.load(path)
            except ValueError as error:
                self.damaged.append((path.name, str(error)))

    def views(self) -> list[RoundView]:
        """Every round, oldest first."""
        with self._lock:
            rounds = [self.rounds[n] for n in sorted(self.rounds)]
        return [r.view() for r in rounds]

    @property
    def running(self) -> bool:
        return self._search is not None and self._search.running

    def start(self, plan: Plan, base: RunConfig, data, origin: Mapping | None = None) -> int:
        """Start ``plan`` as the next round in the background; returns its number.

        ValueError (nothing started) if a search is running or the plan's space does not
        fit the run; OSError if the round's folder can't be written.
        """
        plan.space.check_for(base, len(data.y_train))
        with self._lock:
            if self.running:
                raise ValueError("A search is running; wait for it or cancel it first.")
            taken = [*self.rounds, *(int(ROUND_NAME.match(name).group(1))
                                     for name, _ in self.damaged if ROUND_NAME.match(name))]
            number = max(taken, default=0) + 1
            round_ = Round.create(self.folder / f"round-{number}", number, plan, base, origin)
            self.rounds[number] = round_
            self._search = Search(round_, base, data, self.backend)
            self._search.start()
        return number

    def cancel(self) -> None:
        with self._lock:
            search = self._search
        if search is not None:
            search.cancel()

    def close(self, timeout: float = 60.0) -> None:
        """Cancel a running search and wait for it (the server letting the study go)."""
        search = self._search
        if search is not None and search.running:
            search.cancel()
            search.join(timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Until the running search (if any) has ended."""
        search = self._search
        if search is not None:
            search.join(timeout)

    def view(self, number: int) -> RoundView:
        with self._lock:
            round_ = self.rounds.get(number)
        if round_ is None:
            raise ValueError(f"there is no round {number}")
        return round_.view()

    def narrowed_plan(self, number: int, best: int) -> Plan:
        """Coarse to fine: round ``number``'s plan with every searched range narrowed
        around its ``best`` trials (by best dev accuracy) and a new seed."""
        view = self.view(number)
        ranked = view.ranked()
        space = view.plan.space.narrowed([t["point"] for t in ranked],
                                         [t["best_dev_accuracy"] for t in ranked], best)
        if space == view.plan.space:
            raise ValueError(f"the best {best} trials of round {number} spread over every "
                             "range, so narrowing around them changes none: narrow around "
                             "fewer of them, or start a round from the form")
        return dataclasses.replace(view.plan, space=space, seed=view.plan.seed + 1)

    def handoff(self, number: int, trial_number: int, data) -> Handoff:
        """Round ``number``'s trial as a :class:`Handoff`: its config, and its trained
        state if kept (else step 0 of its config). ValueError if it has no point yet or
        its state file is damaged."""
        view = self.view(number)
        trial = view.trial(trial_number)
        if trial["point"] is None:
            raise ValueError(f"trial {trial_number} of round {number} has not started yet")
        point = {k: v for k, v in trial["point"].items()}
        config = view.plan.space.config_for(view.base, point)
        note = f"from caviar round {number} trial {trial_number}"
        if trial["state"]:
            try:
                state, history, info = read_trial_file(self.rounds[number].folder /
                                                       trial["state"])
            except ckptio.CheckpointError as error:
                raise ValueError(f"{note}: its state can't be used ({error}); babysit "
                                 "another trial") from None
            if dict(info.get("point", {})) != point:
                raise ValueError(f"{trial['state']} holds another trial's state")
            trained = True
        else:
            state = fresh_state(config, data)
            history = Sandbox(config, data, state).history()  # no rows: the columns only
            trained = False
        return Handoff(number, trial_number, config, state, history, trained, note,
                       _change_event(view.base, config, note))


def _change_event(base: RunConfig, config: RunConfig, note: str) -> dict:
    """The branch's first event: the trial's hyperparameters against the run's start."""
    old, new = base.initial_hparams(), config.initial_hparams()
    changes = {k: [old[k], new[k]] for k in new if old.get(k) != new[k]}
    return {"kind": "change", "step": 0, "branch": 0, "time": time.time(),
            "changes": ckptio.json_safe(changes), "alpha": [old["lr"], new["lr"]],
            "source": note}


@dataclass(frozen=True)
class Handoff:
    """A trial handed to babysitting: ``config`` (the run's with the trial's values),
    ``state`` (its trained state at ``state[1]["info"]["step"]``, or step 0 if not
    ``trained``), ``history`` (its per-step and per-evaluation columns), and a note
    saying where it came from.

    As a branch: ``trainer.adopt(handoff)`` (when :meth:`fits_branch`), forked at step 0
    of branch 0, where every trial starts. As a new run: ``Trainer(handoff.
    config_for_new_run(run_dir), folder, start_from=handoff.state, note=handoff.note)``.
    """

    round: int
    trial: int
    config: RunConfig
    state: tuple
    history: Mapping
    trained: bool
    note: str
    event: Mapping

    @property
    def step(self) -> int:
        return int(self.state[1]["info"]["step"])

    def fits_branch(self, run_config: RunConfig) -> bool:
        """Same data, split, seed, shapes and dtype as the run: it can be a branch."""
        return same_architecture(self.config, run_config)

    def commit_payload(self) -> tuple:
        """What ``Trainer.adopt`` takes: ``(start_step, start_branch, arrays, meta,
        history, events)``."""
        arrays, meta = self.state
        return (0, 0, {k: np.array(v) for k, v in arrays.items()}, copy.deepcopy(meta),
                {k: np.asarray(v) for k, v in self.history.items()}, [dict(self.event)])

    def config_for_new_run(self, run_dir) -> RunConfig:
        """The config for a new run: a data file is the run folder's copy of it."""
        if self.config.dataset in BUILTIN_DATASETS:
            return self.config
        path = Path(run_dir) / Path(self.config.dataset).name
        return dataclasses.replace(self.config, dataset=str(path))
