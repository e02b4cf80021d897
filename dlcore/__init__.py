"""dlcore: Panda's numerical core and training engine (numpy only, no UI).

Modules, from the bottom up (ARCHITECTURE.md draws the map):

- ``layers``     pure forward/backward pairs (dense, BatchNorm, activations, dropout,
                 softmax cross-entropy, L1 and L2)
- ``network``    the BatchNorm softmax classifier: params/buffers/grads dicts
- ``optim``      gd, momentum, nesterov, rmsprop, adam
- ``schedules``  learning-rate decay schedules
- ``data``       data sets, stratified split, standardization, mini-batches
- ``hparams``    RunConfig, hyperparameter validation, the optimizer-switch policy
- ``state``      TrainingState: everything a step reads and changes; checkpoints of it
- ``loop``       the training step, evaluation and the divergence guard
- ``history``, ``branches``   append-only history tables; the branch tree and journal
- ``checkpoint``, ``store``, ``saving``   the file format; the run folder; its checkpoints
- ``observers``, ``run``, ``commands``, ``trainer``   the background Trainer
- ``snapshot``   the immutable picture the UI reads
- ``sandbox``, ``lookahead``, ``assistant``, ``analysis``, ``retention``, ``export``,
  ``sampling``, ``downsample``   what the pages offer on top

Nothing here imports streamlit; the dashboard (app.py, pages/) imports dlcore.
"""
