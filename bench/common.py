"""What every benchmark prints first: the machine, its BLAS and the library versions."""

from __future__ import annotations

import os
import platform
import statistics


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
