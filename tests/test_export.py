"""Exporting a checkpoint as a standalone model, and the history as CSV."""

import csv
import io
import json

import numpy as np

from dlcore import layers
from dlcore.export import history_csv, model_files
from dlcore.trainer import RunConfig, Trainer
from tests.test_trainer import run_steps


def test_exported_model_predicts_like_the_checkpoint_with_numpy_only(tmp_path):
    with Trainer(RunConfig(hidden=(32, 16), eval_every=10), tmp_path) as trainer:
        run_steps(trainer, 40)
        trainer.update(lr=2e-3)
        run_steps(trainer, 10)
        checkpoint = trainer.checkpoint("export me")
        npz_bytes, card_json = model_files(trainer, checkpoint)
        expected = trainer.inspect_checkpoint(checkpoint)
        data = trainer.data
    card = json.loads(card_json)
    assert card["checkpoint"] == checkpoint and card["step"] == 50
    assert card["architecture"]["hidden"] == [32, 16]
    assert card["hyperparameter_history"][0]["changes"]["lr"] == [1e-3, 2e-3]
    assert card["metrics"]["dev_accuracy"] == expected["dev_accuracy"]
    # follow the card's "usage" with plain numpy on raw (unstandardised) inputs
    weights = np.load(io.BytesIO(npz_bytes), allow_pickle=False)
    x_raw = data.X_dev * weights["input/std"] + weights["input/mean"]
    x = (x_raw - weights["input/mean"]) / weights["input/std"]
    for l in (1, 2):
        z = x @ weights[f"params/fc{l}.W"]
        z = layers.batchnorm_inference(
            z,
            weights[f"params/bn{l}.gamma"],
            weights[f"params/bn{l}.beta"],
            weights[f"buffers/bn{l}.running_mean"],
            weights[f"buffers/bn{l}.running_var"],
        )
        x = np.maximum(z, 0)
    predicted = (x @ weights["params/fc3.W"] + weights["params/fc3.b"]).argmax(axis=1)
    assert (predicted == data.y_dev).mean() == expected["dev_accuracy"]


def test_history_csv_has_a_row_per_step_and_evaluations_merged(tmp_path):
    with Trainer(RunConfig(hidden=(16,), eval_every=10), tmp_path) as trainer:
        snap = run_steps(trainer, 25)
    rows = list(csv.DictReader(io.StringIO(history_csv(snap))))
    assert len(rows) == 25 and rows[0]["step"] == "1"
    assert rows[9]["dev_accuracy"] != "" and rows[8]["dev_accuracy"] == ""
    assert float(rows[24]["cost"]) == snap.history["cost"][24]
