"""Caviar on Ray Tune: one search round's trials, run by Ray, reported back to Panda.

Imported only once Ray is known to be installed (:func:`dlcore.caviar.ray_missing`).

- :func:`connect` calls ``ray.init`` once per process and keeps it: locally with every
  core and no dashboard, or on the cluster named by ``$PANDA_RAY_ADDRESS``
  (``ray://host:10001``). dlcore goes to the workers as a ``py_module``.
- :func:`run_search` runs one round with ``Tuner.fit()``: each trial is
  :func:`dlcore.caviar_trial.train_trial` on one CPU, reporting dev accuracy/cost at
  each evaluation with its state as a Ray Tune checkpoint (``tune.report(...,
  checkpoint=...)``), so ASHA can stop it and Ray can restore it; random points come
  from :meth:`SearchSpace.sample`, TPE points from Optuna through ``OptunaSearch``.

With Ray Client, Tune's driver runs on the cluster, not here. So everything comes back
through one small actor, the *board*: a callback in Tune's driver posts each trial's
start, results, checkpoints (the trial file's arrays) and end to it; :func:`run_search`
drains it twice a second and hands the events to Panda; cancelling sets a flag on it
that a Tune stopper reads. The same path runs locally, so the tests exercise it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ADDRESS_VARIABLE = "PANDA_RAY_ADDRESS"
if not os.environ.get(ADDRESS_VARIABLE):
    # A Ray that Panda starts itself serves this machine only: its ports (no
    # authentication, and they run code) listen on 127.0.0.1 like Panda's own server,
    # not on the network's address. Ray reads this when it is imported.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import ray  # noqa: E402
from ray import tune  # noqa: E402

from dlcore import checkpoint as ckptio  # noqa: E402
from dlcore.caviar_trial import (  # noqa: E402
    METRICS,
    TRIAL_FORMAT,
    Plan,
    train_trial,
    write_trial_file,
)
from dlcore.hparams import RunConfig  # noqa: E402

DLCORE_DIR = str(Path(__file__).resolve().parent)
TRIAL_FILE = "trial.npz"
#: Ray's object store when Panda starts Ray itself: data sets and trial states are small.
LOCAL_OBJECT_STORE_BYTES = 256 * 1024**2
#: Tune's default loggers import tensorboardX (and with it torch: seconds per round) and
#: write CSV/JSON copies of what Panda keeps anyway; the new console output is noise in
#: a server's log.
TUNE_ENVIRONMENT = {"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1", "RAY_AIR_NEW_OUTPUT": "0",
                    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0"}
POLL_SECONDS = 0.5


class CaviarUnavailable(RuntimeError):
    """Ray could not be started or the cluster could not be reached: the message says
    what to do. Nothing of the run was touched."""


@dataclass(frozen=True)
class Session:
    """The Ray this process is connected to: "local" or the cluster's address, its CPUs,
    and how long ``ray.init`` took."""

    address: str
    cpus: int
    init_seconds: float


_session: Session | None = None
_session_lock = threading.Lock()


def connect() -> Session:
    """``ray.init`` once per process (later calls return the same session).

    Called from any thread (a search's, which ends with its round), but ``ray.init``
    runs in a thread of its own that lives as long as the process: a local Ray's
    processes are started with the *thread's* death as their signal to die
    (``PR_SET_PDEATHSIG``), so a Ray started by a finished search's thread would take its
    object store down with it and the next round with the server.
    """
    with _session_lock:
        if _session is not None and ray.is_initialized():
            return _session
        outcome: dict = {}
        ready = threading.Event()

        def keep():
            try:
                outcome["session"] = _init()
            except BaseException as error:  # handed to the caller's thread
                outcome["error"] = error
            ready.set()
            if "session" in outcome:
                threading.Event().wait()  # forever: Ray's processes follow this thread

        threading.Thread(target=keep, name="panda-ray", daemon=True).start()
        ready.wait()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["session"]


def _init() -> Session:
    """The one ``ray.init``: local (every core, no dashboard) or ``$PANDA_RAY_ADDRESS``."""
    global _session
    for key, value in TUNE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    address = os.environ.get(ADDRESS_VARIABLE) or None
    options = {"include_dashboard": False, "log_to_driver": False,
               "logging_level": logging.WARNING, "ignore_reinit_error": True,
               "runtime_env": {"py_modules": [DLCORE_DIR], "env_vars": TUNE_ENVIRONMENT}}
    if address is None:  # "local": never another Ray that happens to run here
        options.update(num_cpus=os.cpu_count() or 1,
                       object_store_memory=LOCAL_OBJECT_STORE_BYTES)
    started = time.monotonic()
    try:
        ray.init(address=address or "local", **options)
    except Exception as error:  # ConnectionError, TimeoutError, RuntimeError, ...
        what = (f"reach the Ray cluster at {address}" if address
                else "start Ray on this machine")
        hint = (f"Check that the cluster runs and that {ADDRESS_VARIABLE} is right "
                "(ray://host:10001), or unset it to search on this machine."
                if address else "See the server's log for Ray's own message.")
        raise CaviarUnavailable(f"Could not {what}: {str(error).rstrip('. ')}. {hint}") \
            from None
    # Tune's end-of-fit summary looks for the CSV/JSON logs turned off above.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    _session = Session(address or "local", max(1, cpus), time.monotonic() - started)
    return _session


# ---------------------------------------------------------------------------
# The trial, as a Ray Tune function trainable (runs in a Ray worker)
# ---------------------------------------------------------------------------


def _trainable(config: dict, data, base: RunConfig, plan: Plan) -> None:
    """Train ``config["point"]`` with dlcore's own step; report each evaluation with the
    trial's state and history as a checkpoint (one trial file)."""
    from threadpoolctl import threadpool_limits

    trial_config = plan.space.config_for(base, config["point"])
    info = {"trial": config["trial"], "point": config["point"]}
    with threadpool_limits(limits=1, user_api="blas"), \
            tempfile.TemporaryDirectory(prefix="panda-trial-") as folder:
        for report in train_trial(trial_config, data, plan, _restored(tune.get_checkpoint())):
            if report.state is None:  # diverged: the last word, no state worth keeping
                tune.report(report.metrics)
                return
            write_trial_file(Path(folder) / TRIAL_FILE, report.state, report.history,
                             {**info, "metrics": report.metrics})
            # Ray copies the folder into its storage before report() returns.
            tune.report(report.metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _restored(checkpoint) -> tuple[dict, dict, dict] | None:
    """``(arrays, meta, history)`` of the trial's last checkpoint when Ray restores it."""
    if checkpoint is None:
        return None
    from dlcore.caviar_trial import read_trial_file

    with checkpoint.as_directory() as folder:
        (arrays, meta), history, _ = read_trial_file(Path(folder) / TRIAL_FILE)
    return arrays, meta, history


# ---------------------------------------------------------------------------
# The board and what posts to it (Tune's driver, wherever it runs)
# ---------------------------------------------------------------------------


@ray.remote(num_cpus=0)
class _Board:
    """Events of one round, in the order posted, and whether to cancel."""

    def __init__(self):
        self._events: list = []
        self._cancelled = False

    def post(self, event: tuple) -> None:
        self._events.append(event)

    def drain(self) -> list:
        events, self._events = self._events, []
        return events

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class _Relay(tune.Callback):
    """Posts every trial's start, results, checkpoints, end and errors to the board."""

    def __init__(self, board):
        self.board = board

    def on_trial_start(self, iteration, trials, trial, **info):
        self.board.post.remote(("start", trial.config["trial"], dict(trial.config["point"])))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        metrics = {k: result[k] for k in (*METRICS, "diverged") if k in result}
        metrics["seconds"] = float(result.get("time_total_s", 0.0))
        self.board.post.remote(("result", trial.config["trial"], metrics))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        with checkpoint.as_directory() as folder:
            arrays, meta = ckptio.read(Path(folder) / TRIAL_FILE, TRIAL_FORMAT)
        self.board.post.remote(("state", trial.config["trial"], arrays, meta))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.board.post.remote(("complete", trial.config["trial"]))

    def on_trial_error(self, iteration, trials, trial, **info):
        error = trial.get_error() if hasattr(trial, "get_error") else None
        text = str(error).strip().splitlines()[-1] if error else "the trial failed"
        self.board.post.remote(("error", trial.config["trial"], text[:500]))

    def on_experiment_end(self, trials, **info):
        # Waits: everything posted before is on the board when fit() returns.
        ray.get(self.board.post.remote(("end",)))


class _Cancel(tune.Stopper):
    """Stops every trial once the board says so (asked at most twice a second)."""

    def __init__(self, board):
        self.board = board
        self._asked = 0.0
        self._stop = False

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._asked >= POLL_SECONDS:
            self._asked = now
            self._stop = bool(ray.get(self.board.cancelled.remote()))
        return self._stop


# ---------------------------------------------------------------------------
# One round
# ---------------------------------------------------------------------------


# Tune pickles its search state: module-level callables, no closures.


@dataclass(frozen=True)
class _PointOf:
    """Random search: trial k's point is the k-th draw."""

    points: list

    def __call__(self, config) -> dict:
        return self.points[config["trial"] - 1]


@dataclass(frozen=True)
class _Ask:
    """TPE: Optuna's define-by-run function, on the space's own scales."""

    space: object

    def __call__(self, trial) -> dict:
        return {"trial": trial.number + 1, "point": self.space.suggest(trial)}


def _trial_folder(trial) -> str:
    return f"trial-{trial.config['trial']:04d}"


def _tuner(plan: Plan, base: RunConfig, data, name: str, board, storage: str, cpus: int):
    """The Tuner of one round: resources, search algorithm, scheduler, callbacks."""
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, data=data, base=base, plan=plan), {"cpu": 1})
    if plan.algorithm == "random":
        # The points Round.create listed: the same draws from the same seed.
        points = plan.space.sample(plan.trials, plan.seed)
        param_space = {"trial": tune.grid_search(list(range(1, plan.trials + 1))),
                       "point": tune.sample_from(_PointOf(points))}
        search_alg, num_samples = None, 1
    else:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        param_space = None
        search_alg = OptunaSearch(space=_Ask(plan.space), metric="dev_accuracy", mode="max",
                                  sampler=optuna.samplers.TPESampler(seed=plan.seed))
        num_samples = plan.trials
    scheduler = None
    if plan.early_stopping:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="progress", metric="dev_accuracy", mode="max",
                                  max_t=plan.budget,
                                  grace_period=plan.grace_period,
                                  reduction_factor=plan.reduction_factor)
    return tune.Tuner(
        trainable, param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler,
            num_samples=num_samples, max_concurrent_trials=plan.max_concurrent or cpus,
            reuse_actors=True,
            trial_dirname_creator=_trial_folder),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, stop=_Cancel(board), callbacks=[_Relay(board)],
            # All kept: a limit forces a snapshot of Tune's experiment state (files and
            # pickles) every that many checkpoints; Ray's folder is removed after the round.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
            failure_config=tune.FailureConfig(max_failures=1), verbose=0))


