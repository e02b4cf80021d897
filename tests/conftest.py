"""AppTest fixtures: each test gets a fresh checkpoint folder and an empty st.cache_resource.

Clearing the cache calls its ``on_release`` hooks, which stop the Trainer's thread and the
checkpoint-folder watcher, so no test leaks a thread into the next.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

APP_DIR = Path(__file__).resolve().parents[1]


class Panda:
    """Runs Panda's pages with AppTest and reaches the server's one Trainer."""

    def __init__(self, checkpoint_dir: Path):
        self.checkpoint_dir = checkpoint_dir

    def run(self, page: str | None = None):
        from streamlit.testing.v1 import AppTest

        at = AppTest.from_file(str(APP_DIR / "app.py"), default_timeout=30).run()
        if page is not None:
            at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    def trainer(self):
        from pages.shared.engine import current_trainer

        return current_trainer()

    def wait_for(self, settled, timeout: float = 20.0):
        """Poll the Trainer's snapshot until ``settled(snapshot)``; the worker runs apart."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.trainer().snapshot()
            if settled(snapshot):
                return snapshot
            assert time.monotonic() < deadline, f"timed out; status {snapshot.status}"
            time.sleep(0.02)

    @staticmethod
    def charts(at) -> dict:
        """key -> plotly figure dict, for every st.plotly_chart and every live chart
        (``pages.shared.live_chart``) on the page."""
        charts = {element.key: json.loads(element.proto.spec)
                  for element in at.get("plotly_chart")}
        for element in at.get("bidi_component"):
            if element.proto.component_name == "panda_live_chart":
                key = element.proto.id.rsplit("-", 1)[-1]
                charts[key] = json.loads(json.loads(element.proto.json)["spec"])
        return charts

    @staticmethod
    def values(values) -> list:
        """A trace's x/y/z as a list, also when plotly sent a typed array (base64)."""
        if isinstance(values, dict) and "bdata" in values:
            import numpy as np

            array = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
            shape = values.get("shape")
            if isinstance(shape, str):
                shape = tuple(int(n) for n in shape.split(","))
            return (array.reshape(shape) if shape else array).tolist()
        return list(values)


@pytest.fixture
def panda(tmp_path, monkeypatch):
    import streamlit as st

    checkpoint_dir = tmp_path / "checkpoints"
    monkeypatch.setenv("PANDA_CHECKPOINT_DIR", str(checkpoint_dir))
    monkeypatch.syspath_prepend(str(APP_DIR))  # pages.shared, as `streamlit run` sees it
    st.cache_resource.clear()
    yield Panda(checkpoint_dir)
    st.cache_resource.clear()
