"""What the pages show beyond the curves, computed from a network and the data.

- :func:`batchnorm_picture`: per BN layer the running estimates, the last mini-batch's
  statistics, the true population statistics of the training set and γ, β.
- :func:`decision_regions`: the predicted class on a grid over 2-D data.
- :func:`inspect_network`: accuracy, cost and confusion in inference mode (a checkpoint
  comparison), bounded for data sets with many classes.
- :func:`weight_distance`: ‖θa − θb‖ per layer and in total.

All read-only: nothing here changes a network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

#: Up to this many classes a comparison holds full confusion matrices; beyond it (C² cells
#: of int64 would take 800 MB for 10⁴ classes) the most frequent confusions instead.
MAX_CONFUSION_CLASSES = 100
TOP_CONFUSIONS = 20


def batchnorm_picture(network, X_train, last_batch_stats: Mapping) -> tuple[dict, dict]:
    """``(latest, row)``: per BN layer a read-only dict of its statistics now, and the row
    of running and batch statistics for the BN history table (NaN before any batch)."""
    population = network.population_stats(X_train)
    latest, row = {}, {}
    for layer in network.bn_layers:
        batch_mean, batch_var = last_batch_stats.get(layer, (None, None))
        running_mean = network.buffers[f"{layer}.running_mean"].copy()
        running_var = network.buffers[f"{layer}.running_var"].copy()
        population_mean, population_var = population[layer]
        stats = {
            "running_mean": running_mean,
            "running_var": running_var,
            "batch_mean": batch_mean.copy() if batch_mean is not None else None,
            "batch_var": batch_var.copy() if batch_var is not None else None,
            "population_mean": population_mean.copy(),
            "population_var": population_var.copy(),
            # how far the running estimates are from the truth they estimate
            "mean_error": running_mean - population_mean,
            "var_error": running_var - population_var,
            "gamma": network.params[f"{layer}.gamma"].copy(),
            "beta": network.params[f"{layer}.beta"].copy(),
        }
        for array in stats.values():
            if array is not None:
                array.flags.writeable = False
        latest[layer] = stats
        for name in ("running_mean", "running_var", "batch_mean", "batch_var"):
            value = stats[name]
            row[f"{layer}/{name}"] = value if value is not None else np.nan
    return latest, row


def decision_regions(network, X, y, resolution: int = 80) -> Mapping:
    """Predicted class on a grid over (standardised) 2-D data X: (m, 2), labels y: (m,)."""
    low, high = X.min(axis=0) - 0.5, X.max(axis=0) + 0.5
    xs = np.linspace(low[0], high[0], resolution)
    ys = np.linspace(low[1], high[1], resolution)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(X.dtype)
    classes = network.predict(grid).reshape(resolution, resolution)
    for array in (xs, ys, classes):
        array.flags.writeable = False
    return MappingProxyType({"x": xs, "y": ys, "classes": classes, "points": X, "labels": y})


def inspect_network(network, data, l2: float) -> dict:
    """Train/dev accuracy and cost in inference mode, and how the classes are confused.

    ``confusion_train`` / ``confusion_dev``: (C, C) counts, rows the true class, columns
    the predicted one, when C ≤ MAX_CONFUSION_CLASSES, else None; ``top_confusions_*``:
    the most frequent (true, predicted, count) mistakes, always.
    """
    result = {}
    for part, X, y in (("train", data.X_train, data.y_train), ("dev", data.X_dev, data.y_dev)):
        logits = network.forward(X)
        predicted = logits.argmax(axis=1)
        result[f"{part}_accuracy"], result[f"{part}_cost"] = network.evaluate(X, y, l2)
        result[f"confusion_{part}"] = (confusion_matrix(y, predicted, data.n_classes)
                                       if data.n_classes <= MAX_CONFUSION_CLASSES else None)
        result[f"top_confusions_{part}"] = top_confusions(y, predicted)
    return result


def confusion_matrix(y_true, y_pred, n_classes) -> np.ndarray:
    """(C, C) counts: rows are true classes, columns predicted ones."""
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes**2).reshape(
        n_classes, n_classes)


def top_confusions(y_true, y_pred, k: int = TOP_CONFUSIONS) -> list[tuple[int, int, int]]:
    """The ``k`` most frequent mistakes as (true class, predicted class, count), O(m log m)."""
    wrong = y_true != y_pred
    pairs, counts = np.unique(np.stack([y_true[wrong], y_pred[wrong]]), axis=1,
                              return_counts=True)
    order = np.argsort(-counts, kind="stable")[:k]
    return [(int(pairs[0, i]), int(pairs[1, i]), int(counts[i])) for i in order]


def weight_distance(a, b) -> dict:
    """‖θa − θb‖ over all parameters of two networks, and relative to ‖θa‖, per
    parameter and in total."""
    out, total_diff, total_norm = {}, 0.0, 0.0
    for key, value in a.params.items():
        diff = float(np.sum((value - b.params[key]) ** 2))
        norm = float(np.sum(value**2))
        out[key] = math.sqrt(diff)
        total_diff, total_norm = total_diff + diff, total_norm + norm
    out["total"] = math.sqrt(total_diff)
    out["relative"] = math.sqrt(total_diff / total_norm) if total_norm else 0.0
    return out
