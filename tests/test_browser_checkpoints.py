"""The Checkpoints page's branch tree in a real browser (1400 × 900): old branches drawn as
clearly as the current one, and no two text labels on top of each other (two changes 160
steps apart on a 4,000-step lane used to print "pre-change" twice in one place)."""

from __future__ import annotations

import time

import pytest

from dlcore.trainer import RunConfig, Trainer
from tests.browser import chromium_page, require_browser, screenshot, streamlit_server
from tests.test_browser import wait_for

pytestmark = pytest.mark.browser

#: The branch tree's text labels (their boxes on the page) and its lanes as plotly drew them.
TREE_JS = """() => {
    const plot = Array.from(document.querySelectorAll('.js-plotly-plot')).find(
        p => (p.querySelector('.gtitle') || {}).textContent === 'Branch tree');
    if (!plot) return null;
    const labels = Array.from(plot.querySelectorAll('.textpoint text'))
        .filter(t => t.textContent).map(t => {
            const r = t.getBoundingClientRect();
            return {text: t.textContent, left: r.left, right: r.right, top: r.top,
                    bottom: r.bottom};
        });
    const lanes = plot._fullData.filter(t => t.mode === 'lines' && t.line.dash === 'solid')
        .map(t => ({opacity: t.opacity, width: t.line.width}));
    return {labels, lanes};
}"""


def train_to(trainer: Trainer, step: int) -> None:
    trainer.step(step - trainer.snapshot().step)
    deadline = time.monotonic() + 60
    while trainer.snapshot().step < step or trainer.snapshot().status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)


def a_run_with_two_close_changes_and_a_rollback(folder) -> None:
    """Branch 0: α changed at steps 2,010 and 2,170 (a pre-change checkpoint each), a
    checkpoint by hand at 4,020; then back to the first pre-change one: branch 1."""
    with Trainer(RunConfig(hidden=(16,)), folder) as trainer:
        train_to(trainer, 2010)
        trainer.update(lr=0.002)
        train_to(trainer, 2170)
        trainer.update(lr=0.003)
        train_to(trainer, 4020)
        trainer.checkpoint("by hand")
        first_change = next(c["id"] for c in trainer.snapshot().checkpoints
                            if c["kind"] == "pre-change")
        trainer.rollback(first_change)
        train_to(trainer, 3520)
        trainer.checkpoint("on branch 1")


def overlapping(labels: list[dict]) -> list[tuple]:
    return [(a["text"], b["text"]) for i, a in enumerate(labels) for b in labels[i + 1:]
            if a["left"] < b["right"] and b["left"] < a["right"]
            and a["top"] < b["bottom"] and b["top"] < a["bottom"]]


def test_branch_tree_shows_every_branch_and_keeps_labels_apart(tmp_path):
    require_browser()
    folder = tmp_path / "checkpoints"
    a_run_with_two_close_changes_and_a_rollback(folder)
    with (
        streamlit_server(folder, tmp_path / "server.log") as (url, _),
        chromium_page(width=1400, height=900) as page,
    ):
        page.goto(f"{url}/Checkpoints")
        page.get_by_role("heading", name="Checkpoints", exact=True).wait_for(timeout=60_000)
        wait_for(lambda: page.evaluate(TREE_JS), what="the branch tree")
        time.sleep(2)  # a refresh or two of the live list
        tree = page.evaluate(TREE_JS)
        print(tree)
        screenshot(page, "item8_checkpoints")
        assert {label["text"] for label in tree["labels"]} >= {"initial", "pre-change",
                                                               "rollback", "manual"}
        assert not overlapping(tree["labels"]), overlapping(tree["labels"])
        assert len(tree["lanes"]) == 2  # branch 0, the old one, and branch 1
        assert all(lane["opacity"] == 1 and lane["width"] >= 3 for lane in tree["lanes"])
