"""dlcore: Panda's numerical core and training engine (numpy only, no UI).

Modules, from the bottom up:

- ``layers``     pure forward/backward pairs (dense, BatchNorm, activations,
                 dropout, softmax cross-entropy, L2)
- ``network``    the BatchNorm softmax classifier: params/buffers/grads dicts
- ``optim``      gd, momentum, rmsprop, adam
- ``schedules``  learning-rate decay schedules
- ``sampling``   log-scale sampling of α and β, coarse-to-fine ranges
- ``data``       data sets, stratified split, standardisation, mini-batches
- ``trainer``    the background Trainer: commands, history, checkpoints

Nothing here imports streamlit; the dashboard (app.py, pages/) imports dlcore.
"""
