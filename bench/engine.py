"""The engine around the step: what the Trainer costs over a bare training loop.

    python bench/engine.py [--quick]

Prints, measured side by side in one run (alternating 100-step blocks; ratios are
medians of the ratios of neighbouring blocks, with a bootstrap interval):

1. steps/s of ``Trainer`` (history recorded, commands drained) vs a bare
   loop doing the same step on the MNIST-like net (784→256→128→10, batch
   256, float32, Adam); target ratio ≥ 0.95;
2. steps/s with ``checkpoint_every=100`` vs without; target ≥ 0.95;
3. ``snapshot()`` with 10⁶ steps of history, journalled as at a checkpoint (so all but
   the newest 10⁵ steps are buckets): median time (target ≤ 20 ms) and the memory of
   that history (target ≤ 100 MB);
4. steps/s of an MNIST-sized run (60,000 × 784 training rows, float32) with the default
   evaluation (every 50 steps, at most ``eval_share`` of the time) vs none, target ≥ 0.9;
   and the share of the evaluated run's time spent evaluating, timed inside it, target
   ≤ 10 % (the same promise without the two runs' memory placement in it).

Evaluation is set to a large interval in (1) and (2): it is the same work in
both, and it would otherwise dominate a comparison of the loop around it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


from bench.common import (  # noqa: E402
    fill_history,
    history_mb,
    machine_report,
    median_range,
    pair_ratio,
    pair_ratio_interval,
    print_table,
)
from dlcore import loop  # noqa: E402
from dlcore.trainer import RunConfig, Trainer  # noqa: E402

MNIST_LIKE = RunConfig(
    dataset="blobs",
    dataset_params={"n_samples": 12000, "n_features": 784, "n_classes": 10},
    hidden=(256, 128),
    batch_size=256,
    dtype="float32",
    optimizer="adam",
    lr=1e-3,
    eval_every=10**9,
)


def bare_loop_seconds(trainer: Trainer, steps: int) -> float:
    """The same step the Trainer takes, with nothing around it, on the trainer's own state."""
    state, data = trainer._run.state, trainer.data
    net, optimizer, iterator, hp = state.network, state.optimizer, state.iterator, state.hparams
    start = time.perf_counter()
    for _ in range(steps):
        index = iterator.next_batch()
        cost, grads, stats = net.loss_and_grads(
            data.X_train[index], data.y_train[index], hp["l2"], reuse_buffers=True
        )
        optimizer.step(net.params, grads)
        net.update_running_stats(stats, hp["bn_momentum"])
    return time.perf_counter() - start


def trainer_seconds(trainer: Trainer, steps: int, expected: float = 0.0) -> float:
    """Wall time of `steps` steps in the worker thread, from the command to the last step.

    The end time is the worker's own timestamp of its last step, so how the caller waits
    doesn't add to the time; but every time the caller wakes up it takes the GIL and a
    core from the worker (polling every millisecond measured 0.73 of the bare loop's
    speed, every 20 ms 0.95). So it sleeps through ``expected`` seconds (the block's
    usual length) first, then looks every 5 ms at two attributes, without the lock.
    """
    run = trainer._run
    target = run.state.step + steps  # paused: nothing else moves it
    start = time.monotonic()
    trainer.step(steps)
    time.sleep(0.9 * expected)
    # Past its last step, the worker lists any checkpoint write, then pauses.
    while run.state.step < target or run.status == "running":
        if run.status in ("diverged", "error"):
            snapshot = trainer.snapshot()
            reason = snapshot.error or (snapshot.divergence or {}).get("cause")
            raise RuntimeError(f"the benchmark run is {snapshot.status}: {reason}")
        time.sleep(0.005)
    return run.rate_times[-1] - start


