"""``ui.live_view``'s frame skipping: a refresh that waited behind the last one (the
server is behind) draws the last frame again instead of building a new one."""

from __future__ import annotations

import time

from pages.shared.ui import BEHIND_SHARE, _behind


def test_a_refresh_right_after_the_last_one_draws_the_last_frame_again():
    every = 2.0
    just_done = {"snapshot": object(), "done": time.monotonic()}
    assert _behind(just_done, every)
    long_ago = {"snapshot": object(), "done": time.monotonic() - BEHIND_SHARE * every - 0.01}
    assert not _behind(long_ago, every)


def test_the_first_frame_and_views_that_do_not_refresh_are_always_built():
    assert not _behind({}, 2.0)  # nothing drawn yet in this page run
    assert not _behind({"snapshot": object(), "done": time.monotonic()}, None)  # paused
