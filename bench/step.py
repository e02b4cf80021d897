"""One training step of dlcore against the same step in PyTorch (issue 5, part 1).

Run from the project root::

    python bench/step.py                  # full run, about 4 minutes
    python bench/step.py --quick          # a rough look, under a minute
    python bench/step.py --profile mnist  # where dlcore's step spends its time

For each network size and dtype the same network is built in dlcore and in
torch (Linear without bias + BatchNorm1d + ReLU per hidden layer, a final
Linear with bias, cross-entropy, Adam), from the same initial weights. One step
of each is compared numerically first; then blocks of steps of the two are
timed in alternation, so that the drift of a shared, noisy machine hits both
alike. Medians are per step; the ratio is dlcore's median over torch's.

What a step is, on each side:

- dlcore: what ``dlcore.trainer.Trainer`` does per step — the next indices of a
  ``MiniBatchIterator``, ``X_train[index]``, ``dropout_masks`` (off),
  ``loss_and_grads(..., reuse_buffers=True)``, ``Adam.step`` and
  ``update_running_stats``. (The Trainer's monitoring — gradient norm,
  update-to-weight ratios, history — is left out here; bench/engine.py covers it.)
- torch: the same indices, ``X_train[index]``, ``zero_grad(set_to_none=True)``,
  forward, ``cross_entropy``, ``backward()``, ``Adam.step()``; model in train
  mode, ``torch.set_num_threads`` left at its default.

"matmul" is the step's matrix products alone (forward, dW and dx of every layer
but the first layer's dx, which dlcore skips), timed with numpy's BLAS on the
same shapes, interleaved with the step blocks; its fraction is of dlcore's step.
"floor" is those products over torch's whole step: no dlcore step on this BLAS can
have a lower ratio, so a target below the floor cannot be met on that machine.

Every configuration runs in two fresh worker processes (dlcore's never imports
torch), twice: with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as on a user's
machine (the targets apply to this case), and with them as set in the calling
environment. The driver pauses after each block (see SETTLE) so that one
library's idle threads, still spinning, don't take a core from the other's block.
Blocks are short (BLOCK_SECONDS) and many: on a shared 2-core machine the noise
comes in bursts that slow any 2-thread BLAS many times over, and a median over
many alternating blocks lets both sides share them.

``--profile SIZE`` instead times the parts of dlcore's step in this process
(min and median per step): where its time goes, and what is not matrix products.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import machine_report  # noqa: E402

BLAS_ENV_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
LR = 1e-3
BN_MOMENTUM = 0.9  # dlcore's β; torch's BatchNorm1d momentum=0.1 is the same average
SEED = 0
# (cost, grads and running means relative; weights after the step in units of lr)
CHECK_TOLERANCE = {"float64": (1e-9, 1e-6), "float32": (1e-4, 0.5)}
# Pause after each block of a worker: OpenBLAS's idle threads spin (sched_yield)
# for ~0.1 s after a call (measured: 0.1 s of CPU while the caller sleeps; torch's
# threads: < 0.01 s), and would otherwise take a core from torch's next block.
SETTLE = {"dlcore": 0.12, "torch": 0.03}
BLOCK_SECONDS = 0.03


@dataclass(frozen=True)
class Size:
    name: str
    n_features: int
    hidden: tuple[int, ...]
    n_classes: int
    batch_size: int
    n_train: int  # examples to draw batches from (gathers come from memory, not cache)
    target: float  # dlcore/torch at most this, float32 with the BLAS env unset
    matmul_target: float | None  # matmul fraction of dlcore's step at least this

    @property
    def label(self) -> str:
        layers = "→".join(str(n) for n in (self.n_features, *self.hidden, self.n_classes))
        return f"{self.name} {layers} b{self.batch_size}"


SIZES = {
    size.name: size
    for size in (
        Size("digits", 64, (64, 64), 10, 64, 1437, 0.35, None),
        Size("mnist", 784, (256, 128), 10, 256, 16384, 0.5, 0.6),
        Size("large", 784, (1024, 1024), 10, 512, 16384, 0.7, 0.6),
    )
}
DTYPES = ("float32", "float64")


# ---------------------------------------------------------------------------
# The two steps (run inside the worker processes)
# ---------------------------------------------------------------------------


def training_set(size: Size, dtype: str):
    """Standardised random features and labels, the same in both workers."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((size.n_train, size.n_features), dtype=np.float32).astype(dtype)
    y = rng.integers(0, size.n_classes, size.n_train)
    return X, y