def alternating_rates(runs, steps: int, pairs: int) -> list[list[float]]:
    """Steps/s of each of ``runs`` (functions of a step count and an expected duration),
    ``pairs`` times each, in turn, the order reversed every other round (AB, BA, ...).

    Compare them with :func:`pair_ratio`: each A ran right next to its B, so their ratio
    cancels the machine's drift, which between runs is as large as the effects measured.
    Short blocks, many of them, cancel it best.
    """
    seconds = [[] for _ in runs]
    for i in range(pairs):
        order = list(range(len(runs)))
        for k in order if i % 2 == 0 else order[::-1]:
            expected = statistics.median(seconds[k]) if seconds[k] else 0.0
            seconds[k].append(runs[k](steps, expected))
    return [[steps / s for s in times] for times in seconds]


MNIST_SIZED = RunConfig(
    dataset="blobs",
    dataset_params={"n_samples": 75_000, "n_features": 784, "n_classes": 10},
    hidden=(128, 64),
    dtype="float32",
    retention={"save_best": False},
)


def evaluation_rates(folder: Path, steps: int, pairs: int) -> tuple[list, list, float]:
    """Steps/s of the MNIST-sized run with the default evaluation and with none, and the
    share of the evaluated run's time spent in ``loop.evaluate`` (timed in the worker).

    The two runs hold separate 235 MB copies of the data, and on these machines two such
    copies can differ by ±10 % in how fast their rows are gathered, evaluation or not
    (where the pages landed); the share measured inside one run has no such bias. It is
    pessimistic: the pacing counts wall time, which the other run's blocks fill too, so
    evaluations come up to twice as often as in a run trained alone."""
    evaluated = Trainer(MNIST_SIZED, folder / "evaluated", run_id="evaluated")
    unevaluated = Trainer(RunConfig(**{**MNIST_SIZED.__dict__, "eval_every": 10**9}),
                          folder / "unevaluated", run_id="unevaluated")
    runs = [lambda n, e: trainer_seconds(evaluated, n, e),
            lambda n, e: trainer_seconds(unevaluated, n, e)]
    runs[0](100, 0), runs[1](100, 0)  # warm up
    evaluating, real_evaluate = [], loop.evaluate

    def timed_evaluate(*args, **kwargs):
        start = time.perf_counter()
        row = real_evaluate(*args, **kwargs)
        evaluating.append(time.perf_counter() - start)
        return row

    loop.evaluate = timed_evaluate
    try:
        rates = alternating_rates(runs, steps, pairs)
    finally:
        loop.evaluate = real_evaluate
    evaluations = len(evaluated.snapshot().history["eval_step"])
    evaluated.stop()
    unevaluated.stop()
    own = sum(steps / rate for rate in rates[0])
    share = sum(evaluating) / own
    wall = own + sum(steps / rate for rate in rates[1])
    print(f"MNIST-sized run: {evaluations} evaluations in {pairs * steps + 100} steps "
          f"(every 50 steps would be {(pairs * steps + 100) // 50}), "
          f"{1e3 * statistics.median(evaluating or [0]):.0f} ms each: {share:.1%} of its "
          f"blocks' time, {sum(evaluating) / wall:.1%} of the wall time both runs shared "
          "(what eval_share paces: the other run's blocks count as time gone by)")
    return (*rates, share)


