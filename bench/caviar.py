"""What Ray costs a caviar search: trials per minute on digits, against a bare loop.

    python bench/caviar.py [--quick]

Prints the machine first, then, measured side by side in one run (the two sides
alternate, and each ratio is the median of neighbouring pairs):

1. ``ray.init`` once (what the first search of a server waits for);
2. for short trials (200 steps) and long ones (20,000 steps), 8 trials each, no early
   stopping (every trial trains its whole budget, so both sides do the same work):
   - a caviar round as the page runs it (``Study.start``: Ray Tune, one trial per core,
     reports and checkpoints through Ray, the round's files written), from the click to
     the round's end;
   - a bare dlcore loop of the same trials, one after the other in this process: the
     same ``train_step`` calls and the same evaluations, nothing else;
   - trials per minute of each, the ratio, and Ray's overhead per trial in core-seconds:
     (caviar wall × trials at once − bare wall) / trials, beside the round's start-up
     (click to the first trial's first report).

Caviar pays off where the ratio exceeds 1: trials long enough that running ``cores`` of
them at once outweighs Ray's start-up and per-trial cost.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from threadpoolctl import threadpool_limits  # noqa: E402

from bench.common import machine_report, median_range, pair_ratio, print_table  # noqa: E402
from dlcore import loop  # noqa: E402
from dlcore.caviar import Study, ray_missing  # noqa: E402
from dlcore.caviar_trial import Plan  # noqa: E402
from dlcore.search_space import Dimension, SearchSpace  # noqa: E402
from dlcore.state import TrainingState  # noqa: E402
from dlcore.trainer import RunConfig, Trainer  # noqa: E402

TRIALS = 8
SPACE = SearchSpace((Dimension("lr", 1e-4, 1e-2), Dimension("beta", 0.9, 0.999)))
EVALUATIONS = 10
#: From this many steps a trial is long enough (seconds) that caviar should pay off here.
LONG = 10_000


def plan_for(steps: int, seed: int) -> Plan:
    return Plan(SPACE, trials=TRIALS, budget=steps, evaluations=EVALUATIONS,
                early_stopping=False, seed=seed)


def caviar_round(trainer: Trainer, plan: Plan) -> tuple[float, float]:
    """(click → round's end, click → first report) in seconds, as the page runs it."""
    study = Study(trainer.run_dir)
    start = time.monotonic()
    number = study.start(plan, trainer.config, trainer.data)
    first = None
    while study.running:
        if first is None and any(t["step"] for t in study.view(number).trials):
            first = time.monotonic() - start
        time.sleep(0.1)
    wall = time.monotonic() - start
    view = study.view(number)
    if view.status != "finished":
        raise RuntimeError(f"round {number} ended {view.status}: {view.message}")
    return wall, first if first is not None else wall


def bare_loop(trainer: Trainer, plan: Plan) -> float:
    """The same trials one after the other: fresh state, train_step, the same evaluations."""
    data, n_train = trainer.data, len(trainer.data.y_train)
    start = time.monotonic()
    with threadpool_limits(limits=1, user_api="blas"):  # as each Ray trial runs
        for point in plan.space.sample(plan.trials, plan.seed):
            config = plan.space.config_for(trainer.config, point)
            steps, eval_every = plan.steps_for(config.batch_size, n_train)
            state = TrainingState.fresh(config, data)
            for step in range(1, steps + 1):
                loop.train_step(state, data)
                if step % eval_every == 0 or step == steps:
                    loop.evaluate(state, data)
    return time.monotonic() - start


def measure(trainer: Trainer, steps: int, repeats: int, cpus: int) -> list:
    walls, firsts, bares = [], [], []
    for repeat in range(repeats):
        plan = plan_for(steps, seed=repeat)
        wall, first = caviar_round(trainer, plan)
        walls.append(wall)
        firsts.append(first)
        bares.append(bare_loop(trainer, plan))
        print(f"  {steps} steps, repeat {repeat + 1}: caviar {wall:.1f} s (first report "
              f"after {first:.1f} s), bare loop {bares[-1]:.1f} s", flush=True)
    caviar_rate = [60 * TRIALS / w for w in walls]
    bare_rate = [60 * TRIALS / b for b in bares]
    ratio = pair_ratio(caviar_rate, bare_rate)
    overheads = [(w * cpus - b) / TRIALS for w, b in zip(walls, bares, strict=True)]
    label = f"{TRIALS} trials × {steps} steps"
    return [
        (f"trials/min, caviar ({label})", median_range(caviar_rate, 1),
         f"bare {median_range(bare_rate, 1)}", f"{ratio:.2f}",
         "≥ 1" if steps >= LONG else "–", ratio >= 1 or steps < LONG),
        ("  Ray overhead per trial (core-s)", median_range(overheads, 2),
         f"bare trial {median_range([b / TRIALS for b in bares], 2)} s", "", "–", True),
        ("  round start-up (click → 1st report, s)", median_range(firsts, 1), "", "", "–",
         True),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of each size")
    args = parser.parse_args()
    print(machine_report())
    print(f"load average: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    reason = ray_missing()
    if reason:
        sys.exit(reason)
    from dlcore import caviar_ray

    began = time.monotonic()
    session = caviar_ray.connect()
    import ray

    print(f"Ray {ray.__version__}: ray.init {session.init_seconds:.1f} s, "
          f"{session.cpus} CPUs ({session.address}); one trial per CPU")
    repeats = 1 if args.quick else 3
    rows = []
    with tempfile.TemporaryDirectory(prefix="panda-bench-caviar-") as folder:
        with Trainer(RunConfig(), folder) as trainer:
            for steps in (200, 20_000):
                rows += measure(trainer, steps, repeats, min(session.cpus, TRIALS))
    print()
    print_table(rows)
    print(f"\nwhole benchmark: {math.ceil(time.monotonic() - began)} s")
    ray.shutdown()


if __name__ == "__main__":
    main()
