"""Numbers for tiles: as exact as fits the tile, never cut off by the browser."""

from __future__ import annotations

import pytest

from pages.shared.ui import TILE_WIDTH, fit, format_compact, format_exact, text_width


@pytest.mark.parametrize("value, shown", [
    (0, "0"), (9_999, "9,999"), (147_123, "147,123"), (1_471_230, "1.47M"),
    (999_700_000, "1G"), (14_700, "14,700"),
    (1_470_000, "1.47M"), (2_000_000_000, "2G"),
    (0.001, "0.001"), (2.0776, "2.078"), (0.0312, "0.0312"), (2.78e-6, "2.78e-6"),
    (3.954e-5, "3.95e-5"), (0.00316, "0.00316"), (3.16e-12, "3.2e-12"), (None, "–"),
])
def test_numbers_are_as_exact_as_a_tile_holds(value, shown):
    assert format_compact(value) == shown
    assert text_width(shown) <= TILE_WIDTH


def test_the_exact_value_is_kept_for_the_tiles_help():
    assert format_exact(147_123) == "147,123"
    assert format_exact(2.78e-6) == "2.78e-06"


def test_a_narrower_tile_gets_fewer_digits():
    assert format_compact(147_123, width=6.0) == "147k"
    assert format_compact(0.00316, width=6.0) == "3.16e-3"
    assert format_compact(3.954e-5, width=5.0) == "4e-5"


def test_fit_takes_the_first_candidate_that_fits_else_the_narrowest():
    assert fit(["100.0 %", "100 %"], width=6.0) == "100 %"
    assert fit(["99.7 %", "100 %"]) == "99.7 %"
    assert fit(["1234567890", "123456789"], width=3) == "123456789"
