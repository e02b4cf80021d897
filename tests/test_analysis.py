"""Checkpoint inspection stays bounded however many classes the data set has."""

from __future__ import annotations

import time

import numpy as np

from dlcore import analysis
from dlcore.trainer import RunConfig, Trainer
from tests.test_trainer import run_steps


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
    matrix = analysis.confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [1, 0, 0]])


def test_top_confusions_are_the_most_frequent_mistakes_first():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([1, 1, 0, 0, 1, 1, 0, 2])
    assert analysis.top_confusions(y_true, y_pred, k=2) == [(0, 1, 2), (1, 0, 1)]
    assert analysis.top_confusions(y_true, y_true) == []


def test_a_checkpoint_of_a_run_with_many_classes_is_inspected_without_a_matrix(tmp_path):
    """2,000 classes: a full C × C matrix would be 4·10⁶ cells per part; a comparison keeps
    the most frequent confusions instead, in well under a second."""
    config = RunConfig(dataset="blobs", dataset_params={"n_samples": 6000, "n_classes": 2000,
                                                        "n_features": 4}, hidden=(16,),
                       eval_every=10)
    with Trainer(config, tmp_path) as trainer:
        run_steps(trainer, 5)
        checkpoint_id = trainer.checkpoint()
        start = time.perf_counter()
        result = trainer.inspect_checkpoint(checkpoint_id)
        seconds = time.perf_counter() - start
    assert result["confusion_dev"] is None and result["confusion_train"] is None
    top = result["top_confusions_dev"]
    assert 0 < len(top) <= analysis.TOP_CONFUSIONS
    assert [n for _, _, n in top] == sorted((n for _, _, n in top), reverse=True)
    assert seconds < 5, seconds
