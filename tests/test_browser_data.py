"""A person starts a run on a file from the data folder, labels given as names, in Chromium."""

from __future__ import annotations

import re

import numpy as np
import pytest

from tests.browser import button, chromium_page, require_browser, screenshot, streamlit_server
from tests.test_browser import choose, step_count, wait_for

pytestmark = pytest.mark.browser


def test_a_run_from_a_file_in_the_data_folder(tmp_path):
    require_browser()
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = [f"{a:.3f},{b:.3f},{('setosa', 'versicolor', 'virginica')[int(a > 0) + int(b > 0)]}"
            for a, b in rng.normal(size=(600, 2))]
    (data / "flowers.csv").write_text("petal,sepal,species\n" + "\n".join(rows) + "\n")
    env = {"PANDA_DATA_DIR": str(data)}
    with (streamlit_server(tmp_path / "checkpoints", tmp_path / "server.log", env) as (url, _),
          chromium_page(1400, 900) as page):
        page.goto(url)
        wait_for(lambda: step_count(page) == 0, what="the first run")
        page.get_by_text("New run or reopen a saved run").click()
        page.get_by_text("A file in the data folder").click()
        choose(page, "Data file", "flowers.csv")
        hidden = page.get_by_role("textbox", name="Hidden layer sizes")
        hidden.fill("16")
        hidden.press("Enter")
        page.get_by_role("button", name="Create run").click()
        wait_for(lambda: page.get_by_text("data flowers.csv").count() > 0
                 or "flowers.csv" in page.inner_text("body"), what="the new run's caption")
        caption = page.inner_text("body")
        caption = caption[caption.find("Run run"):][:200]
        match = re.search(r"data flowers\.csv \((\d+) train / (\d+) dev\) · 2 → 16 → 3", caption)
        assert match and int(match[1]) + int(match[2]) == 600, caption
        button(page, "start").click()
        wait_for(lambda: step_count(page) > 50, what="training on the file")
        button(page, "pause").click()
        screenshot(page, "data-folder-run")
    # read in place, not copied into the run folder
    runs = list((tmp_path / "checkpoints").iterdir())
    assert not any(p.name.startswith("dataset") for run in runs for p in run.iterdir())
