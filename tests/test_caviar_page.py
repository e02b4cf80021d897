"""AppTest of the Caviar page: with Ray missing, the space prefilled, the form's messages.
(A real search from the page, babysat, is in tests/test_caviar_ray.py, beside Ray.)"""

from __future__ import annotations

import sys

import pytest

CAVIAR = "pages/4_Caviar.py"


def caviar_page(panda):
    return panda.run(CAVIAR)


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def test_the_page_renders_without_ray_and_says_how_to_install_it(panda, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails from here on
    monkeypatch.setitem(sys.modules, "optuna", None)
    at = caviar_page(panda)
    notice = next(i.value for i in at.info if "requirements-caviar.txt" in i.value)
    assert "ray[tune] and optuna" in notice and "pip install -r requirements-caviar.txt" \
        in notice
    assert at.button(key="cv_start").disabled
    assert any("never touched by a search" in " ".join(m.value.split()) for m in at.markdown)


def test_the_space_is_prefilled_in_the_order_of_importance(panda):
    at = caviar_page(panda)
    rows = [c for c in at.checkbox if c.key.startswith("cv_")]
    assert [c.key for c in rows] == ["cv_lr_on", "cv_beta_on", "cv_hidden_units_on",
                                     "cv_batch_size_on", "cv_layers_on", "cv_decay_rate_on",
                                     "cv_l2_on"]
    assert [c.value for c in rows] == [True] * 4 + [False] * 3
    assert "tier 1" in rows[0].label and "tier 3" in rows[-1].label
    assert at.slider(key="cv_lr_range").value == (-4.0, -1.0)
    assert at.number_input(key="cv_beta_range_low").value == 0.9
    assert at.select_slider(key="cv_hidden_units_range").value == (16, 256)
    assert any("Tune first: it matters most" in c.value for c in at.caption)


@pytest.mark.parametrize(("edit", "says"), [
    (lambda at: at.number_input(key="cv_trials").set_value(0),
     "A search needs at least one trial"),
    (lambda at: at.number_input(key="cv_beta_range_low").set_value(0.999),
     "β (momentum, Adam's β₁): low must be < high"),
    (lambda at: [at.checkbox(key=f"cv_{n}_on").uncheck()
                 for n in ("lr", "beta", "hidden_units", "batch_size")],
     "Choose at least one hyperparameter to search"),
])
def test_a_bad_search_says_what_is_wrong_and_starts_nothing(panda, edit, says):
    at = caviar_page(panda)
    edit(at)
    at.button(key="cv_start").click().run()
    assert any(says in e for e in errors(at)), errors(at)
    assert not (panda.trainer().run_dir / "caviar").exists()
