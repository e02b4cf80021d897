"""Taking a model or a run's history out of Panda.

- :func:`model_files`: a checkpoint as a standalone ``.npz`` (weights, BN
  running statistics and the input standardisation) plus a JSON model card
  (architecture, classes, hyperparameter history, metrics). Loading it needs
  numpy only: see the card's ``usage``.
- :func:`history_csv`: a run's per-step history (evaluations merged in) as CSV.
"""

from __future__ import annotations

import csv
import io
import json

import numpy as np

from dlcore.assistant import lineage_checkpoints
from dlcore.checkpoint import json_safe


def model_files(trainer, checkpoint_id: str) -> tuple[bytes, str]:
    """``(npz_bytes, model_card_json)`` for one checkpoint of ``trainer``'s run."""
    inspected = trainer.inspect_checkpoint(checkpoint_id)
    arrays, meta = trainer.export_state(checkpoint_id)
    info = meta["info"]
    weights = {k: v for k, v in arrays.items() if k.startswith(("params/", "buffers/"))}
    weights["input/mean"] = np.asarray(trainer.data.feature_mean)
    weights["input/std"] = np.asarray(trainer.data.feature_std)
    buffer = io.BytesIO()
    np.savez(buffer, **weights)
    snap = trainer.snapshot()
    lineage_ids = {c["id"] for c in lineage_checkpoints(snap)}
    branch_events = (
        snap.branches[info["branch"]]["events"] if info["branch"] in snap.branches else ()
    )
    changes = [
        {"step": e["step"], "changes": json_safe(e["changes"])}
        for e in branch_events
        if e["kind"] == "change" and e["step"] <= info["step"]
    ]
    card = {
        "model": "Panda fully connected softmax classifier",
        "run_id": trainer.run_id,
        "checkpoint": checkpoint_id,
        "on_active_lineage": checkpoint_id in lineage_ids,
        "step": info["step"],
        "epoch": info["epoch"],
        "branch": info["branch"],
        "architecture": meta["architecture"],
        "dataset": {
            "source": trainer.config.dataset,
            "classes": list(trainer.data.class_names),
            "n_train": len(trainer.data.y_train),
            "n_dev": len(trainer.data.y_dev),
        },
        "hyperparameters": json_safe(info["hparams"]),
        "hyperparameter_history": changes,
        "metrics": {
            k: float(inspected[k])
            for k in ("train_accuracy", "dev_accuracy", "train_cost", "dev_cost")
        },
        "confusion_dev": (inspected["confusion_dev"].tolist()
                          if inspected["confusion_dev"] is not None else None),
        "top_confusions_dev": [
            {"true": trainer.data.class_names[t], "predicted": trainer.data.class_names[p],
             "count": n} for t, p, n in inspected["top_confusions_dev"]],
        "usage": (
            "x = (x_raw - input/mean) / input/std; for each hidden layer l: "
            "z = x @ params/fc{l}.W (+ params/fc{l}.b without BatchNorm); with BatchNorm "
            "z = bn{l}.gamma * (z - buffers/bn{l}.running_mean) / "
            "sqrt(buffers/bn{l}.running_var + 1e-5) + bn{l}.beta; x = activation(z); "
            "logits = x @ W_last + b_last; class = argmax(logits)"
        ),
    }
    return buffer.getvalue(), json.dumps(card, indent=2)


def history_csv(snapshot) -> str:
    """Per-step rows of the active lineage; evaluation columns filled where one happened."""
    history = snapshot["history"]
    step_columns = [k for k in ("step", "epoch", "cost", "lr", "grad_norm") if k in history]
    step_columns += sorted(k for k in history if k.startswith("update_ratio/"))
    eval_columns = [
        k for k in ("train_accuracy", "dev_accuracy", "train_cost", "dev_cost") if k in history
    ]
    evals = {int(s): i for i, s in enumerate(history["eval_step"])}
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(step_columns + eval_columns)
    for row, step in enumerate(history["step"]):
        values = [_cell(history[k][row]) for k in step_columns]
        index = evals.get(int(step))
        values += [_cell(history[k][index]) if index is not None else "" for k in eval_columns]
        writer.writerow(values)
    return out.getvalue()


def _cell(value):
    return repr(float(value)) if isinstance(value, (float, np.floating)) else int(value)