def dlcore_setup(size: Size, dtype: str):
    """A dlcore network, Adam and batch iterator; returns ``(net, step)``."""
    import numpy as np

    from dlcore.data import MiniBatchIterator
    from dlcore.network import Architecture, Network
    from dlcore.optim import Adam

    X_train, y_train = training_set(size, dtype)
    X_train.flags.writeable = False  # as the Trainer's data sets
    net = Network(Architecture(size.n_features, size.hidden, size.n_classes, dtype=dtype), SEED)
    optimizer = Adam(LR)
    batches = MiniBatchIterator(size.n_train, size.batch_size, seed=SEED)
    dropout_rng = np.random.default_rng(SEED)

    def step():
        index = batches.next_batch()
        X, y = X_train[index], y_train[index]
        masks = net.dropout_masks(len(index), 1.0, dropout_rng)
        cost, grads, batch_stats = net.loss_and_grads(X, y, 0.0, masks, reuse_buffers=True)
        optimizer.lr = LR
        optimizer.step(net.params, grads)
        net.update_running_stats(batch_stats, BN_MOMENTUM)
        return cost, grads

    return net, step


def torch_setup(size: Size, dtype: str, net):
    """The same model in torch, with ``net``'s weights; returns ``(model, step)``."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    from dlcore.data import MiniBatchIterator
    from dlcore.network import BN_EPS

    torch_dtype = getattr(torch, dtype)
    sizes = (size.n_features, *size.hidden, size.n_classes)
    modules = []
    for l in range(1, len(sizes)):
        last = l == len(sizes) - 1
        linear = nn.Linear(sizes[l - 1], sizes[l], bias=last, dtype=torch_dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.ascontiguousarray(net.params[f"fc{l}.W"].T)))
            if last:
                linear.bias.copy_(torch.from_numpy(net.params[f"fc{l}.b"]))
        modules.append(linear)
        if not last:
            modules += [nn.BatchNorm1d(sizes[l], eps=BN_EPS, momentum=1.0 - BN_MOMENTUM,
                                       dtype=torch_dtype), nn.ReLU()]
    model = nn.Sequential(*modules)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)

    X_np, y_np = training_set(size, dtype)
    X_train, y_train = torch.from_numpy(X_np), torch.from_numpy(y_np)
    batches = MiniBatchIterator(size.n_train, size.batch_size, seed=SEED)

    def step():
        index = torch.from_numpy(batches.next_batch())
        X, y = X_train[index], y_train[index]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        return loss

    return model, step


def check_one_step(size: Size, dtype: str) -> dict:
    """One step of each from the same weights and batch: the largest relative differences.

    cost and gradients relative to their largest magnitude; weights after the Adam step
    in units of the learning rate (the size of Adam's first step); running means
    relative to their largest magnitude.
    """
    import numpy as np

    net, dlcore_step = dlcore_setup(size, dtype)
    model, torch_step = torch_setup(size, dtype, net)
    cost, grads = dlcore_step()
    loss = torch_step()

    def rel(ours, theirs):
        theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
        return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))

    linears = [m for m in model if type(m).__name__ == "Linear"]
    bns = [m for m in model if type(m).__name__ == "BatchNorm1d"]
    grad_err, weight_err, mean_err = 0.0, 0.0, 0.0
    for l, linear in enumerate(linears, start=1):
        grad_err = max(grad_err, rel(grads[f"fc{l}.W"], linear.weight.grad.T))
        weight_err = max(weight_err, float(np.max(np.abs(
            net.params[f"fc{l}.W"] - linear.weight.detach().numpy().T))) / LR)
        if linear.bias is not None:
            grad_err = max(grad_err, rel(grads[f"fc{l}.b"], linear.bias.grad))
    for l, bn in enumerate(bns, start=1):
        grad_err = max(grad_err, rel(grads[f"bn{l}.gamma"], bn.weight.grad),
                       rel(grads[f"bn{l}.beta"], bn.bias.grad))
        weight_err = max(weight_err, float(np.max(np.abs(
            net.params[f"bn{l}.gamma"] - bn.weight.detach().numpy()))) / LR)
        mean_err = max(mean_err, rel(net.buffers[f"bn{l}.running_mean"], bn.running_mean))
    return {"cost": abs(cost - loss.item()) / abs(loss.item()), "grads": grad_err,
            "weights/lr": weight_err, "running_mean": mean_err}


def matmul_setup(size: Size, dtype: str):
    """The step's matrix products alone, into preallocated arrays: a callable."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    m = size.batch_size
    sizes = (size.n_features, *size.hidden, size.n_classes)
    inputs = [rng.standard_normal((m, n)).astype(dtype) for n in sizes]  # X, a1, ..., dlogits
    shapes = zip(sizes[:-1], sizes[1:], strict=True)
    weights = [rng.standard_normal(shape).astype(dtype) for shape in shapes]
    outputs = [np.empty((m, n), dtype) for n in sizes]
    weight_grads = [np.empty_like(W) for W in weights]

    def products():
        for l, W in enumerate(weights):
            np.matmul(inputs[l], W, out=outputs[l + 1])  # forward z = a W
        for l in reversed(range(len(weights))):
            np.matmul(inputs[l].T, inputs[l + 1], out=weight_grads[l])  # dW = aᵀ dz
            if l > 0:
                np.matmul(inputs[l + 1], weights[l].T, out=outputs[l])  # dx = dz Wᵀ

    return products


def worker(kind: str, size: Size, dtype: str) -> None:
    """Serve ``run <n>`` / ``matmul <n>`` on stdin with seconds per call on stdout.

    Each block starts with one untimed call: a training loop runs steps back to back,
    and the pause between blocks (SETTLE) lets threads sleep and caches go cold.
    """
    info = {}
    if kind == "dlcore":
        _, step = dlcore_setup(size, dtype)
        products = matmul_setup(size, dtype)
        info["blas"] = next(line for line in machine_report().splitlines()
                            if line.startswith("BLAS:"))
    else:
        import torch

        net, _ = dlcore_setup(size, dtype)  # only for its initial weights
        _, step = torch_setup(size, dtype, net)
        del net
        info["check"] = check_one_step(size, dtype)
        info["threads"] = torch.get_num_threads()
        info["blas"] = "MKL" if torch.backends.mkl.is_available() else "not MKL"
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        command, n = line.split()
        function = step if command == "run" else products
        function()  # untimed: wakes the threads and refills the caches after the pause
        start = time.perf_counter()
        for _ in range(int(n)):
            function()
        print((time.perf_counter() - start) / int(n), flush=True)


def profile(size: Size, dtype: str, steps: int) -> None:
    """Time each part of dlcore's step (the functions it calls), min and median per step.

    Runs in this process with the BLAS env as given. The layer functions are wrapped
    with timers, which adds ~1 µs per call; "matmul" is the products alone as in the
    table, timed after each step.
    """
    import functools

    import numpy as np

    from dlcore import layers, network, optim
    from dlcore.data import MiniBatchIterator

    spent: dict[str, float] = {}

    def timed(function, label):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[label] = spent.get(label, 0.0) + time.perf_counter() - start
        return wrapper

    parts = {
        (layers, "dense_forward"): "dense forward (products, + bias)",
        (layers, "dense_backward"): "dense backward (products, + bias)",
        (layers, "batchnorm_forward"): "batchnorm forward",
        (layers, "batchnorm_backward"): "batchnorm backward",
        (layers, "softmax_cross_entropy"): "softmax cross-entropy",
        (optim.Optimizer, "step"): "Adam step",
        (network.Network, "update_running_stats"): "running statistics",
        (MiniBatchIterator, "next_batch"): "next batch indices",
    }
    for (owner, name), label in parts.items():
        setattr(owner, name, timed(getattr(owner, name), label))
    relu_forward, relu_backward = layers.ACTIVATIONS["relu"]
    layers.ACTIVATIONS["relu"] = (timed(relu_forward, "relu forward"),
                                  timed(relu_backward, "relu backward"))
    network.Network.loss_and_grads = timed(network.Network.loss_and_grads, "(loss_and_grads)")

    _, step = dlcore_setup(size, dtype)
    products = matmul_setup(size, dtype)
    per_step: dict[str, list[float]] = {}
    for i in range(steps + 10):
        spent.clear()
        start = time.perf_counter()
        step()
        spent["STEP"] = time.perf_counter() - start
        spent["rest: X_train[index], Python"] = spent["STEP"] - sum(
            seconds for label, seconds in spent.items()
            if label not in ("STEP", "(loss_and_grads)"))
        start = time.perf_counter()
        products()
        spent["matmul alone (not in the step)"] = time.perf_counter() - start
        if i >= 10:
            for label, seconds in spent.items():
                per_step.setdefault(label, []).append(seconds * 1e6)
    step_median = float(np.median(per_step["STEP"]))
    print(f"dlcore step, {size.label} {dtype}, {steps} steps, BLAS env "
          f"{'as set' if any(k in os.environ for k in BLAS_ENV_VARS) else 'unset'}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'part':<40} {'min µs':>9} {'median µs':>10} {'of step (medians)':>18}")
    for label, values in sorted(per_step.items(), key=lambda kv: -float(np.median(kv[1]))):
        median = float(np.median(values))
        print(f"{label:<40} {min(values):9.1f} {median:10.1f} {median / step_median:18.0%}")


# ---------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------


class Worker:
    """A worker process; ``info`` waits for it to be ready."""

    def __init__(self, kind: str, size: Size, dtype: str, env: dict):
        self.kind = kind
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker", kind, size.name, dtype],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        self._info = None

    @property
    def info(self) -> dict:
        if self._info is None:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.kind} worker failed to start")
            self._info = json.loads(line)
        return self._info

    def time(self, command: str, n: int) -> float:
        """Seconds per call of ``n`` calls."""
        self.process.stdin.write(f"{command} {n}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def measure(size: Size, dtype: str, env: dict, seconds: float) -> dict:
    """Alternate blocks of dlcore steps, torch steps and matmuls for about ``seconds``."""
    dlcore, torch = Worker("dlcore", size, dtype, env), Worker("torch", size, dtype, env)
    try:
        for started in (dlcore, torch):  # both start up at once; wait for them
            _ = started.info
        # warm up (first-call allocations, BLAS thread start-up), then size the blocks
        for worker_, command in ((dlcore, "run"), (torch, "run"), (dlcore, "matmul")):
            worker_.time(command, 3)
        per_step = max(dlcore.time("run", 3), torch.time("run", 3))
        n = max(1, round(BLOCK_SECONDS / per_step))
        times = {"dlcore": [], "torch": [], "matmul": []}
        blocks = [("dlcore", dlcore, "run"), ("torch", torch, "run"), ("matmul", dlcore, "matmul")]
        deadline = time.monotonic() + seconds
        round_ = 0
        while time.monotonic() < deadline or round_ < 4:
            order = blocks if round_ % 2 == 0 else blocks[::-1]  # ABC CBA: order effects cancel
            for name, worker_, command in order:
                times[name].append(worker_.time(command, n) * 1e3)
                time.sleep(SETTLE[worker_.kind])
            round_ += 1
    finally:
        dlcore.close()
        torch.close()
    return {"times": times, "dlcore_info": dlcore.info, "torch_info": torch.info}


def env_cases() -> list[tuple[str, dict]]:
    """(label, environment): the BLAS variables unset, then as set here if they are."""
    unset = {k: v for k, v in os.environ.items() if k not in BLAS_ENV_VARS}
    cases = [("unset", unset)]
    if any(k in os.environ for k in BLAS_ENV_VARS):
        label = " ".join(f"{k.removeprefix('OPENBLAS_')}={os.environ[k]}"
                         for k in BLAS_ENV_VARS if k in os.environ)
        cases.append((label, dict(os.environ)))
    return cases


COLUMNS = (("size", 28), ("dtype", 8), ("BLAS env", 28), ("dlcore ms", 24), ("torch ms", 24),
           ("ratio", 5), ("target", 11), ("met?", 9), ("matmul ms", 9), ("mm frac", 7),
           ("floor", 5), ("check", 8), ("Δw/lr", 7))


def table_row(size: Size, dtype: str, env_label: str, result: dict) -> tuple[list[str], str | None]:
    """The printed cells of one configuration, and a failure message if its check failed."""
    times, check = result["times"], result["torch_info"]["check"]
    dlcore, torch, matmul = (statistics.median(times[k]) for k in ("dlcore", "torch", "matmul"))
    ratio, fraction = dlcore / torch, matmul / dlcore
    graded = dtype == "float32" and env_label == "unset"
    missed = [name for name, ok in (
        ("ratio", ratio <= size.target),
        ("mm", size.matmul_target is None or fraction >= size.matmul_target)) if not ok]
    target = f"≤{size.target:.2f}" + (f" ≥{size.matmul_target:.0%}" if size.matmul_target else "")
    values = max(check["cost"], check["grads"], check["running_mean"])
    value_tolerance, weight_tolerance = CHECK_TOLERANCE[dtype]
    failure = None
    if values > value_tolerance or check["weights/lr"] > weight_tolerance:
        failure = f"{size.name} {dtype} {env_label}: one step differs from torch: {check}"
    cells = [size.label, dtype, env_label, spread(times["dlcore"]), spread(times["torch"]),
             f"{ratio:.2f}", target if graded else "",
             ("NO: " + "+".join(missed) if missed else "yes") if graded else "",
             f"{matmul:.3f}", f"{fraction:.0%}", f"{matmul / torch:.2f}",
             f"{values:.1e}", f"{check['weights/lr']:.1e}"]
    return cells, failure


def spread(values: list[float]) -> str:
    """``median (min–max)``."""
    return f"{statistics.median(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def print_cells(cells: list[str]) -> None:
    print(" ".join(cell.ljust(width) if i < 5 or i == 7 else cell.rjust(width)
                   for i, (cell, (_, width)) in enumerate(zip(cells, COLUMNS, strict=True))),
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="float32 with the BLAS env unset only, shorter runs (rough figures)")
    parser.add_argument("--profile", choices=SIZES, metavar="SIZE",
                        help=f"time the parts of dlcore's step instead ({', '.join(SIZES)})")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="for --profile")
    parser.add_argument("--worker", nargs=3, metavar=("KIND", "SIZE", "DTYPE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, size, dtype = args.worker
        worker(kind, SIZES[size], dtype)
        return
    if args.profile:
        size = SIZES[args.profile]
        profile(size, args.dtype, steps=max(20, round(400 * 256 / size.batch_size
                                                        * 256 / max(size.hidden))))
        return

    print(machine_report())
    try:
        import torch
    except ImportError:
        sys.exit("torch is not installed: pip install -r requirements-dev.txt")
    print(f"torch {torch.__version__}")
    if not any(k in os.environ for k in BLAS_ENV_VARS):
        print(f"{' and '.join(BLAS_ENV_VARS)} are not set: only the user's case is measured.")
    print("Median ms per step (min–max) over alternating blocks; ratio = dlcore/torch.")
    print("Load average before the run (1, 5, 15 min): {:.2f} {:.2f} {:.2f}\n".format(
        *os.getloadavg()))

    seconds = 2.0 if args.quick else 12.0
    dtypes = ("float32",) if args.quick else DTYPES
    cases = env_cases()[:1] if args.quick else env_cases()
    print_cells([name for name, _ in COLUMNS])
    print("-" * (sum(width for _, width in COLUMNS) + len(COLUMNS) - 1))
    kernels, failures = {}, []
    for env_label, env in cases:
        for size in SIZES.values():
            for dtype in dtypes:
                result = measure(size, dtype, env, seconds)
                cells, failure = table_row(size, dtype, env_label, result)
                print_cells(cells)
                kernels[env_label] = result["dlcore_info"]["blas"]
                torch_info = result["torch_info"]
                if failure:
                    failures.append(failure)

    print()
    for env_label, kernel in kernels.items():
        print(f"dlcore's numpy with the BLAS env {env_label}: {kernel}")
    print(f"torch: BLAS {torch_info['blas']}, torch.get_num_threads() = {torch_info['threads']}")
    print("Targets (float32, env unset): ratio ≤ its target and, on mnist and large, matmul "
          "fraction (mm) ≥ 60%.\n"
          "floor: dlcore's matmuls alone / torch's step, the lowest ratio dlcore's step could\n"
          "  reach with numpy's BLAS if everything but the products took no time;\n"
          "check: one step from the same weights and batch, the largest relative difference\n"
          "  from torch of the cost, the gradients and the running means;\n"
          "Δw/lr: the largest difference of the weights after Adam's first step, in units of\n"
          "  lr (that step is ≈ ±lr per weight; in float32 a gradient at rounding level can\n"
          "  flip its sign, so up to 0.5 is accepted there).")
    print("Load average after the run (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(
        *os.getloadavg()))
    for failure in failures:
        print("CHECK FAILED:", failure)
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
