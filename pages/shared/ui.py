"""Streamlit pieces every page uses: commands with error reporting, alerts, live refresh.

Commands are sent from button callbacks, so the rerun that follows already shows their
effect. An error a user can cause (``ValueError`` from the Trainer) becomes a message
on the page and leaves the run as it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import streamlit as st

from dlcore.trainer import Snapshot, Trainer
from pages.shared.engine import checkpoint_dir, holder

#: How often a live view refreshes while training runs.
LIVE_REFRESH_SECONDS = 1.0

STATUS_BADGES = {
    "idle": ("idle · ready to start", "blue", ":material/hourglass_empty:"),
    "running": ("running", "green", ":material/play_arrow:"),
    "paused": ("paused", "gray", ":material/pause:"),
    "diverged": ("diverged", "orange", ":material/warning:"),
    "error": ("error", "red", ":material/error:"),
    "stopped": ("stopped", "gray", ":material/stop:"),
}

OPTIMIZER_NAMES = {"gd": "Gradient descent", "momentum": "Momentum",
                   "nesterov": "Nesterov momentum", "rmsprop": "RMSprop", "adam": "Adam"}
SCHEDULE_NAMES = {"constant": "Constant", "inverse_time": "1 / (1 + decay·epoch)",
                  "exponential": "Exponential (base^epoch)", "inverse_sqrt": "k / √epoch",
                  "staircase": "Staircase (×factor every n epochs)",
                  "polynomial": "Polynomial (to `end` at `total`)",
                  "piecewise": "Piecewise constant (×factors between boundaries)"}
HPARAM_LABELS = {
    "lr": "α",
    "optimizer": "optimizer",
    "beta": "β",
    "beta1": "β₁",
    "beta2": "β₂",
    "eps": "ε",
    "schedule": "schedule",
    "schedule_params": "schedule parameters",
    "batch_size": "mini-batch size",
    "l2": "L2 λ",
    "l1": "L1 λ₁",
    "keep_prob": "keep-prob",
    "bn_momentum": "BN β",
    "eval_every": "evaluate every",
}


def page_start(title: str, heading: str | None = None,
               sidebar_width: int | None = None) -> tuple[Trainer, Snapshot]:
    """Page config, title and run caption; returns the run's Trainer and a snapshot."""
    st.set_page_config(page_title=f"{title} · Panda", page_icon="🐼", layout="wide",
                       initial_sidebar_state=sidebar_width or "auto")
    try:
        trainer = holder().trainer
    except (OSError, ValueError, MemoryError) as error:  # nothing to show: say why, stop
        st.error(f"**Panda could not open or create a run in `{checkpoint_dir()}`**: "
                 f"{error}. Make that folder writable (or free some space), or start "
                 "Panda with `PANDA_CHECKPOINT_DIR` set to a folder it can write, then "
                 "reload this page.", icon=":material/folder_off:")
        st.stop()
    snapshot = trainer.snapshot()
    st.title(heading or title, anchor=False)
    st.caption(run_caption(snapshot))
    watch_run(trainer, snapshot)
    return trainer, snapshot


