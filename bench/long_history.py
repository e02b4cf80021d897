"""Hours-long sessions: 10⁷ steps of history, and an eight-hour soak.

    python bench/long_history.py [--steps 10000000] [--soak-steps 3000000] [--quick]

1. **10⁷ steps of history.** The engine as it is, with its recording, journal files,
   checkpoints, retention and journal compaction, around a stand-in for the numerics
   (``loop.train_step`` replaced by one that draws the row of a decaying noisy cost with
   rare spikes), so that 10⁷ steps take minutes instead of hours. Printed: memory of the
   history tables, ``snapshot()`` time, one live refresh of the training page (server
   time and bytes), ``Trainer.open`` with the whole curve, the run folder's size.
   Targets: ≤ 200 MB, ≤ 150 ms and ≤ 300 KB per refresh, open ≤ 5 s.
2. **Soak.** Real steps of a small net with the dashboard's checkpoint policy
   (``checkpoint_every=1000``, the default retention) for ``--soak-steps`` steps, the
   policy's 30 s pace scaled so that the run writes as many periodic checkpoints as
   eight hours would; the run is stopped and reopened every 10⁶ steps. Printed per 10⁶
   steps: the folder's size and files, checkpoints kept, the process's memory.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.common import (  # noqa: E402
    history_mb,
    live_refresh,
    machine_report,
    median_range,
    print_table,
)
from dlcore import loop  # noqa: E402
from dlcore.trainer import RunConfig, Trainer  # noqa: E402

SMALL = dict(dataset="blobs", hidden=(16,), eval_every=50)


def stand_in_step(state, data, alpha=None, divergence_factor=10.0):
    """The row a step would give, without the numerics: the data order still advances
    (so the counters stay consistent), the cost decays with noise and a rare spike."""
    epoch = state.iterator.epoch
    state.iterator.next_batch()
    state.step += 1
    noise = (state.step * 2654435761 % 1000) / 1000
    spike = 5.0 if state.step % 100_003 == 0 else 0.0
    return {"step": state.step, "epoch": epoch,
            "cost": 2.0 / (1 + state.step * 1e-5) + 0.1 * noise + spike,
            "lr": state.alpha() if alpha is None else alpha, "grad_norm": 1.0 + noise,
            **{column: 1e-3 * (1 + noise) for column in state.ratio_columns.values()}}


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def folder_size(folder: Path) -> tuple[float, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 1e6, len(files)


def wait_steps(trainer: Trainer, target: int) -> None:
    """Until the run (started with start()) reached step ``target``."""
    while trainer.snapshot().step < target:
        time.sleep(0.2)


def wait_settled(trainer: Trainer):
    """The snapshot once every command sent has been carried out and the run is not
    training (a step(n) done, or stopped short by the guard or an error)."""
    while not trainer.idle():
        time.sleep(0.2)
    return trainer.snapshot()


def ten_million(folder: Path, steps: int, repeats: int) -> list[tuple]:
    real_step = loop.train_step
    loop.train_step = stand_in_step
    try:
        config = RunConfig(**SMALL, checkpoint_every=10_000,
                           retention={"min_seconds": 0.0})
        began = time.perf_counter()
        trainer = Trainer(config, folder, run_id="long")
        trainer.start()
        wait_steps(trainer, steps)
        trainer.pause()
        seconds = time.perf_counter() - began
        memory = history_mb(trainer)
        snapshot_ms = []
        for _ in range(50):
            start = time.perf_counter()
            snap = trainer.snapshot()
            snapshot_ms.append((time.perf_counter() - start) * 1e3)
        trainer.stop()
    finally:
        loop.train_step = real_step
    size, files = folder_size(folder / "long")
    open_s = []
    for _ in range(3):
        start = time.perf_counter()
        reopened = Trainer.open(folder, "long")
        open_s.append(time.perf_counter() - start)
        curve = reopened.snapshot().history
        covered = int(np.sum(curve["buckets/count"])) + len(curve["step"])
        reopened.stop()
    refresh_ms, refresh_bytes = live_refresh(folder, repeats)
    refresh_kb = [b / 1e3 for b in refresh_bytes]
    print(f"Long run: {snap.step:,} steps in {seconds:.0f} s with the stand-in step; the "
          f"reopened curve covers {covered:,} steps; {len(snap.checkpoints)} checkpoints")
    at = f"{snap.step:.0e}".replace("e+0", "e")  # e.g. 1e7
    return [
        (f"history memory, {at} steps (MB)", f"{memory:.1f}", "", "", "≤ 200 MB",
         memory <= 200),
        (f"snapshot() at {at} steps (ms)", median_range(snapshot_ms, 2), "", "", "≤ 20 ms",
         statistics.median(snapshot_ms) <= 20),
        (f"one live refresh at {at} steps (ms)", median_range(refresh_ms, 1), "", "",
         "≤ 150 ms", statistics.median(refresh_ms) <= 150),
        (f"bytes per refresh at {at} steps (KB)", median_range(refresh_kb, 1), "", "",
         "≤ 300 KB", statistics.median(refresh_kb) <= 300),
        (f"Trainer.open at {at} steps (s)", median_range(open_s, 2), "", "", "≤ 5 s",
         statistics.median(open_s) <= 5),
        (f"run folder at {at} steps (MB / files)", f"{size:.1f} / {files}", "", "", "", True),
    ]


def train_through_divergences(trainer: Trainer, target: int) -> int:
    """Train up to step ``target``, doing what the dashboard offers when the guard stops
    the run (roll back to the last good checkpoint at α/2); returns the steps trained."""
    trained = 0
    while (snap := trainer.snapshot()).step < target:
        before = snap.step
        trainer.step(target - before)
        snap = wait_settled(trainer)
        trained += max(0, snap.step - before)
        if snap.status == "error":
            raise RuntimeError(f"the soak run failed: {snap.error}")
        if snap.status == "diverged":
            divergence = snap.divergence
            print(f"    diverged at step {divergence['step']:,} ({divergence['cause']}): "
                  f"rolled back to {divergence['last_good_checkpoint']} at α/2")
            trainer.rollback(divergence["last_good_checkpoint"],
                             lr=snap.hparams["lr"] / 2)
            wait_settled(trainer)
    return trained


def soak(folder: Path, steps: int, pace_seconds: float) -> None:
    config = RunConfig(**SMALL, checkpoint_every=1000,
                       retention={"min_seconds": pace_seconds})
    trainer = Trainer(config, folder, run_id="soak")
    print(f"\nSoak: {steps:,} real steps, a periodic checkpoint at most every "
          f"{pace_seconds:g} s (the default 30 s, scaled to eight hours), reopened every 10^6")
    print(f"{'steps':>10} {'hours (sim.)':>12} {'folder MB':>10} {'files':>6} "
          f"{'periodic kept':>14} {'all kept':>9} {'RSS MB':>8} {'steps/s':>8}")
    began, done = time.perf_counter(), 0
    while done < steps:
        block = min(10**6, steps - done)
        start = time.perf_counter()
        trained = train_through_divergences(trainer, done + block)
        rate = trained / (time.perf_counter() - start)
        done += block
        snap = trainer.snapshot()
        trainer.stop()
        size, files = folder_size(folder / "soak")
        periodic = sum(c["kind"] == "periodic" for c in snap.checkpoints)
        hours = (time.perf_counter() - began) * 30 / pace_seconds / 3600
        print(f"{done:>10,} {hours:>12.1f} {size:>10.1f} {files:>6} {periodic:>14} "
              f"{len(snap.checkpoints):>9} {rss_mb():>8.0f} {rate:>8.0f}")
        trainer = Trainer.open(folder, "soak")
    trainer.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10**7)
    parser.add_argument("--soak-steps", type=int, default=3 * 10**6)
    parser.add_argument("--quick", action="store_true", help="10^6 and 10^6 steps")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.soak_steps = 10**6, 10**6
    print(machine_report())
    print()
    folder = Path(tempfile.mkdtemp(prefix="panda-long-"))
    try:
        rows = ten_million(folder, args.steps, repeats=10)
        print_table(rows)
        # Eight hours of 30 s paces are 960 periodic checkpoints at most; a small net does
        # ~3·10³ steps/s, so 3·10⁶ steps take ~17 min: scale the pace to fit.
        soak(folder, args.soak_steps, pace_seconds=1.0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
