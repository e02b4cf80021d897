"""One caviar round on disk: its header, its trials, and the files they live in.

::

    <run folder>/caviar/round-<n>/round.json       the plan, the run's config, status
    <run folder>/caviar/round-<n>/trials.json      every trial: point, status, curve, best
    <run folder>/caviar/round-<n>/trial-0003.npz   a trial's state and history (the best
                                                   ``keep_states`` trials keep theirs)

A :class:`Round` is changed by the thread running its search (:meth:`Round.absorb`
takes the search's events, :meth:`Round.finish` ends it) and read as immutable
:class:`RoundView` pictures. Every file is written atomically (temporary name, fsync,
rename) as JSON or ``.npz`` without pickle; :meth:`Round.load` reads a round back after
a restart, a round that was running then being "interrupted".
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dlcore import checkpoint as ckptio
from dlcore.caviar_trial import Plan
from dlcore.hparams import RunConfig
from dlcore.snapshot import freeze
from dlcore.store import write_json_atomic

ROUND_FORMAT = "panda-caviar-round-v1"
#: A trial's statuses: waiting, training, or how it ended.
STATUSES = ("pending", "running", "finished", "stopped", "diverged", "error", "cancelled",
            "interrupted")
ENDED = ("finished", "stopped", "diverged", "error", "cancelled", "interrupted")
MAX_JSON_BYTES = 64 * 1024**2


def _finite(value) -> float | None:
    """A metric as JSON can hold it: a float, or None for NaN/inf/missing."""
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _new_trial(number: int, point: Mapping | None) -> dict:
    return {"trial": number, "point": dict(point) if point is not None else None,
            "status": "pending", "step": 0, "progress": 0.0, "dev_accuracy": None,
            "dev_cost": None, "train_accuracy": None, "best_dev_accuracy": None,
            "curve": {"step": [], "dev_accuracy": [], "dev_cost": []}, "seconds": 0.0,
            "diverged": None, "error": None, "state": None, "state_step": None}


@dataclass(frozen=True)
class RoundView:
    """An immutable picture of a round for the UI: its header and its trials (frozen
    dicts as :class:`Round` records them)."""

    number: int
    plan: Plan
    base: RunConfig
    origin: Mapping | None
    status: str
    message: str
    started: float
    ended: float | None
    session: Mapping | None
    trials: tuple

    @property
    def done(self) -> int:
        return sum(t["status"] in ENDED for t in self.trials)

    def ranked(self) -> list:
        """Trials with a dev accuracy, best first (ties: lower trial number first)."""
        scored = [t for t in self.trials if t["best_dev_accuracy"] is not None]
        return sorted(scored, key=lambda t: (-t["best_dev_accuracy"], t["trial"]))

    def trial(self, number: int) -> Mapping:
        for trial in self.trials:
            if trial["trial"] == number:
                return trial
        raise ValueError(f"round {self.number} has no trial {number}")


class Round:
    """One round's header and trial records, and the files they live in.

    The thread running the round's search changes it (:meth:`absorb`, :meth:`finish`);
    readers take :meth:`view` s. Both under its lock.
    """

    def __init__(self, folder: Path, header: dict, trials: list[dict], plan: Plan):
        self.folder, self.header, self.trials, self.plan = Path(folder), header, trials, plan
        self.lock = threading.Lock()

    @property
    def number(self) -> int:
        return self.header["round"]

    @classmethod
    def create(cls, folder: Path, number: int, plan: Plan, base: RunConfig,
               origin: Mapping | None) -> Round:
        """A new round folder, its files written (status "starting"); FileExistsError if
        the folder is taken."""
        folder.mkdir(parents=True, exist_ok=False)
        header = {"format": ROUND_FORMAT, "round": number, "plan": plan.to_dict(),
                  "base": base.to_dict(), "origin": dict(origin) if origin else None,
                  "status": "starting", "message": "", "started": time.time(),
                  "ended": None, "session": None}
        points = plan.space.sample(plan.trials, plan.seed) if plan.algorithm == "random" \
            else [None] * plan.trials
        round_ = cls(folder, header, [_new_trial(i + 1, p) for i, p in enumerate(points)], plan)
        round_.save()
        return round_

    @classmethod
    def load(cls, folder: Path) -> Round:
        """A round as its files hold it; ValueError naming what is wrong. A round whose
        search was running when the server stopped is "interrupted" (in memory)."""
        header = _read_json(folder / "round.json")
        if header.get("format") != ROUND_FORMAT:
            raise ValueError(f"round.json: format {header.get('format')!r}, expected "
                             f"{ROUND_FORMAT!r}")
        trials = _read_json(folder / "trials.json").get("trials")
        if not isinstance(trials, list) or not all(isinstance(t, dict) for t in trials):
            raise ValueError("trials.json holds no list of trials")
        try:
            plan = Plan.from_dict(header["plan"])
            RunConfig.from_dict(header["base"])
            for trial in trials:
                if trial["status"] not in STATUSES or not isinstance(trial["trial"], int):
                    raise ValueError(f"trial {trial.get('trial')!r}: status "
                                     f"{trial.get('status')!r}")
        except (KeyError, TypeError) as error:
            raise ValueError(f"incomplete ({error})") from None
        round_ = cls(folder, header, trials, plan)
        if header["status"] in ("starting", "running"):
            round_.finish("interrupted", "The server stopped while this round ran; what "
                                         "its trials had reported is kept.", save=False)
        return round_

    def view(self) -> RoundView:
        with self.lock:
            h = self.header
            return RoundView(
                number=h["round"], plan=self.plan, base=RunConfig.from_dict(h["base"]),
                origin=freeze(h["origin"]) if h["origin"] else None, status=h["status"],
                message=h["message"], started=h["started"], ended=h["ended"],
                session=freeze(h["session"]) if h["session"] else None,
                trials=tuple(freeze(copy.deepcopy(t)) for t in self.trials))

    def save(self) -> None:
        """Both JSON files, atomically; trials.json first, so a header that says
        "finished" never stands beside trials from before the end. (Under the lock: the
        temporary names are per process.)"""
        with self.lock:
            write_json_atomic(self.folder / "trials.json",
                              {"format": ROUND_FORMAT, "trials": self.trials})
            write_json_atomic(self.folder / "round.json", self.header)

    def set_status(self, status: str, message: str = "", session: Mapping | None = None):
        with self.lock:
            self.header.update(status=status, message=message)
            if session is not None:
                self.header["session"] = dict(session)
        self.save()

    # -- events from the search ----------------------------------------------------------

    def absorb(self, events: list) -> None:
        """Apply the search's events (see :func:`dlcore.caviar_ray.run_search`) in order,
        then save. A trial's state file is written only while the trial is among the
        best ``keep_states``; one that falls out loses its file."""
        if not events:
            return
        with self.lock:
            for event in events:
                kind, number = event[0], (event[1] if len(event) > 1 else None)
                if kind == "end":
                    continue
                trial = self._trial(number)
                if kind == "start":
                    trial["status"] = "running"
                    trial["point"] = dict(event[2])
                elif kind == "result":
                    self._note_result(trial, event[2])
                elif kind == "state":
                    self._keep_state(trial, event[2], event[3])
                elif kind == "complete":
                    self._complete(trial)
                elif kind == "error":
                    trial.update(status="error", error=event[2])
        self.save()

    def _trial(self, number: int) -> dict:
        for trial in self.trials:
            if trial["trial"] == number:
                return trial
        trial = _new_trial(number, None)  # TPE asks as it goes; beyond the plan's count
        self.trials.append(trial)
        return trial

    def _note_result(self, trial: dict, metrics: Mapping) -> None:
        accuracy = _finite(metrics.get("dev_accuracy"))
        trial.update(status="running", step=int(metrics.get("step", trial["step"])),
                     progress=float(metrics.get("progress", trial["progress"])),
                     dev_accuracy=accuracy, dev_cost=_finite(metrics.get("dev_cost")),
                     train_accuracy=_finite(metrics.get("train_accuracy")),
                     seconds=float(metrics.get("seconds", trial["seconds"])))
        if metrics.get("diverged"):
            trial.update(status="diverged", diverged=str(metrics["diverged"]))
            return
        curve = trial["curve"]
        curve["step"].append(trial["step"])
        curve["dev_accuracy"].append(accuracy)
        curve["dev_cost"].append(trial["dev_cost"])
        if accuracy is not None and (trial["best_dev_accuracy"] is None
                                     or accuracy > trial["best_dev_accuracy"]):
            trial["best_dev_accuracy"] = accuracy

    def _complete(self, trial: dict) -> None:
        if trial["status"] in ("diverged", "error"):
            return
        reached = trial["progress"] >= self.plan.budget * (1 - 1e-9)
        trial["status"] = "finished" if reached else (
            "cancelled" if self.header["status"] == "cancelling" else "stopped")

    def _keep_state(self, trial: dict, arrays: dict, meta: dict) -> None:
        metrics = meta.get("trial", {}).get("metrics", {})
        accuracy = _finite(metrics.get("dev_accuracy"))
        if accuracy is not None and (trial["best_dev_accuracy"] is None
                                     or accuracy > trial["best_dev_accuracy"]):
            trial["best_dev_accuracy"] = accuracy
        kept = {t["trial"] for t in self._ranked()[:self.plan.keep_states]}
        if trial["trial"] in kept:
            name = f"trial-{trial['trial']:04d}.npz"
            ckptio.write_atomic(self.folder / name, arrays, meta)
            trial.update(state=name, state_step=int(meta["state"]["info"]["step"]))
        for other in self.trials:  # those that fell out of the best keep their record only
            if other["state"] and other["trial"] not in kept:
                (self.folder / other["state"]).unlink(missing_ok=True)
                other.update(state=None, state_step=None)

    def _ranked(self) -> list[dict]:
        scored = [t for t in self.trials if t["best_dev_accuracy"] is not None]
        return sorted(scored, key=lambda t: (-t["best_dev_accuracy"], t["trial"]))

    def finish(self, status: str, message: str = "", save: bool = True) -> None:
        """The round's end: trials still waiting or training end with ``status``."""
        with self.lock:
            left = "interrupted" if status == "interrupted" else "cancelled"
            for trial in self.trials:  # never ran, or Ray ended it without a word
                if trial["status"] in ("pending", "running"):
                    trial["status"] = left
            self.header.update(status=status, message=message,
                               ended=self.header["ended"] or time.time())
        if save:
            self.save()


def _read_json(path: Path) -> dict:
    """A JSON object from a regular file of this round (never through a link)."""
    try:
        with ckptio.open_regular(path) as file:
            data = json.loads(file.read(MAX_JSON_BYTES).decode())
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path.name}: unreadable ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    return data