def run_search(plan: Plan, base: RunConfig, data, name: str,
               on_events: Callable[[list], None], cancelled: Callable[[], bool]) -> Session:
    """Run one round to its end (or until ``cancelled()``), handing every board event to
    ``on_events`` in order, from this thread. Returns the session it ran on.

    Events: ``("start", trial, point)``, ``("result", trial, metrics)``, ``("state",
    trial, arrays, meta)`` (a trial file's content), ``("complete", trial)``,
    ``("error", trial, message)``, ``("end",)``. Raises CaviarUnavailable when Ray can't
    be reached; an exception of Tune's own otherwise.
    """
    session = connect()
    storage = tempfile.mkdtemp(prefix="panda-ray-") if session.address == "local" else None
    board = _Board.remote()
    failure: list[BaseException] = []

    def fit():
        try:
            _tuner(plan, base, data, name, board, storage, session.cpus).fit()
        except BaseException as error:  # reported by the caller's thread
            failure.append(error)

    thread = threading.Thread(target=fit, name=f"panda-caviar-{name}", daemon=True)
    thread.start()
    try:
        asked = False
        while True:
            thread.join(POLL_SECONDS)
            done = not thread.is_alive()
            if (cancelled() or failure) and not asked:
                board.cancel.remote()
                asked = True
            events = ray.get(board.drain.remote())
            if not failure:  # once Panda can't take events (a full disk), it cancels
                try:
                    on_events(events)
                except Exception as error:
                    failure.append(error)
            if done:
                break
    finally:
        ray.kill(board)
        if storage is not None:  # Ray's own copies (and its pickles): Panda kept its own
            shutil.rmtree(storage, ignore_errors=True)
    if failure:
        raise failure[0]
    return session
