"""dlcore.retention: which periodic checkpoints a run keeps.

The property test plays the engine: it trains in jumps, writes periodic checkpoints
when ``periodic_due`` says so, and manual, pre-change, final and unknown-kind ones by
hand, rolls back to any checkpoint on disk (a new branch; the target becomes
protected), and after every checkpoint deletes what ``to_remove`` names.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlcore.retention import FIELD_HELP, RetentionPolicy, describe, periodic_due, to_remove


def log_spaced_bound(furthest_step: int, every: int) -> int:
    """Most checkpoints the log-spaced rule keeps when periodic steps are multiples of
    ``every``: one at age 0, then at most three per level L = ⌊log2(age + 1)⌋ from the
    first level whose ages [2^L − 1, 2^(L+1) − 2] hold a positive multiple of ``every``
    up to ⌊log2(furthest_step + 1)⌋ (about 3·log2(furthest_step / every) + 7).
    """
    first = max(1, math.ceil(math.log2(every + 2)) - 1)
    last = (furthest_step + 1).bit_length() - 1
    return 1 + 3 * max(0, last - first + 1)


def bucket_end(step: int, furthest_step: int) -> int:
    """End of the log-spaced bucket holding ``step`` (as in the module's docstring)."""
    level = (furthest_step - step + 1).bit_length() - 1
    width = 1 << max(level - 1, 0)
    return (step // width + 1) * width


def best_first(checkpoint):
    return (-checkpoint["metrics"]["dev_accuracy"], checkpoint["seq"])


class SimulatedRun:
    """The engine's side of retention: writes checkpoints, deletes what to_remove says."""

    def __init__(self, policy: RetentionPolicy, every: int):
        self.policy, self.every = policy, every
        self.on_disk: dict[str, dict] = {}
        self.written: list[dict] = []
        self.removed: set[str] = set()
        self.seq, self.step, self.time, self.branch = 0, 0, 1.7e9, 0
        self.branch_starts: set[str] = set()
        self.last_good = None
        self.last_periodic_time = None
        self.write("initial")

    def protected(self) -> set[str]:
        return self.branch_starts | {self.last_good}

    def write(self, kind: str, dev_accuracy=None) -> str:
        checkpoint_id = f"ckpt-{self.seq:06d}"
        metrics = {} if dev_accuracy is None else {"dev_accuracy": dev_accuracy, "dev_cost": 0.3}
        checkpoint = dict(
            id=checkpoint_id, seq=self.seq, step=self.step, branch=self.branch,
            kind=kind, time=self.time, metrics=metrics, note="",
        )  # fmt: skip
        self.seq += 1
        self.on_disk[checkpoint_id] = checkpoint
        self.written.append(checkpoint)
        self.last_good = checkpoint_id
        protected = self.protected()
        removed = to_remove(self.policy, list(self.on_disk.values()), protected)
        assert len(set(removed)) == len(removed), "an id returned twice"
        for removed_id in removed:
            assert removed_id in self.on_disk, f"{removed_id} returned again after removal"
            assert self.on_disk[removed_id]["kind"] == "periodic", removed_id
            assert removed_id not in protected, removed_id
            del self.on_disk[removed_id]
            self.removed.add(removed_id)
        return checkpoint_id

    def train(self, steps: int, seconds_per_step: float, accuracies: list):
        """``steps`` more steps; a periodic checkpoint at each multiple of every that is due."""
        start_step, start_time = self.step, self.time
        first = (start_step // self.every + 1) * self.every
        for n, step in enumerate(range(first, start_step + steps + 1, self.every)):
            self.step, self.time = step, start_time + (step - start_step) * seconds_per_step
            if periodic_due(self.policy, step, self.every, self.time, self.last_periodic_time):
                self.last_periodic_time = self.time
                self.write("periodic", accuracies[n % len(accuracies)] if accuracies else None)
        self.step, self.time = start_step + steps, start_time + steps * seconds_per_step

    def rollback(self, pick: int):
        """Like Trainer.rollback: save the branch being left, fork at the target's step."""
        target = sorted(self.on_disk.values(), key=lambda c: c["seq"])[pick % len(self.on_disk)]
        if self.step != self.written[-1]["step"]:
            self.write("pre-change")
        self.branch_starts.add(target["id"])
        self.branch = max(c["branch"] for c in self.written) + 1
        self.step = target["step"]
        self.write("rollback")

    def periodic(self) -> list[dict]:
        return [c for c in self.on_disk.values() if c["kind"] == "periodic"]

    def check(self):
        """Everything the policy promises, on what is on disk now."""
        policy, on_disk = self.policy, self.on_disk
        written_periodic = [c for c in self.written if c["kind"] == "periodic"]
        # 1) nothing but periodic checkpoints ever goes; no branch start ever goes
        assert all(c["id"] in on_disk for c in self.written if c["kind"] != "periodic")
        assert self.branch_starts <= set(on_disk)
        # 2) each branch's newest periodic checkpoint, and the run's keep_last newest
        newest = {c["branch"]: c["id"] for c in written_periodic}
        assert set(newest.values()) <= set(on_disk)
        if policy.keep_last is not None:
            keep_last = written_periodic[max(0, len(written_periodic) - policy.keep_last) :]
            assert {c["id"] for c in keep_last} <= set(on_disk)
        # 3) the best by dev accuracy ever written are still there
        scored = sorted((c for c in written_periodic if c["metrics"]), key=best_first)
        assert {c["id"] for c in scored[: policy.keep_best]} <= set(on_disk)
        # 4) bounded
        periodic = self.periodic()
        if policy.keep_last is not None and periodic:
            furthest = max(c["step"] for c in periodic)
            period = policy.keep_every_steps
            every_kept = sum(1 for c in periodic if period and c["step"] % period == 0)
            bound = (
                policy.keep_last
                + policy.keep_best
                + (log_spaced_bound(furthest, self.every) if policy.keep_log_spaced else 0)
                + len(newest)
                + len(self.protected() & {c["id"] for c in periodic})
                + every_kept
            )
            assert len(periodic) <= bound, (len(periodic), bound)
        # 5) stable: nothing left to remove, and nothing removed would be kept if it were back
        assert to_remove(policy, list(on_disk.values()), self.protected()) == []
        gone = [c for c in self.written if c["id"] in self.removed]
        again = to_remove(policy, list(on_disk.values()) + gone, self.protected())
        assert self.removed <= set(again), sorted(self.removed - set(again))
        # 6) every periodic checkpoint ever written is represented in its bucket today
        if policy.keep_log_spaced and periodic and policy.keep_last is not None:
            furthest = max(c["step"] for c in periodic)
            kept = sorted((c["step"], c["seq"]) for c in periodic)
            for c in written_periodic:
                end = bucket_end(c["step"], furthest)
                assert any((c["step"], c["seq"]) <= k and k[0] < end for k in kept), c["id"]


policies = st.builds(
    RetentionPolicy,
    keep_last=st.one_of(st.integers(0, 6), st.just(None)),
    keep_log_spaced=st.booleans(),
    keep_best=st.integers(0, 3),
    keep_every_steps=st.sampled_from([0, 0, 0, 7, 500]),
    min_seconds=st.sampled_from([0.0, 0.0, 1.0, 30.0]),
)
accuracy = st.one_of(st.none(), st.sampled_from([0.5, 0.9]), st.floats(0.0, 1.0))
events = st.one_of(
    st.tuples(
        st.just("train"),
        st.integers(1, 40),  # intervals
        st.integers(0, 99),  # extra steps, in % of an interval
        st.sampled_from([0.001, 0.05, 1.0]),  # seconds per step
        st.lists(accuracy, max_size=5),
    ),
    st.tuples(st.sampled_from(["manual", "pre-change", "final", "export-v2"])),
    st.tuples(st.just("rollback"), st.integers(0, 10**6)),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=policies, every=st.integers(1, 300), script=st.lists(events, max_size=40))
def test_simulated_session_keeps_its_promises(policy, every, script):
    run = SimulatedRun(policy, every)
    for event in script:
        if event[0] == "train":
            _, intervals, extra, seconds_per_step, accuracies = event
            run.train(intervals * every + extra * every // 100, seconds_per_step, accuracies)
        elif event[0] == "rollback":
            run.rollback(event[1])
        else:
            run.write(event[0])
        run.check()


def test_a_long_single_branch_run_stays_bounded():
    """10,000 periodic checkpoints, one at a time: the count never exceeds the bound."""
    run = SimulatedRun(RetentionPolicy(min_seconds=0), every=10)
    most = 0
    for _ in range(100):
        run.train(1000, 0.01, [0.3, 0.6, 0.2])
        most = max(most, len(run.periodic()))
    run.check()
    bound = 10 + 1 + log_spaced_bound(run.step, 10) + 1 + 1
    print(f"\n100,000 steps, every 10: at most {most} periodic checkpoints kept (bound {bound})")
    assert most <= bound


def test_a_20000_step_run_keeps_few_periodic_and_every_manual_checkpoint():
    policy = RetentionPolicy(min_seconds=0)
    run = SimulatedRun(policy, every=100)
    for block in range(200):  # periodic every 100 steps, 1 s apart
        run.train(100, 0.01, [0.5 + block / 1000])
        if block % 25 == 12:
            run.write("manual")
        if block % 30 == 17:
            run.write("pre-change")
    run.check()
    kept = sorted(c["step"] for c in run.periodic())
    print(f"\n20,000 steps, every 100: periodic kept at steps {kept}")
    assert len(kept) <= 30
    assert all(c["id"] in run.on_disk for c in run.written if c["kind"] != "periodic")
    assert sum(c["kind"] == "manual" for c in run.on_disk.values()) == 8
    assert sum(c["kind"] == "pre-change" for c in run.on_disk.values()) == 7
    # log-spaced: going back from the newest, each kept one is at most ~twice as old
    ages = [run.step - step for step in reversed(kept)] + [run.step]  # + the initial one
    assert all(older < 2 * newer + 100 for newer, older in itertools.pairwise(ages) if newer)


def test_after_a_rollback_the_left_branch_keeps_its_tip_and_the_target_stays():
    run = SimulatedRun(RetentionPolicy(min_seconds=0, keep_best=0), every=100)
    run.train(3000, 0.01, [])
    target = min(run.periodic(), key=lambda c: abs(c["step"] - 2500))
    tip = max(run.periodic(), key=lambda c: c["seq"])
    run.rollback(sorted(run.on_disk.values(), key=lambda c: c["seq"]).index(target))
    run.train(5000, 0.01, [])  # enough for keep_last to cover only the new branch
    run.check()
    assert target["id"] in run.on_disk and tip["id"] in run.on_disk
    newest_ten = sorted(run.periodic(), key=lambda c: c["seq"])[-10:]
    assert {c["branch"] for c in newest_ten} == {1}


def test_keep_last_counts_every_branch_together():
    """20 rollbacks, each branch with more than keep_last periodic checkpoints: kept are the
    run's 10 newest plus each branch's tip and start, not 10 per branch."""
    policy = RetentionPolicy(keep_log_spaced=False, keep_best=0, min_seconds=0)
    run = SimulatedRun(policy, every=100)
    run.train(1500, 0.01, [])
    for _ in range(20):
        run.rollback(-2)  # the branch's second-newest periodic checkpoint
        run.train(1500, 0.01, [])
        run.check()
    branches = {c["branch"] for c in run.written}
    assert len(branches) == 21
    assert len(run.periodic()) <= 10 + len(branches) + len(run.protected())


def checkpoint(seq, kind="periodic", step=None, branch=0, **metrics):
    return dict(
        id=f"ckpt-{seq:06d}", seq=seq, step=step if step is not None else 100 * seq,
        branch=branch, kind=kind, time=1000.0 + seq, metrics=metrics,
    )  # fmt: skip


def test_only_unprotected_periodic_checkpoints_are_removed():
    kinds = ["initial", "manual", "periodic", "pre-change", "rollback", "final", "someday"]
    checkpoints = [checkpoint(i, kinds[i % len(kinds)]) for i in range(70)]
    policy = RetentionPolicy(keep_last=0, keep_log_spaced=False, keep_best=0)
    periodic = [c["id"] for c in checkpoints if c["kind"] == "periodic"]
    protected = {periodic[3], checkpoints[0]["id"]}
    removed = to_remove(policy, checkpoints, protected)
    assert removed == [i for i in periodic[:-1] if i not in protected]  # oldest first
    assert to_remove(policy, reversed(checkpoints), protected) == removed  # order-free
    assert to_remove(RetentionPolicy(keep_last=None), checkpoints) == []


def test_keep_best_ranks_by_dev_accuracy_and_ignores_missing_or_nan():
    checkpoints = [
        checkpoint(0, dev_accuracy=0.7),
        checkpoint(1, dev_accuracy=float("nan")),
        checkpoint(2),  # not evaluated at that step
        checkpoint(3, dev_accuracy=0.9),
        checkpoint(4, dev_accuracy=0.9),  # a tie: the earlier one ranks first
        checkpoint(5, dev_accuracy=0.8),
        checkpoint(6, dev_accuracy=0.1),
    ]

    def kept(keep_best):
        policy = RetentionPolicy(keep_last=1, keep_log_spaced=False, keep_best=keep_best)
        return {c["id"][-1] for c in checkpoints} - {i[-1] for i in to_remove(policy, checkpoints)}

    assert kept(1) == {"3", "6"}
    assert kept(3) == {"3", "4", "5", "6"}
    assert kept(9) == {"0", "3", "4", "5", "6"}


def test_keep_every_steps_keeps_the_multiples():
    checkpoints = [checkpoint(i, step=250 * i) for i in range(1, 41)]
    policy = RetentionPolicy(keep_last=1, keep_log_spaced=False, keep_best=0, keep_every_steps=1000)
    kept = {c["step"] for c in checkpoints} - {
        c["step"] for c in checkpoints if c["id"] in to_remove(policy, checkpoints)
    }
    assert kept == set(range(1000, 10001, 1000))


def test_periodic_due_by_steps_and_by_time():
    policy = RetentionPolicy(min_seconds=30)
    assert periodic_due(policy, 1000, 100, now=5.0, last_periodic_time=None)
    assert not periodic_due(policy, 1050, 100, now=500.0, last_periodic_time=None)
    assert not periodic_due(policy, 1000, 0, now=500.0, last_periodic_time=None)  # off
    assert not periodic_due(policy, 1000, 100, now=129.9, last_periodic_time=100.0)
    assert periodic_due(policy, 1000, 100, now=130.0, last_periodic_time=100.0)
    assert periodic_due(policy, 1000, 100, now=50.0, last_periodic_time=100.0)  # clock went back
    assert periodic_due(RetentionPolicy(min_seconds=0), 7, 7, now=1.0, last_periodic_time=1.0)


def test_policy_json_round_trip_and_defaults():
    for policy in [
        RetentionPolicy(),
        RetentionPolicy(keep_last=None, keep_log_spaced=False, keep_best=0, min_seconds=0),
        RetentionPolicy(keep_last=3, keep_best=5, keep_every_steps=10_000, min_seconds=2.5),
    ]:
        assert RetentionPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert RetentionPolicy.from_dict({"keep_last": 4}) == RetentionPolicy(keep_last=4)
    assert RetentionPolicy(min_seconds=30).min_seconds == 30.0  # an int from JSON
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetentionPolicy().keep_last = 3
    assert set(FIELD_HELP) == {f.name for f in dataclasses.fields(RetentionPolicy)}
    assert all(text and "\n" not in text and len(text) < 90 for text in FIELD_HELP.values())


@pytest.mark.parametrize(
    "bad, named",
    [
        ({"keep_last": -1}, "keep_last"),
        ({"keep_last": 2.5}, "keep_last"),
        ({"keep_last": True}, "keep_last"),
        ({"keep_log_spaced": "yes"}, "keep_log_spaced"),
        ({"keep_best": -2}, "keep_best"),
        ({"keep_every_steps": "100"}, "keep_every_steps"),
        ({"min_seconds": -1}, "min_seconds"),
        ({"min_seconds": float("inf")}, "min_seconds"),
        ({"min_seconds": None}, "min_seconds"),
        ({"keep_newest": 3}, "keep_newest"),
    ],
)
def test_policy_validation_names_the_bad_field(bad, named):
    with pytest.raises(ValueError, match=named):
        RetentionPolicy.from_dict(bad)
    with pytest.raises(ValueError, match="mapping"):
        RetentionPolicy.from_dict([("keep_last", 3)])


def test_describe():
    assert describe(RetentionPolicy()) == (
        "Keeps each branch's newest periodic checkpoint, the newest 10 overall, a log-spaced "
        "set of older ones and the best by dev accuracy; at most one per 30 s. A new best "
        "dev accuracy also gets one, so early stopping can restore it. Initial, "
        "manual, pre-change, rollback and final checkpoints are never removed."
    )
    assert describe(RetentionPolicy(keep_last=None, min_seconds=0)).startswith(
        "Keeps every periodic checkpoint. "
    )
    sentence = describe(
        RetentionPolicy(keep_last=0, keep_log_spaced=False, keep_best=3, keep_every_steps=500)
    )
    assert sentence.startswith(
        "Keeps each branch's newest periodic checkpoint, the best 3 by dev accuracy and one "
        "at every multiple of 500 steps; at most one per 30 s."
    )


def test_100000_checkpoints_in_well_under_a_second():
    checkpoints = [
        checkpoint(
            i,
            kind="periodic" if i % 9 else "manual",
            step=10 * (i % 40_000),
            branch=i // 40_000,
            dev_accuracy=(i * 0.618) % 1,
        )
        for i in range(100_000)
    ]
    started = time.perf_counter()
    removed = to_remove(RetentionPolicy(), checkpoints, {"ckpt-000042"})
    seconds = time.perf_counter() - started
    print(f"\nto_remove on 100,000 checkpoints: {seconds:.3f} s, {len(removed)} removed")
    assert len(removed) > 80_000