def messages(trainer: Trainer, snapshot: Snapshot) -> None:
    """Messages from the last commands, then the run's alerts."""
    show_flashes()
    run_alerts(trainer, snapshot)


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def format_number(value) -> str:
    """Compact and exact enough for hyperparameters: 0.001, 3.16e-05, 64, adam, (128, 64),
    {decay_rate=0.5}."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(format_number(v) for v in value) + ")"
    if hasattr(value, "items"):
        return "{" + ", ".join(f"{k}={format_number(v)}" for k, v in value.items()) + "}"
    return str(value)


def format_percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


#: What a tile's value can hold, in digit widths of its 36 px font (18.5 px): the inside
#: of one of the training page's five tiles on a 1400 px page is 127 px beside a 380 px
#: sidebar (143 px beside the 300 px one Streamlit starts with). 6.6 leaves 5 px spare.
TILE_WIDTH = 6.6
#: Characters narrower or wider than a digit in that font (measured in Chromium).
_GLYPH_WIDTHS = {".": 0.4, ",": 0.4, " ": 0.4, "-": 0.6, "%": 1.4, "M": 1.3, "G": 1.3}


def text_width(text: str) -> float:
    """``text``'s width in digit widths of a tile's font (roughly)."""
    return sum(_GLYPH_WIDTHS.get(char, 1.0) for char in text)


def fit(candidates, width: float = TILE_WIDTH) -> str:
    """The first of ``candidates`` (the most precise first) that fits ``width``, else the
    narrowest of them."""
    candidates = list(candidates)
    return next((c for c in candidates if text_width(c) <= width),
                min(candidates, key=text_width))


def _tidy(number: str) -> str:
    """Python's "2.78e-06" as "2.78e-6", "3.10e-3" as "3.1e-3"."""
    mantissa, e, exponent = number.partition("e")
    if not e:
        return number
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def format_compact(value, width: float = TILE_WIDTH) -> str:
    """A number as exactly as fits ``width``: 9,999, 147k, 1.47M; 0.001, 2.078, 2.78e-6.

    For tiles; the exact value goes in their help (:func:`format_exact`)."""
    if value is None:
        return "–"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()
                                  and abs(value) < 1e15):
        return fit([f"{int(value):,}", *(_scaled(int(value), digits) for digits in (3, 2))],
                   width)
    if not math.isfinite(value):
        return str(value)
    return fit([_tidy(f"{value:.{digits - 1 if kind == 'e' else digits}{kind}}")
                for digits in (4, 3, 2, 1) for kind in ("g", "e")], width)


def _scaled(count: int, digits: int) -> str:
    """``count`` to ``digits`` significant digits in thousands, millions or billions:
    147k, 14.7k, 1.47M."""
    power, suffix = next(((p, s) for p, s in ((9, "G"), (6, "M"), (3, "k"))
                          if abs(count) >= 10 ** p), (0, ""))
    scaled = count / 10 ** power
    decimals = max(0, digits - len(str(int(abs(round(scaled, 10))))))
    text = f"{scaled:.{decimals}f}"
    if abs(float(text)) >= 1000 and power < 9:  # 999,700 is 1M, not 1000k
        return _scaled(10 ** (power + 3) * (1 if count > 0 else -1), digits)
    return (text.rstrip("0").rstrip(".") if "." in text else text) + suffix


def format_exact(value) -> str:
    """The value in full, for a tile's help: 147,123; 2.78e-06; 0.0123456789."""
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else repr(float(value))


def checkpoint_label(row) -> str:
    """One line naming a checkpoint: "ckpt-000012 · step 500 · branch 1 · manual · note"."""
    note = f" · {row['note']}" if row.get("note") else ""
    return f"{row['id']} · step {row['step']} · branch {row['branch']} · {row['kind']}{note}"


def describe_changes(changes) -> str:
    """``{"lr": (old, new)}`` as "α 0.001 → 0.01"."""
    return ", ".join(f"{HPARAM_LABELS.get(key, key)} {format_number(old)} → {format_number(new)}"
                     for key, (old, new) in changes.items())


# ---------------------------------------------------------------------------
# Widgets that show a value of the run
# ---------------------------------------------------------------------------

#: Where ``follow`` keeps, per widget, the run's value it last showed.
_RUN_VALUE = "{}.run"


def follow(key: str, value) -> bool:
    """Let widget ``key`` show the run's ``value``, unless the user has edited it here.

    Another tab, a rollback or the assistant can change the run under a page. A widget
    the user has not touched (it still holds the run's value it last showed) takes the
    new value; one the user edited keeps the edit. Call before the widget is drawn.
    Returns True if the widget's value was set.
    """
    state, run_key = st.session_state, _RUN_VALUE.format(key)
    take = key not in state or run_key not in state or state[key] == state[run_key]
    if take:
        state[key] = value
    state[run_key] = value
    return take


def run_value(key: str, default=None):
    """The run's value that widget ``key`` last showed (see :func:`follow`)."""
    return st.session_state.get(_RUN_VALUE.format(key), default)


def edited(key: str) -> bool:
    """Whether the user changed widget ``key`` away from the run's value it showed."""
    state, run_key = st.session_state, _RUN_VALUE.format(key)
    return key in state and run_key in state and state[key] != state[run_key]


