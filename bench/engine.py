"""The engine around the step: what the Trainer costs over a bare training loop.

    python bench/engine.py [--quick]

Prints, measured side by side in one run (alternating; ratios are medians of the
ratios of neighbouring runs):

1. steps/s of ``Trainer`` (history recorded, commands drained) vs a bare
   loop doing the same step on the MNIST-like net (784→256→128→10, batch
   256, float32, Adam); target ratio ≥ 0.95;
2. steps/s with ``checkpoint_every=100`` vs without; target ≥ 0.95;
3. ``snapshot()`` with 10⁶ steps of history: median time (target ≤ 20 ms)
   and the memory of that history (target ≤ 100 MB).

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

import numpy as np  # noqa: E402

from bench.common import machine_report, median_range, pair_ratio, print_table  # noqa: E402
from dlcore.trainer import RunConfig, Trainer, _append_bn  # noqa: E402

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
    net, optimizer, iterator, data = (
        trainer._net,
        trainer._optimizer,
        trainer._iterator,
        trainer.data,
    )
    hp = trainer._hparams
    start = time.perf_counter()
    for _ in range(steps):
        index = iterator.next_batch()
        cost, grads, stats = net.loss_and_grads(
            data.X_train[index], data.y_train[index], hp["l2"], reuse_buffers=True
        )
        optimizer.step(net.params, grads)
        net.update_running_stats(stats, hp["bn_momentum"])
    return time.perf_counter() - start


def trainer_seconds(trainer: Trainer, steps: int) -> float:
    """Wall time of `steps` steps in the worker thread, from the command to the last step.

    Polls gently, five times a second: a tight polling loop would itself steal the GIL
    from the worker. The end time is the worker's own timestamp of its last step, so the
    polling interval doesn't add to the time.
    """
    start = time.monotonic()
    trainer.step(steps)
    while trainer.snapshot().status == "running" or not trainer._commands.empty():
        time.sleep(0.2)
    return trainer._rate_times[-1] - start


def steps_per_second_pairs(make_a, make_b, steps, repeats):
    """Alternate A and B `repeats` times (AB, BA, AB, ...); returns two lists of steps/s.

    Compare them with :func:`pair_ratio`: each A ran right next to its B, so their ratio
    cancels the machine's drift, which between runs is as large as the effects measured.
    """
    a_rates, b_rates = [], []
    for i in range(repeats):
        order = [(make_a, a_rates), (make_b, b_rates)]
        for run, rates in order if i % 2 == 0 else order[::-1]:
            rates.append(steps / run(steps))
    return a_rates, b_rates


def history_snapshot(steps: int):
    """A Trainer whose active branch holds `steps` rows of history; snapshot() timed."""
    folder = tempfile.mkdtemp()
    trainer = Trainer(RunConfig(hidden=(64, 32), eval_every=50), folder)
    branch = trainer._branches[trainer._branch]
    rows = {name: np.zeros(steps, dtype) for name, (dtype, _) in branch.steps.schema.items()}
    rows["step"] = np.arange(1, steps + 1)
    with trainer._lock:
        branch.steps.extend(rows)
        n_evals = steps // 50
        branch.evals.extend(
            {name: np.zeros(n_evals, dtype) for name, (dtype, _) in branch.evals.schema.items()}
        )
        bn_row = {name: np.zeros(shape, dtype) for name, (dtype, shape) in branch.bn.schema.items()}
        for i in range(n_evals):  # through the real path, which thins old rows
            _append_bn(branch, {**bn_row, "eval_step": 50 * (i + 1)})
        trainer._step = steps
    times = []
    for _ in range(50):
        start = time.perf_counter()
        snap = trainer.snapshot()
        times.append((time.perf_counter() - start) * 1e3)
    memory = sum(
        column.nbytes
        for table in (branch.steps, branch.evals, branch.bn)
        for column in table._data.values()
    )
    assert len(snap.history["step"]) == steps
    trainer.stop()
    return times, memory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    args = parser.parse_args()
    # 1000 steps hold ten checkpoints (checkpoint_every=100): fewer put the ratio at the
    # mercy of where the writes fall.
    steps, repeats = (200, 3) if args.quick else (1000, 9)
    print(machine_report())
    print()
    with tempfile.TemporaryDirectory() as folder:
        plain = Trainer(MNIST_LIKE, Path(folder) / "plain", run_id="plain")
        saving = Trainer(
            RunConfig(**{**MNIST_LIKE.__dict__, "checkpoint_every": 100}),
            Path(folder) / "saving",
            run_id="saving",
        )
        trainer_sec = lambda n: trainer_seconds(plain, n)  # noqa: E731
        bare_sec = lambda n: bare_loop_seconds(plain, n)  # noqa: E731
        saving_sec = lambda n: trainer_seconds(saving, n)  # noqa: E731
        trainer_sec(20), bare_sec(20), saving_sec(20)  # warm up
        trainer_rates, bare_rates = steps_per_second_pairs(trainer_sec, bare_sec, steps, repeats)
        saving_rates, plain_rates = steps_per_second_pairs(saving_sec, trainer_sec, steps, repeats)
        plain.stop()
        saving.stop()
    snapshot_ms, memory = history_snapshot(10**6)

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
        ]
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
