"""The step loop: one mini-batch step on a training state, an evaluation, the guard.

Pure of locks, disk and events: :func:`train_step` changes the state it is given and
returns what happened; whoever calls it (the live run's worker, a sandbox, a search
trial) records the row, publishes it, checkpoints. So every one of them trains with the
very same step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dlcore.history import PERCENTILES
from dlcore.optim import flat_span
from dlcore.state import TrainingState

#: Evaluations use at most this many training examples and this many dev examples: the
#: first ones, which the split drew at random (a given dev split is sampled evenly). On a
#: 60,000-row set a full evaluation costs hundreds of steps; a 10⁴-row sample estimates
#: accuracy to about ±0.5 points.
EVAL_ROWS = 10_000
#: Training rows the divergence guard checks a suspect cost against (_one_hard_batch).
CONFIRM_ROWS = 1_024


@dataclass(frozen=True)
class Divergence:
    """The step was refused before anything changed: ``cause`` says why."""

    cause: str
    cost: float


def train_step(state: TrainingState, data, alpha: float | None = None,
               divergence_factor: float = 10.0) -> dict | Divergence:
    """One mini-batch step: forward, backward, divergence check, update.

    Returns the step's row (``step``, ``epoch`` (at the step's start), ``cost``,
    ``lr`` (α used), ``grad_norm`` and ``update_ratio/<layer>`` = ‖ΔW‖/‖W‖), or a
    :class:`Divergence` — then nothing in the state changed except the data
    iterator and the dropout RNG, which drew this step's batch and masks.
    ``alpha`` overrides the schedule for this step (the LR range test sweeps it).
    """
    net, hp = state.network, state.hparams
    # 1) the next mini-batch and (if on) its dropout masks
    epoch = state.iterator.epoch
    alpha = state.alpha() if alpha is None else alpha
    index = state.iterator.next_batch()
    X, y = data.X_train[index], data.y_train[index]
    masks = net.dropout_masks(len(index), hp["keep_prob"], state.dropout_rng)
    # 2) forward and backward; the grads are the network's own buffers, valid this step
    cost, grads, batch_stats = net.loss_and_grads(X, y, hp["l2"], masks, l1=hp["l1"],
                                                  reuse_buffers=True)
    grad_norm = _grad_norm(state, grads)
    # 3) the divergence guard, before anything is changed
    cause = divergence_cause(cost, grad_norm, state.recent_costs, data.n_classes,
                             divergence_factor)
    if cause and math.isfinite(cost) and math.isfinite(grad_norm) and _one_hard_batch(
            state, data, divergence_factor):
        cause = None  # SGD meets such batches; refusing it would stop the run there forever
    if cause:
        return Divergence(cause, cost)
    # 4) update; ‖W‖ before the update and ‖ΔW‖ from the optimizer (no copy of W)
    columns = state.ratio_columns
    weight_norms = {key: _norm(net.params[key]) for key in columns}
    state.optimizer.lr = alpha
    update_norms = state.optimizer.step(net.params, grads, update_norms=columns)
    net.update_running_stats(batch_stats, hp["bn_momentum"])
    ratios = {
        column: update_norms[key] / weight_norms[key] if weight_norms[key] else 0.0
        for key, column in columns.items()
    }
    if not all(math.isfinite(r) for r in ratios.values()):
        return Divergence("parameters overflowed to inf/NaN in the update", cost)
    state.recent_costs.append(cost)
    state.last_batch_stats = batch_stats
    state.last_grads = grads  # the network's buffers: valid until its next step
    state.step += 1
    return {"step": state.step, "epoch": epoch, "cost": cost, "lr": alpha,
            "grad_norm": grad_norm, **ratios}


def divergence_cause(cost: float, grad_norm: float, recent_costs, n_classes: int,
                     factor: float) -> str | None:
    """Why this step must not be applied, or None: a NaN/inf cost or gradient, or a
    cost above ``factor`` × its recent average that is also worse than chance (which
    :func:`train_step` then checks is not one hard batch's alone)."""
    if not math.isfinite(cost):
        return f"cost is {cost}"
    if not math.isfinite(grad_norm):
        return "gradient holds NaN/inf"
    if recent_costs:
        # A multiple of the recent average, and worse than guessing uniformly (cost ln C):
        # near convergence a cost of 0.05 after 0.001 is noise, not divergence.
        recent = sum(recent_costs) / len(recent_costs)
        if cost > factor * recent and cost > math.log(n_classes):
            return f"cost {cost:.4g} exceeds {factor:g}× its recent average {recent:.4g}"
    return None


def _one_hard_batch(state: TrainingState, data, factor: float) -> bool:
    """Whether a finite cost spike belongs to this batch alone: the network's cost on the
    first CONFIRM_ROWS training rows (inference mode) is within the guard's bound.

    A converged net (recent cost 0.004) can meet a batch it gets confidently wrong (cost
    1.2 > ln 3). The guard refused it, and since a rollback replays the same data order
    the run met it again after every "roll back at α/2", for ever. A diverging net is
    bad on every batch. Only computed when the guard would refuse a step."""
    X, y = data.X_train[:CONFIRM_ROWS], data.y_train[:CONFIRM_ROWS]
    _, cost = state.network.evaluate(X, y, state.hparams["l2"], l1=state.hparams["l1"])
    return divergence_cause(cost, 0.0, state.recent_costs, data.n_classes, factor) is None


def evaluation_sample(data) -> tuple:
    """``(X_train, y_train, X_dev, y_dev)`` that evaluations use: views of at most
    EVAL_ROWS rows of each part (no copies)."""
    if data.dev_source == "split":  # the split shuffled it: its first rows are a sample
        X_dev, y_dev = data.X_dev[:EVAL_ROWS], data.y_dev[:EVAL_ROWS]
    else:  # a file's own test split, in file order: every k-th row
        stride = max(1, -(-len(data.y_dev) // EVAL_ROWS))
        X_dev, y_dev = data.X_dev[::stride], data.y_dev[::stride]
    return data.X_train[:EVAL_ROWS], data.y_train[:EVAL_ROWS], X_dev, y_dev


def evaluate(state: TrainingState, data) -> dict:
    """One row: train/dev accuracy and cost in inference mode (running BatchNorm
    statistics), dev accuracy in training mode (the dev set's own batch statistics), and
    each layer's weight sparsity (fraction of |w| < 1e-3: what L1 does that L2 doesn't).
    On :func:`evaluation_sample`'s rows."""
    net, l2, l1 = state.network, state.hparams["l2"], state.hparams["l1"]
    X_train, y_train, X_dev, y_dev = evaluation_sample(data)
    train_accuracy, train_cost = net.evaluate(X_train, y_train, l2, l1=l1)
    dev_accuracy, dev_cost = net.evaluate(X_dev, y_dev, l2, l1=l1)
    dev_accuracy_train_mode, _ = net.evaluate(X_dev, y_dev, l2, mode="train", l1=l1)
    sparsity = {f"sparsity/{layer}": value for layer, value in net.weight_sparsity().items()}
    return {"eval_step": state.step, "train_accuracy": train_accuracy,
            "dev_accuracy": dev_accuracy, "train_cost": train_cost, "dev_cost": dev_cost,
            "dev_accuracy_train_mode": dev_accuracy_train_mode, **sparsity,
            **distributions(state)}


def distributions(state: TrainingState) -> dict:
    """TensorBoard's distributions: each layer's weights and last gradients at the
    ``history.PERCENTILES`` (the gradients NaN, "not recorded", before the first step:
    journals keep NaN in these optional columns, see ``Schemas.journal_nan_keys``)."""
    out = {}
    for key, column in state.ratio_columns.items():
        layer = column.removeprefix("update_ratio/")
        out[f"weights/{layer}"] = np.percentile(state.network.params[key], PERCENTILES)
        grads = state.last_grads.get(key) if state.last_grads else None
        out[f"grads/{layer}"] = (np.percentile(grads, PERCENTILES) if grads is not None
                                 else np.full(len(PERCENTILES), np.nan))
    return out


def _grad_norm(state: TrainingState, grads) -> float:
    """‖g‖ over every gradient; one pass when they lie back to back in one array.

    The fast path hands back the same grads dict every step, so its span is looked up
    once per dict (a new batch size brings a new one).
    """
    seen, span = state.grad_span_cache
    if grads is not seen:
        span = flat_span(list(grads.values()))
        state.grad_span_cache = (grads, span)
    if span is not None:
        return math.sqrt(float(np.vdot(span, span)))
    return math.sqrt(sum(float(np.vdot(g, g)) for g in grads.values()))


def _norm(array: np.ndarray) -> float:
    """‖array‖₂ as one BLAS dot: ``np.linalg.norm``'s checks and reshapes cost more than
    the dot itself on the MNIST-like net's three weight matrices, every step.
    """
    return math.sqrt(float(np.vdot(array, array)))