def history_snapshot(steps: int):
    """A Trainer whose active branch holds `steps` rows of history; snapshot() timed."""
    folder = tempfile.mkdtemp()
    trainer = Trainer(RunConfig(hidden=(64, 32), eval_every=50), folder)
    fill_history(trainer, steps)
    # Journalled, as a real run's history is at every checkpoint: the rows older than
    # the newest 10^5 steps are then kept as buckets (dlcore.history.StepHistory).
    trainer.checkpoint("history on disk")
    with trainer._run.lock:
        trainer._run.tree.current.steps.rebucket()
    times = []
    for _ in range(50):
        start = time.perf_counter()
        snap = trainer.snapshot()
        times.append((time.perf_counter() - start) * 1e3)
    memory = history_mb(trainer) * 1e6
    assert snap.step == steps
    trainer.stop()
    return times, memory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    # Blocks of one checkpoint interval, many of them (see alternating_rates). The saving
    # run is 50 steps ahead, so each of its blocks holds one checkpoint in the middle,
    # written and settled within the block.
    steps, pairs = 100, (10 if args.quick else 40)
    print(machine_report())
    print()
    with tempfile.TemporaryDirectory() as folder:
        plain = Trainer(MNIST_LIKE, Path(folder) / "plain", run_id="plain")
        saving = Trainer(
            RunConfig(**{**MNIST_LIKE.__dict__, "checkpoint_every": steps,
                         "retention": {"min_seconds": 0, "keep_last": None}}),
            Path(folder) / "saving",
            run_id="saving",
        )
        trainer_run = lambda n, expected: trainer_seconds(plain, n, expected)  # noqa: E731
        bare_run = lambda n, _: bare_loop_seconds(plain, n)  # noqa: E731
        saving_run = lambda n, expected: trainer_seconds(saving, n, expected)  # noqa: E731
        trainer_run(50, 0), bare_run(50, 0), saving_run(50, 0)  # warm up
        trainer_rates, bare_rates = alternating_rates([trainer_run, bare_run], steps, pairs)
        saving_rates, plain_rates = alternating_rates([saving_run, trainer_run], steps, pairs)
        plain.stop()
        saving.stop()
    snapshot_ms, memory = history_snapshot(10**6)
    with tempfile.TemporaryDirectory() as folder:
        evaluated_rates, unevaluated_rates, evaluating_share = evaluation_rates(
            Path(folder), 250, 4 if args.quick else 12)
    evaluated_vs_not = pair_ratio(evaluated_rates, unevaluated_rates)

    trainer_vs_bare = pair_ratio(trainer_rates, bare_rates)
    saving_vs_plain = pair_ratio(saving_rates, plain_rates)
    print_table(
        [
            (
                "Trainer vs bare loop (steps/s)",
                median_range(trainer_rates),
                median_range(bare_rates),
                f"{trainer_vs_bare:.3f}",
                "≥ 0.95",
                trainer_vs_bare >= 0.95,
            ),
            (
                "checkpoint_every=100 vs none (steps/s)",
                median_range(saving_rates),
                median_range(plain_rates),
                f"{saving_vs_plain:.3f}",
                "≥ 0.95",
                saving_vs_plain >= 0.95,
            ),
            (
                "snapshot() with 10^6 steps (ms)",
                median_range(snapshot_ms, 2),
                "",
                "",
                "≤ 20 ms",
                statistics.median(snapshot_ms) <= 20,
            ),
            (
                "history memory for 10^6 steps (MB)",
                f"{memory / 1e6:.1f}",
                "",
                "",
                "≤ 100 MB",
                memory / 1e6 <= 100,
            ),
            (
                "MNIST-sized, evaluation every 50 vs none",
                median_range(evaluated_rates),
                median_range(unevaluated_rates),
                f"{evaluated_vs_not:.3f}",
                "≥ 0.9",
                evaluated_vs_not >= 0.9,
            ),
            (
                "MNIST-sized, share of its time evaluating",
                f"{evaluating_share:.1%}",
                "",
                "",
                "≤ 10 %",
                evaluating_share <= 0.1,
            ),
        ]
    )

    print()
    print(f"{pairs} pairs of {steps}-step blocks; 95% bootstrap intervals of the ratios:")
    for name, a, b in (
        ("Trainer vs bare loop", trainer_rates, bare_rates),
        ("checkpoint_every=100 vs none", saving_rates, plain_rates),
        ("evaluation every 50 vs none", evaluated_rates, unevaluated_rates),
    ):
        low, high = pair_ratio_interval(a, b)
        print(f"  {name:32} {low:.3f}–{high:.3f}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