def revert(key: str) -> None:
    """Put widget ``key`` back to the run's value it showed (after a refused change)."""
    run_key = _RUN_VALUE.format(key)
    if run_key in st.session_state:
        st.session_state[key] = st.session_state[run_key]


def forget_followed(prefix: str) -> None:
    """Drop the run values of every widget whose key starts with ``prefix``: they all
    follow the run again (a new run, Discard)."""
    for key in [k for k in st.session_state if k.startswith(prefix) and k.endswith(".run")]:
        del st.session_state[key]


# ---------------------------------------------------------------------------
# Messages that survive the rerun a callback causes
# ---------------------------------------------------------------------------


def flash(kind: str, message: str, channel: str = "main") -> None:
    """Queue a message ("error", "warning", "success", "info") for this session's next run.

    ``channel`` says where it shows: "main" near the run controls, or a panel's own name.
    """
    st.session_state.setdefault(f"flash_{channel}", []).append((kind, message))


def show_flashes(channel: str = "main") -> None:
    for kind, message in st.session_state.pop(f"flash_{channel}", []):
        getattr(st, kind)(message)


def run_command(action: Callable, *args, channel: str = "main", **kwargs) -> tuple[bool, object]:
    """Call a Trainer method: ``(True, result)``, or ``(False, None)`` after showing why
    (in ``channel``, see :func:`flash`).

    A ValueError is a user's mistake (bad value, unknown checkpoint): the Trainer checked
    it before doing anything, so the run is as it was.
    """
    try:
        return True, action(*args, **kwargs)
    except ValueError as error:
        flash("error", str(error), channel)
    except (RuntimeError, TimeoutError) as error:
        flash("error", f"The command did not reach the run: {error}. "
                       "The page now shows the current run; try again.", channel)
    except OSError as error:  # a full or failing disk: nothing was changed
        flash("error", f"The disk refused the write ({error}); nothing was changed. Free "
                       "some space or check the checkpoint folder, then try again.", channel)
    return False, None


def wait_until(trainer: Trainer, settled: Callable[[Snapshot], bool], timeout: float = 1.0):
    """Poll snapshots until ``settled`` (or the timeout): the rerun then shows the effect."""
    deadline = time.monotonic() + timeout
    snapshot = trainer.snapshot()
    while not settled(snapshot) and time.monotonic() < deadline:
        time.sleep(0.02)
        snapshot = trainer.snapshot()
    return snapshot


# ---------------------------------------------------------------------------
# Status, alerts, live refresh
# ---------------------------------------------------------------------------


def status_badge(status: str) -> None:
    label, color, icon = STATUS_BADGES.get(status, (status, "gray", None))
    st.badge(label, color=color, icon=icon)


def run_caption(snapshot: Snapshot) -> str:
    config, data = snapshot.config, snapshot.dataset
    sizes = " → ".join(str(n) for n in (data["n_features"], *config["hidden"], data["n_classes"]))
    bn = "BatchNorm" if config["batchnorm"] else "no BatchNorm"
    return (f"Run **{snapshot.run_id}** · branch {snapshot.branch} · data **{data['name']}** "
            f"({data['n_train']} train / {data['n_dev']} dev) · {sizes} · "
            f"{config['activation']} · {bn} · {config['dtype']}")


def run_alerts(trainer: Trainer, snapshot: Snapshot) -> None:
    """What must never be missed: worker errors, divergence, a notice from opening the run."""
    notice = holder().notice
    if notice:
        st.warning(notice)
    if snapshot.error:
        st.error(f"**The training thread hit an error** (status: {snapshot.status}): "
                 f"{snapshot.error}. The run is paused at step {snapshot.step}; "
                 "Start tries again, or roll back to a checkpoint.")
        if snapshot.error_traceback:
            with st.expander("Traceback"):
                st.code(snapshot.error_traceback, language="text")
    if snapshot.status == "diverged" and snapshot.divergence:
        divergence_banner(trainer, snapshot.divergence)
    if snapshot.status == "stopped":
        st.warning("This run is stopped. Start a new run or reopen a saved one.")


