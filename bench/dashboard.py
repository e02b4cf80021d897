"""The dashboard's cost: what watching a run costs the run.

    python bench/dashboard.py [--quick]

Needs Debian's Chromium (/usr/bin/chromium) and Playwright. Prints:

1. steps/s of the MNIST-like run (784→256→128→10, batch 256, float32, Adam)
   with the live page open in headless Chromium at its normal refresh (tiles
   every second, charts every two) vs with no page open, alternating phases in
   one run; target ratio ≥ 0.9.
   Throughput is read from the checkpoints the run writes every 200 steps
   (their metadata holds step and time), so nothing else talks to the server;
2. server-side time of one live refresh (the two fragments' render of tiles and
   four charts) with 10⁶ steps of history: target ≤ 150 ms;
3. bytes a refresh sends: the plotly specs of that render (server side);
   target ≤ 300 KB.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from bench.common import (  # noqa: E402
    fill_history,
    live_refresh,
    machine_report,
    median_range,
    pair_ratio,
    pair_ratio_interval,
    print_table,
)
from bench.engine import MNIST_LIKE as ENGINE_NET  # noqa: E402
from dlcore import checkpoint as ckptio  # noqa: E402
from dlcore.trainer import CHECKPOINT_FORMAT, RunConfig, Trainer  # noqa: E402
from tests.browser import button, chromium_page, streamlit_server  # noqa: E402

# The engine benchmark's net, evaluated and checkpointed as a watched run would be; the
# checkpoints are the benchmark's clock, so every one due is written (not one per 30 s)
# and the newest 50 are kept.
MNIST_LIKE = dataclasses.replace(ENGINE_NET, eval_every=100, checkpoint_every=200, retention={
    "min_seconds": 0, "keep_last": 50, "save_best": False})


def checkpoint_times(run_dir: Path) -> list[tuple[float, int]]:
    """(time, step) of every checkpoint on disk, oldest first."""
    points = []
    for path in run_dir.glob("ckpt-*.npz"):
        try:
            _, meta = ckptio.read(path, CHECKPOINT_FORMAT, meta_only=True)
        except ckptio.CheckpointError:
            continue
        points.append((meta["info"]["time"], meta["info"]["step"]))
    return sorted(points)


def rate_between(run_dir: Path, start: float, end: float) -> float:
    """Steps/s from the checkpoints written in [start, end]."""
    points = [(t, s) for t, s in checkpoint_times(run_dir) if start <= t <= end]
    if len(points) < 2:
        return float("nan")
    (t0, s0), (t1, s1) = points[0], points[-1]
    return (s1 - s0) / (t1 - t0)


def throughput_with_and_without_page(folder: Path, phase_seconds: float, phases: int):
    run_dir = folder / "mnist-like"
    with_page, without_page = [], []
    with streamlit_server(folder, folder / "server.log") as (url, _), chromium_page() as page:
        page.goto(url)
        button(page, "start").wait_for(timeout=120_000)
        button(page, "start").click()
        button(page, "pause").wait_for(timeout=60_000)
        time.sleep(3)  # warm up
        for i in range(phases):
            for open_page in (False, True) if i % 2 == 0 else (True, False):
                if open_page:
                    page.goto(url)
                    button(page, "pause").wait_for(timeout=60_000)
                    time.sleep(2)
                else:
                    page.goto("about:blank")
                    time.sleep(1)
                start = time.time()
                time.sleep(phase_seconds)
                end = time.time()
                rate = rate_between(run_dir, start, end)
                (with_page if open_page else without_page).append(rate)
        page.goto(url)
        button(page, "pause").click()
    return with_page, without_page


def refresh_cost_with_history(folder: Path, steps: int, repeats: int):
    """Server-side time and plotly bytes of one live render with `steps` rows of history."""
    trainer = Trainer(RunConfig(hidden=(64, 32), eval_every=50), folder, run_id="long")
    fill_history(trainer, steps, random=True)
    trainer.checkpoint("10^6 steps of history")  # the journal holds them for the app to open
    trainer.stop()
    return live_refresh(folder, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter phases, fewer repeats")
    args = parser.parse_args()
    # Many phases: a shared machine drifts by as much as the effect within a minute.
    phase_seconds, phases, repeats = (6, 2, 5) if args.quick else (10, 6, 15)
    print(machine_report())
    print()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "watched"
        Trainer(MNIST_LIKE, folder, run_id="mnist-like").stop()
        with_page, without_page = throughput_with_and_without_page(folder, phase_seconds, phases)
        refresh_ms, spec_bytes = refresh_cost_with_history(Path(tmp) / "long", 10**6, repeats)

    ratio = pair_ratio(with_page, without_page)
    print_table(
        [
            (
                "steps/s, live page open vs none",
                median_range(with_page),
                median_range(without_page),
                f"{ratio:.3f}",
                "≥ 0.9",
                ratio >= 0.9,
            ),
            (
                "one live refresh, 10^6 steps (ms, server)",
                median_range(refresh_ms, 1),
                "",
                "",
                "≤ 150 ms",
                statistics.median(refresh_ms) <= 150,
            ),
            (
                "plotly bytes per refresh (KB, server)",
                median_range([b / 1e3 for b in spec_bytes], 1),
                "",
                "",
                "≤ 300 KB",
                statistics.median(spec_bytes) <= 300e3,
            ),
        ]
    )

    low, high = pair_ratio_interval(with_page, without_page)
    print(
        f"\n{len(with_page)} pairs of {phase_seconds} s phases; 95% bootstrap interval of the "
        f"ratio: {low:.3f}–{high:.3f}"
    )


if __name__ == "__main__":
    main()
