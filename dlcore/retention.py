"""Which periodic checkpoints a run keeps: the retention rule as a value.

A periodic checkpoint every 1,000 steps of a fast run writes ~1.5 GB an hour, so
periodic checkpoints are thinned as the run goes on. Every other kind (initial,
manual, pre-change, rollback, final, and any kind this module does not know) was
asked for by the user or marks a change, and is never removed. As with Keras'
``ModelCheckpoint``, Lightning's ``save_top_k`` and Orbax's preservation policies
(latest N, every N steps, best N, any of them), a :class:`RetentionPolicy` is a
small frozen value; :func:`to_remove` applies it to a run's list of checkpoints and
the engine deletes the files it names. Nothing here touches the disk.

A periodic checkpoint is kept if any of these holds:

1. it is one of the ``keep_last`` newest periodic checkpoints of the run, every
   branch's counted together in write order (per branch, each rollback would add
   ``keep_last`` more and the total would grow without bound);
2. it is the newest periodic checkpoint of its branch, so a branch left by a
   rollback keeps its tip;
3. it is among the ``keep_best`` with the highest ``metrics["dev_accuracy"]``
   (ties: the earlier one);
4. its step is a multiple of ``keep_every_steps`` (Orbax's ``keep_period``);
5. ``keep_log_spaced`` and it stands for its step bucket (below);
6. the engine protects it: the checkpoint the run stands on, a branch's start.

Log-spaced buckets. Let N be the largest step of any periodic checkpoint. One at
step s has age a = N − s and level L = ⌊log2(a + 1)⌋, so level L holds the ages
[2^L − 1, 2^(L+1) − 1); its bucket is the aligned step range of width
w = 2^max(L−1, 0) that holds s, i.e. [k·w, (k+1)·w). It is kept while no checkpoint
further along (a larger step, or the same step written later, on any branch) lies
in that bucket. Buckets are aligned on absolute steps, so they never shift as N
grows: when a checkpoint ages into the next level its bucket merges with its
aligned neighbour and only the further-along of the two representatives stays.
That is the one thinning that happens later, and a removed checkpoint is never
wanted back: the one that displaced it lies in every coarser bucket it would ever
belong to, and so does whatever displaces that one in turn. The 2^L ages of level
L meet at most three buckets of width 2^(L−1), so this rule keeps at most
1 + 3·⌊log2(N + 1)⌋ checkpoints, about 3·log2(N/Δ) + 7 when periodic steps are
multiples of Δ (``checkpoint_every``); consecutive ones kept are at most about
twice as old as each other.

Bound: as long as checkpoints are only added, and removed only as :func:`to_remove`
says, the periodic checkpoints kept number at most
``keep_last + keep_best + 1 + 3·⌊log2(N + 1)⌋ + branches + protected ones``,
plus the multiples of ``keep_every_steps`` if that is on.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class RetentionPolicy:
    """What :func:`to_remove` keeps and how often :func:`periodic_due` writes.

    Each field's one-line explanation for a UI is ``FIELD_HELP[name]``.
    """

    keep_last: int | None = _help(
        "Newest periodic checkpoints kept, all branches together (none: keep all).", 10
    )
    keep_log_spaced: bool = _help(
        "Also keep older periodic checkpoints, ever sparser going back in steps.", True
    )
    keep_best: int = _help("Periodic checkpoints with the best dev accuracy kept.", 1)
    keep_every_steps: int = _help(
        "Keep every periodic checkpoint at a multiple of this many steps (0: off).", 0
    )
    min_seconds: float = _help(
        "At most one periodic checkpoint per this many seconds (0: every one due).", 30.0
    )
    save_best: bool = _help(
        "Also write one at each new best dev accuracy (same pace), for early stopping.",
        True,
    )

    def __post_init__(self):
        if self.keep_last is not None:
            _count("keep_last", self.keep_last, " or None (keep all)")
        for name in ("keep_log_spaced", "save_best"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        _count("keep_best", self.keep_best)
        _count("keep_every_steps", self.keep_every_steps)
        seconds = self.min_seconds
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not math.isfinite(seconds)
            or seconds < 0
        ):
            raise ValueError(f"min_seconds must be a finite number ≥ 0, got {seconds!r}")
        object.__setattr__(self, "min_seconds", float(seconds))

    def to_dict(self) -> dict:
        """A JSON-ready dict; ``from_dict(p.to_dict()) == p``."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> RetentionPolicy:
        """The policy ``d`` describes; missing fields take their defaults.

        Raises ValueError naming an unknown field or a bad value.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"a retention policy must be a mapping, got {d!r}")
        unknown = sorted(set(d) - set(FIELD_HELP), key=str)
        if unknown:
            raise ValueError(
                f"unknown retention policy field(s) {unknown}; known: {list(FIELD_HELP)}"
            )
        return cls(**d)


FIELD_HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(RetentionPolicy)}


def _count(name, value, alternative=""):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number ≥ 0{alternative}, got {value!r}")


def _dev_accuracy(checkpoint: Mapping) -> float | None:
    value = (checkpoint.get("metrics") or {}).get("dev_accuracy")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None  # never evaluated at that step, or NaN: not a candidate for best
    return float(value)


def to_remove(
    policy: RetentionPolicy, checkpoints: Iterable[Mapping], protected: Iterable[str] = ()
) -> list[str]:
    """Ids of the periodic checkpoints ``policy`` no longer keeps, oldest first.

    checkpoints: the run's checkpoints, each a mapping with at least ``id``, ``seq``
    (increasing in write order), ``step``, ``branch`` and ``kind``, and optionally
    ``metrics`` (``dev_accuracy`` may be missing). Only kind "periodic" is ever
    returned, never an id in ``protected``. Deterministic, O(n log n); applying it
    again after deleting what it returned returns nothing.
    """
    if policy.keep_last is None:
        return []
    periodic = [c for c in checkpoints if c.get("kind") == "periodic"]  # unknown kinds stay
    periodic.sort(key=lambda c: c["seq"])
    kept = set(protected)
    # 1) the newest of the run, and 2) the newest of each branch
    kept.update(c["id"] for c in periodic[max(0, len(periodic) - policy.keep_last) :])
    kept.update({c["branch"]: c["id"] for c in periodic}.values())
    # 3) the best by dev accuracy
    scored = [(-acc, c["seq"], c["id"]) for c in periodic if (acc := _dev_accuracy(c)) is not None]
    kept.update(checkpoint_id for *_, checkpoint_id in sorted(scored)[: policy.keep_best])
    # 4) Orbax's keep_period
    if policy.keep_every_steps:
        kept.update(c["id"] for c in periodic if int(c["step"]) % policy.keep_every_steps == 0)
    # 5) one per log-spaced bucket: kept while nothing further along lies in its bucket
    if policy.keep_log_spaced and periodic:
        by_step = sorted(periodic, key=lambda c: (int(c["step"]), c["seq"]))
        furthest = int(by_step[-1]["step"])
        for checkpoint, after in zip(by_step, by_step[1:] + [None], strict=True):
            step = int(checkpoint["step"])
            level = (furthest - step + 1).bit_length() - 1  # ⌊log2(age + 1)⌋
            width = 1 << max(level - 1, 0)
            if after is None or int(after["step"]) >= (step // width + 1) * width:
                kept.add(checkpoint["id"])
    return [c["id"] for c in periodic if c["id"] not in kept]


def periodic_due(
    policy: RetentionPolicy,
    step: int,
    every_steps: int,
    now: float,
    last_periodic_time: float | None,
) -> bool:
    """Whether to write a periodic checkpoint at ``step``.

    Due at a multiple of ``every_steps`` (0: never) once ``policy.min_seconds`` have
    passed since the last periodic one (``None``: none written yet). A clock that went
    back (``now`` before the last one) makes it due rather than stalling checkpoints.
    """
    if every_steps <= 0 or step % every_steps:
        return False
    if last_periodic_time is None or now < last_periodic_time:
        return True
    return now - last_periodic_time >= policy.min_seconds


def describe(policy: RetentionPolicy) -> str:
    """One sentence for a page, e.g. for the defaults: "Keeps each branch's newest
    periodic checkpoint, the newest 10 overall, a log-spaced set of older ones and the
    best by dev accuracy; at most one per 30 s. Initial, manual, pre-change, rollback
    and final checkpoints are never removed."
    """
    if policy.keep_last is None:
        kept = "Keeps every periodic checkpoint"
    else:
        parts = ["each branch's newest periodic checkpoint"]
        if policy.keep_last:
            parts.append(f"the newest {policy.keep_last} overall")
        if policy.keep_log_spaced:
            parts.append("a log-spaced set of older ones")
        if policy.keep_best:
            best = "the best" if policy.keep_best == 1 else f"the best {policy.keep_best}"
            parts.append(f"{best} by dev accuracy")
        if policy.keep_every_steps:
            parts.append(f"one at every multiple of {policy.keep_every_steps} steps")
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        kept = "Keeps " + listed
    pace = f"; at most one per {policy.min_seconds:g} s" if policy.min_seconds else ""
    best = (" A new best dev accuracy also gets one, so early stopping can restore it."
            if policy.save_best else "")
    return (
        f"{kept}{pace}.{best} Initial, manual, pre-change, rollback and final checkpoints "
        "are never removed."
    )
