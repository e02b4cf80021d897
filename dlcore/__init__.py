"""dlcore: Panda's numerical core and training engine (numpy only, no UI).

Modules, from the bottom up (ARCHITECTURE.md draws the map):

- ``layers``     pure forward/backward pairs (dense, BatchNorm, activations, dropout,
                 softmax cross-entropy, L1 and L2)
- ``network``    the BatchNorm softmax classifier: params/buffers/grads dicts
- ``optim``      gd, momentum, nesterov, rmsprop, adam
- ``schedules``  learning-rate decay schedules
- ``data``       data sets, stratified split, standardization, mini-batches (files read
                 by ``readers``: ``csvfile``, ``parquetfile``, ``npzfile``; ``memory``,
                 ``standardizer``, ``batches``, ``tables``, ``arguments``)
- ``hparams``    RunConfig, hyperparameter validation, the optimizer-switch policy
- ``state``      TrainingState: everything a step reads and changes; checkpoints of it
- ``loop``       the training step, evaluation and the divergence guard
- ``history``, ``branches``   append-only history tables; the branch tree and journal
- ``checkpoint``, ``store``, ``saving``   the file format; the run folder; its checkpoints
- ``observers``, ``run``, ``commands``, ``trainer``   the background Trainer
- ``snapshot``   the immutable picture the UI reads
- ``sandbox``, ``lookahead``, ``assistant``, ``analysis``, ``retention``, ``export``,
  ``sampling``, ``downsample``   what the pages offer on top
- ``caviar`` (``search_space``, ``caviar_trial``, ``caviar_rounds``, ``caviar_ray``)   the
  caviar search; Ray is imported only by ``caviar_ray``, when a search starts

Nothing here imports streamlit; the dashboard (app.py, pages/) imports dlcore.
"""
