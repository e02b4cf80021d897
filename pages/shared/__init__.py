"""UI code shared by app.py and the pages (Streamlit turns only pages/*.py into pages).

- ``engine``  the one Trainer of this server (``st.cache_resource``), replaced by "New run"
- ``ui``      commands with error reporting, status badge, alerts, live fragments, formatting
- ``charts``  plotly figures: event markers, downsampled windows, heatmaps
- ``disk``    the checkpoint folder as it is on disk, followed by a watchdog observer

Everything here reads ``Trainer.snapshot()`` and calls the Trainer's public methods;
the numerics live in ``dlcore``.
"""
