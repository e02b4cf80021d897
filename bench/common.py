"""What the benchmarks share: the machine report they print first, medians and pair
ratios, history filling and measuring, and one timed live refresh."""

from __future__ import annotations

import os
import platform
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_report() -> str:
    import numpy as np

    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        f"CPU: {cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"numpy {np.__version__}"
    ]
    try:
        from threadpoolctl import threadpool_info

        for pool in threadpool_info():
            if pool.get("user_api") == "blas":
                lines.append(
                    f"BLAS: {pool.get('internal_api')} {pool.get('version')} "
                    f"kernel={pool.get('architecture')} threads={pool.get('num_threads')}"
                )
    except ImportError:
        lines.append("BLAS: (install threadpoolctl to see which kernel runs)")
    blas_env = {
        k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ
    }
    lines.append(f"BLAS environment: {blas_env or 'OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset'}")
    return "\n".join(lines)


def median_range(values, digits: int = 0) -> str:
    """ "median (min–max)" of repeated measurements, the way every table here shows them."""
    values = list(values)
    median = statistics.median(values)
    return f"{median:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def pair_ratio(a_values, b_values) -> float:
    """The median over repeats of A/B, each A against the B measured next to it.

    Neighbouring runs share the machine's state of the moment (other load, clock), so
    their ratio cancels drift that a ratio of the two medians would keep.
    """
    return statistics.median(a / b for a, b in zip(a_values, b_values, strict=True))


def pair_ratio_interval(a_values, b_values, resamples: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval of :func:`pair_ratio`: how far its median could move
    on another run of as many pairs on the same machine.
    """
    import numpy as np

    ratios = np.array([a / b for a, b in zip(a_values, b_values, strict=True)])
    picks = np.random.default_rng(0).integers(0, len(ratios), (resamples, len(ratios)))
    low, high = np.percentile(np.median(ratios[picks], axis=1), [2.5, 97.5])
    return float(low), float(high)


def print_table(rows) -> None:
    """rows: (measure, median (min–max), reference, ratio text, target, met)."""
    print(
        f"{'measure':44} {'median (min–max)':>24} {'reference':>20} {'ratio':>6} {'target':>9}  met"
    )
    for name, value, reference, ratio, target, met in rows:
        print(
            f"{name:44} {value:>24} {reference:>20} {ratio:>6} {target:>9}  "
            f"{'yes' if met else 'NO'}"
        )


def fill_history(trainer, steps: int, eval_every: int = 50, random: bool = False) -> None:
    """Give a paused Trainer's active branch ``steps`` rows of history, as if it had
    trained them (zeros, or uniform random values), with the run's step and epoch set to
    match, so that its checkpoints stay consistent. Reaches into the engine on purpose:
    10⁶ real steps would take the benchmark an hour.
    """
    import numpy as np

    run = trainer._run
    branch = run.tree.current
    rng = np.random.default_rng(0)

    def column(n, dtype, shape=()):
        return rng.random((n, *shape)).astype(dtype) if random else np.zeros((n, *shape), dtype)

    rows = {name: column(steps, dtype, shape)
            for name, (dtype, shape) in branch.steps.schema.items()}
    rows["step"] = np.arange(1, steps + 1)
    n_evals = steps // eval_every
    evals = {name: column(n_evals, dtype, shape)
             for name, (dtype, shape) in branch.evals.schema.items()}
    evals["eval_step"] = np.arange(1, n_evals + 1) * eval_every
    iterator = run.state.iterator
    with run.lock:
        for start in range(0, steps, 10_000):  # as training does: old rows get bucketed
            branch.steps.extend({name: column[start:start + 10_000]
                                 for name, column in rows.items()})
        branch.evals.extend(evals)
        if branch.bn is not None:
            bn_row = {name: column(1, dtype, shape)[0]
                      for name, (dtype, shape) in branch.bn.schema.items()}
            for step in evals["eval_step"]:  # through the real path, which thins old rows
                branch.record_bn({**bn_row, "eval_step": step})
        run.state.step = steps
        iterator.load_state_dict({**iterator.state_dict(),
                                  "epoch": steps // iterator.batches_per_epoch})
    run.publish_state()


def history_mb(trainer) -> float:
    """MB held by the history of every branch of a Trainer's run (allocated, not used)."""
    tables = []
    for branch in trainer._run.tree.branches.values():
        tables += [branch.steps.exact, branch.steps.buckets, branch.evals]
        if branch.bn is not None:
            tables.append(branch.bn)
    return sum(c.nbytes for t in tables for c in t._data.values()) / 1e6


def chart_bytes(at) -> int:
    """Bytes of every chart an AppTest run sent: plotly specs and live charts' data."""
    return (sum(len(el.proto.spec) for el in at.get("plotly_chart"))
            + sum(len(el.proto.json) for el in at.get("bidi_component")))


#: One refresh of the training page's live view (tiles and four charts), timed server side.
REFRESH_SCRIPT = """
import time
import streamlit as st
from pages.panels.live import live_charts, tiles
from pages.shared.engine import holder

snapshot = holder().trainer.snapshot()
start = time.perf_counter()
tiles(snapshot)
live_charts(snapshot, None, False)
st.session_state["elapsed"] = time.perf_counter() - start
"""


def live_refresh(folder, repeats: int) -> tuple[list, list]:
    """``(ms, bytes)`` of ``repeats`` renders of the training page's live view, in an
    AppTest of the newest run in ``folder`` (opened first, not timed)."""
    from streamlit.testing.v1 import AppTest

    os.environ["PANDA_CHECKPOINT_DIR"] = str(folder)
    os.chdir(ROOT)
    at = AppTest.from_string(REFRESH_SCRIPT, default_timeout=300)
    at.run()  # opens the run
    times, sizes = [], []
    for _ in range(repeats):
        at.run()
        if at.exception:
            raise RuntimeError(f"the refresh failed: {at.exception[0].message}\n"
                               f"{at.exception[0].stack_trace}")
        times.append(at.session_state["elapsed"] * 1e3)
        sizes.append(chart_bytes(at))
    return times, sizes
