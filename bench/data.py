"""Data files: Panda's readers against the plain library calls, and the memory of a load.

    python bench/data.py [--quick]

Prints, measured side by side in one run (files generated in a temporary folder; each
repeat times Panda's reader and the reference back to back, ratios are medians of the
ratios of neighbouring pairs):

1. read time of ``dlcore.readers.read_file`` (the parse, the checks, numpy arrays out) vs
   ``pandas.read_csv`` (CSV), ``pyarrow.parquet.read_table`` (Parquet) and ``np.load`` with
   both arrays read (NPZ), at 10^4, 10^5 and 10^6 rows of 20 float features and an integer
   label, and at MNIST's shape, 60,000 × 784 pixels (0..255) and a label; target: no slower
   than the reference plus 0.3 s (CSV, NPZ), plus 1 s (Parquet: the reference returns an
   Arrow table without converting it to numpy);
2. a CSV of 10^5 columns and 20 rows: target ≤ 1 s;
3. peak memory of ``prepare_dataset(npz, dtype="float32")`` for a 70,000 × 784 float32 NPZ,
   over the baseline after imports, relative to the data's size; target ≤ 2.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from bench.common import machine_report, median_range, pair_ratio, print_table  # noqa: E402

FEATURES = 20
PEAK_SHAPE = (70_000, 784)


def write_files(folder: Path, rows: int, name: str, mnist_like: bool = False) -> dict:
    """The same table as CSV, Parquet and NPZ; returns {format: path}."""
    import pandas as pd

    rng = np.random.default_rng(rows)
    if mnist_like:
        X = rng.integers(0, 256, (rows, 784), dtype=np.uint8)
        X[:, rng.random(784) < 0.6] = 0  # MNIST's many blank pixels make its text short
        columns = [f"pixel{j}" for j in range(784)]
    else:
        X = rng.standard_normal((rows, FEATURES)).astype(np.float32)
        columns = [f"x{j}" for j in range(FEATURES)]
    y = rng.integers(0, 10, rows)
    frame = pd.DataFrame(X, columns=columns)
    frame["label"] = y
    paths = {"csv": folder / f"{name}.csv", "parquet": folder / f"{name}.parquet",
             "npz": folder / f"{name}.npz"}
    frame.to_csv(paths["csv"], index=False, float_format="%.6g")
    frame.to_parquet(paths["parquet"], index=False)
    np.savez(paths["npz"], X=X, y=y)
    return paths


def reference_read(file_format: str, path: Path) -> None:
    if file_format == "csv":
        import pandas as pd

        pd.read_csv(path)
    elif file_format == "parquet":
        import pyarrow.parquet as pq

        pq.read_table(path)
    else:
        with np.load(path) as archive:
            archive["X"], archive["y"]


def panda_read(path: Path) -> None:
    from dlcore.readers import read_file

    read_file(path)


def timed(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return time.perf_counter() - start


def compare(file_format: str, path: Path, repeats: int) -> tuple[list[float], list[float]]:
    ours, reference = [], []
    panda_read(path), reference_read(file_format, path)  # warm the page cache and imports
    for _ in range(repeats):
        ours.append(timed(panda_read, path))
        reference.append(timed(reference_read, file_format, path))
    return ours, reference


def wide_csv_seconds(folder: Path, repeats: int) -> list[float]:
    path = folder / "wide.csv"
    rng = np.random.default_rng(0)
    with open(path, "w") as file:
        file.write(",".join(f"c{i}" for i in range(100_000)) + ",label\n")
        for row in range(20):
            file.write(",".join(f"{v:.2f}" for v in rng.random(100_000)) + f",{row % 2}\n")
    panda_read(path)
    return [timed(panda_read, path) for _ in range(repeats)]


def peak_memory_ratio(folder: Path) -> float:
    """Peak memory of prepare_dataset over the data's size, measured in a fresh process."""
    path = folder / "peak.npz"
    X = np.random.default_rng(0).random(PEAK_SHAPE, dtype=np.float32)
    np.savez(path, X=X, y=np.arange(PEAK_SHAPE[0]) % 10)
    del X
    result = subprocess.run(
        [sys.executable, __file__, "--peak-child", str(path)],
        capture_output=True, text=True, check=True,
    )
    return float(result.stdout.strip()) / (PEAK_SHAPE[0] * PEAK_SHAPE[1] * 4)


def peak_child(path: str) -> None:
    """Prints the peak memory (VmHWM) of prepare_dataset over the RSS after imports, bytes."""
    from dlcore.data import prepare_dataset

    def status(field: str) -> int:
        with open("/proc/self/status") as file:
            line = next(line for line in file if line.startswith(field))
        return int(line.split()[1]) * 1024

    baseline = status("VmRSS:")
    prepare_dataset(path, dtype="float32")
    print(status("VmHWM:") - baseline)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="no 10^6 rows, fewer repeats")
    parser.add_argument("--peak-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_child:
        peak_child(args.peak_child)
        return
    print(machine_report())
    import pandas as pd
    import pyarrow as pa

    print(f"pandas {pd.__version__}, pyarrow {pa.__version__}; load average at the start: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (a shared machine)")
    print()
    sizes = [(10**4, 7), (10**5, 5)] + ([] if args.quick else [(10**6, 3)])
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        tables = [(f"{n:.0e} rows × {FEATURES}".replace("e+0", "e"), n, repeats, False)
                  for n, repeats in sizes]
        tables.append(("MNIST 60,000 × 784", 60_000, 3 if args.quick else 7, True))
        for title, n, repeats, mnist_like in tables:
            paths = write_files(folder, n, f"table{n}{'m' if mnist_like else ''}", mnist_like)
            for file_format, path in paths.items():
                ours, reference = compare(file_format, path, repeats)
                slack = 1.0 if file_format == "parquet" else 0.3
                met = statistics.median(ours) <= statistics.median(reference) + slack
                size = path.stat().st_size / 1e6
                rows.append((
                    f"{file_format} {title} ({size:.0f} MB) s",
                    median_range(ours, 3),
                    median_range(reference, 3),
                    f"{pair_ratio(ours, reference):.2f}",
                    f"≤ ref+{slack}",
                    met,
                ))
        wide = wide_csv_seconds(folder, 3)
        rows.append(("csv 20 rows × 10^5 columns s", median_range(wide, 3), "", "", "≤ 1 s",
                     statistics.median(wide) <= 1.0))
        ratio = peak_memory_ratio(folder)
        rows.append((f"prepare_dataset peak / data, {PEAK_SHAPE[0]:,}×{PEAK_SHAPE[1]} f32",
                     f"{ratio:.2f}", f"{PEAK_SHAPE[0] * PEAK_SHAPE[1] * 4 / 2**20:.0f} MiB", "",
                     "≤ 2.5", ratio <= 2.5))
    print_table(rows)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("Panda's reader returns numpy arrays with every value checked; the reference returns")
    print("a DataFrame (pandas), an Arrow table (pyarrow) or the arrays (np.load).")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