def divergence_banner(trainer: Trainer, divergence) -> None:
    good = divergence.get("last_good_checkpoint")
    with st.container(border=True):
        st.error(f"**Training diverged at step {divergence['step']}**: {divergence['cause']}. "
                 "It was paused before that step changed anything, so no bad value was saved.",
                 icon=":material/warning:")
        alpha_key = f"divergence_alpha_{divergence['step']}"
        left, right = st.columns([1, 2], vertical_alignment="bottom")
        left.number_input("New learning rate α after the rollback", key=alpha_key,
                          value=0.5 * float(divergence["alpha"]), min_value=1e-12,
                          format="%.3e", step=None,
                          help="Pre-filled with half the α that diverged.")
        right.button("Roll back to last good checkpoint", type="primary", disabled=good is None,
                     on_click=_rollback_after_divergence, args=(trainer, good, alpha_key),
                     help=f"Restore {good} (continues on a new branch), then set α.")


def _rollback_after_divergence(trainer: Trainer, checkpoint_id: str, alpha_key: str) -> None:
    alpha = st.session_state[alpha_key]
    ok, branch = run_command(trainer.rollback, checkpoint_id, lr=alpha)  # one command
    if ok:
        flash("success", f"Rolled back to {checkpoint_id}; continuing on branch {branch} with "
                         f"α = {alpha:.3g}. Press Start to train.")


#: While the run is not training, a page looks this often whether another tab (or the
#: assistant) changed it, and reruns if so.
WATCH_SECONDS = 2.0


def steering(snapshot: Snapshot) -> tuple:
    """What a page's controls show of the run: when it changes, the whole page reruns."""
    return (snapshot.run_id, snapshot.status, snapshot.branch, snapshot.speed_limit,
            snapshot.autopilot, _plain(snapshot.hparams))


def _plain(value):
    if hasattr(value, "items"):
        return tuple(sorted((k, _plain(v)) for k, v in value.items()))
    return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def live_view(render: Callable[[Snapshot], None], trainer: Trainer, page: Snapshot,
              run_every: float | None = None,
              while_running: float = LIVE_REFRESH_SECONDS) -> None:
    """Render ``render(snapshot)`` in a fragment that reruns on its own while training runs.

    It reruns every ``while_running`` seconds while the run trains, or every
    ``run_every`` seconds whatever the status if that is given. When the run's steering
    changes under a live view (a Step ×100 finishes, the run diverges, another tab
    applies a change), the whole page reruns so controls, alerts and the refresh rate
    follow. ``page`` is the snapshot the page was drawn from.
    """
    if run_every is not None:
        every = run_every
    else:
        every = while_running if page.status == "running" else None
    drawn = steering(page)
    # The view's last frame. A fragment's reruns call this same closure, so it lasts
    # until the page reruns as a whole.
    last: dict = {}

    @st.fragment(run_every=every)
    def view():
        if _behind(last, every):  # this rerun waited for the last one: skip a frame
            render(last["snapshot"])
            last["done"] = time.monotonic()
            return
        snapshot = trainer.snapshot()
        if steering(snapshot) != drawn:
            st.rerun(scope="app")
        render(snapshot)
        last.update(snapshot=snapshot, done=time.monotonic())

    view()


#: A live view's rerun that starts sooner than this share of its period after the last
#: one finished was queued behind it, or behind another view's: the server is behind.
BEHIND_SHARE = 0.5


def _behind(last: dict, every: float | None) -> bool:
    """Whether a live view should draw its last frame again instead of a new one.

    The same snapshot draws the same figures, which the browser keeps as they are, and
    the view costs the server little: refreshes never pile up behind each other, and a
    click on another page is served at once.
    """
    return (every is not None and "snapshot" in last
            and time.monotonic() - last["done"] < BEHIND_SHARE * every)


def watch_run(trainer: Trainer, page: Snapshot) -> None:
    """While the run is not training (no live view reruns), rerun the page when another
    tab changes the run, so that every tab shows what the run is."""
    if page.status == "running":
        return
    drawn = steering(page)

    @st.fragment(run_every=WATCH_SECONDS)
    def watch():
        if steering(trainer.snapshot()) != drawn:
            st.rerun(scope="app")

    watch()
