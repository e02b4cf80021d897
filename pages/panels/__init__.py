"""The training page's panels (``app.py`` calls them in order; this is not a page).

- ``controls``         Start / Pause / Step, checkpoint now, the speed limit, the status
- ``hyperparameters``  the sidebar: α, optimizer, decay, …, sent together by Apply;
                       the decay preview and the formulas
- ``switch``           an optimizer switch: fresh or carried moments, and its preview
- ``sampling``         α = 10^r and β = 1 − 10^r on the right scale
- ``assistant``        suggestions with their evidence, one click to apply; autopilot
- ``live``             tiles and live learning curves, decision regions for 2-D data
- ``new_run``          a new run (data set, architecture) or a saved one reopened

Each reads a snapshot and calls the Trainer's public methods; widgets that show the
run's values follow it through ``pages.shared.ui.follow``.
"""
