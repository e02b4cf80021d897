"""Damaged, foreign and hostile checkpoint files: each reported with a reason and skipped.

Several hundred files are generated from one good checkpoint: truncated at random offsets,
random bytes, flipped bytes inside an array, valid zips with missing, extra, reshaped or
retyped arrays, NaN/inf, object arrays and pickled payloads that would create a marker file
if ever unpickled, metadata that lies (ids, step types, missing keys, out-of-range
hyperparameters, unknown optimizer, broken schedule/iterator/RNG/branch records), and
checkpoints of other architectures and other runs. Every variant except its one defect is a
valid checkpoint of the run (its id matches its name), and a control copy with no defect is
accepted, so each is refused for its defect and nothing else.
"""

from __future__ import annotations

import copy
import io
import json
import pickle
import random
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlcore import checkpoint as ckptio
from dlcore.branches import JOURNAL_FORMAT
from dlcore.trainer import CHECKPOINT_FORMAT, RunConfig, Trainer
from tests.test_reliability import SMALL, Payload, npz_bytes, report, run_steps

FIRST_VARIANT = 100  # damaged files are ckpt-000100 onwards, newer than every good one


def meta_array(meta) -> np.ndarray:
    return np.frombuffer(json.dumps(meta).encode(), np.uint8)


class Variants:
    """Writes damaged checkpoint files ckpt-000100, ckpt-000101, ... into a run folder."""

    def __init__(self, run_dir: Path, arrays: dict, meta: dict):
        self.run_dir, self.arrays, self.meta = run_dir, arrays, meta
        self.seq = FIRST_VARIANT
        self.written: dict[str, str] = {}  # file name -> what is wrong with it

    def _next(self, what: str) -> tuple[Path, str]:
        checkpoint_id = f"ckpt-{self.seq:06d}"
        self.seq += 1
        path = self.run_dir / f"{checkpoint_id}.npz"
        self.written[path.name] = what
        return path, checkpoint_id

    def raw(self, what: str, data: bytes) -> None:
        path, _ = self._next(what)
        path.write_bytes(data)

    def good_meta(self, checkpoint_id: str) -> dict:
        meta = copy.deepcopy(self.meta)
        meta["info"]["id"] = checkpoint_id
        meta["info"]["seq"] = int(checkpoint_id.removeprefix("ckpt-"))
        return meta

    def members(self, what: str, change_arrays=None, change_meta=None, raw_meta=None) -> None:
        """A well-formed file whose arrays/metadata are then changed by the given functions."""
        path, checkpoint_id = self._next(what)
        arrays = {k: v.copy() for k, v in self.arrays.items()}
        meta = self.good_meta(checkpoint_id)
        if change_arrays:
            change_arrays(arrays)
        if change_meta:
            change_meta(meta)
        members = dict(arrays)
        members.setdefault(ckptio.META_KEY, raw_meta if raw_meta is not None else meta_array(meta))
        path.write_bytes(npz_bytes(members))


def delete(keys):
    def change(d):
        for key in keys:
            d.pop(key, None)
    return change


def put(path: tuple, value):
    """Set meta[path[0]][path[1]]... = value (a lie in the metadata)."""
    def change(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def remove(path: tuple):
    def change(meta):
        target = meta
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


def flip_bytes_in_member(data: bytes, member: str, rng: random.Random) -> bytes:
    """Overwrite bytes inside one member's array data (past its .npy header)."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 128
    end = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + \
        info.compress_size
    position = rng.randrange(start, max(start + 1, end))
    corrupted = bytearray(data)
    corrupted[position] ^= 0xFF
    return bytes(corrupted)


def npy_with_header(shape, dtype="<f8", body=b"") -> bytes:
    """An .npy file whose header claims ``shape`` whatever the body holds."""
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


def zip_with(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def generate(variants: Variants, foreign: dict[str, Path], marker: Path, rng: random.Random):
    arrays = variants.arrays
    good_bytes = npz_bytes({**arrays, ckptio.META_KEY: meta_array(
        variants.good_meta(f"ckpt-{variants.seq:06d}"))})
    keys = sorted(arrays)
    float_keys = [k for k in keys if arrays[k].dtype.kind == "f"]

    # 1) truncated at random offsets (0 bytes included)
    for offset in [0, 1, 4, 22, len(good_bytes) - 1] + rng.sample(range(len(good_bytes)), 55):
        variants.raw(f"truncated at byte {offset}", good_bytes[:offset])
    # 2) random bytes; random bytes behind a zip / .npy / pickle signature
    for _ in range(12):
        variants.raw("random bytes", rng.randbytes(rng.randrange(1, 5000)))
    for signature in (b"PK\x03\x04", b"PK\x05\x06" + bytes(18), b"\x93NUMPY", b"\x80\x04"):
        for _ in range(3):
            variants.raw(f"random bytes after {signature[:6]!r}",
                         signature + rng.randbytes(rng.randrange(0, 3000)))
    # 3) bit rot: a byte flipped inside each array's data
    for key in keys:
        data = npz_bytes({**arrays, ckptio.META_KEY: meta_array(
            variants.good_meta(f"ckpt-{variants.seq:06d}"))})
        variants.raw(f"byte flipped in {key}", flip_bytes_in_member(data, f"{key}.npy", rng))
    # 4) not a zip at all: a bare .npy under a checkpoint name
    buffer = io.BytesIO()
    np.save(buffer, arrays[keys[0]])
    variants.raw("a bare .npy file", buffer.getvalue())
    buffer = io.BytesIO()
    np.save(buffer, np.array([Payload(marker)], dtype=object), allow_pickle=True)
    variants.raw("a bare pickled .npy", buffer.getvalue())
    variants.raw("a raw pickle", pickle.dumps(Payload(marker)))
    variants.raw("a raw pickle of a dict of arrays", pickle.dumps({"arrays": arrays,
                                                                   "evil": Payload(marker)}))
    # 5) valid zips with missing arrays, and with extra ones
    for key in keys + [ckptio.META_KEY]:
        if key == ckptio.META_KEY:
            variants.raw("no meta.json", npz_bytes(arrays))
        else:
            variants.members(f"missing {key}", change_arrays=delete([key]))
    for extra in ("evil", "params/fc9.W", "optim/fc1.W/z", "buffers/bn9.running_mean"):
        variants.members(f"extra array {extra}",
                         change_arrays=lambda a, extra=extra: a.__setitem__(extra, np.zeros(3)))
    # 6) wrong shapes, wrong dtypes, NaN / inf
    for key in keys:
        variants.members(f"{key} one element short", change_arrays=lambda a, key=key:
                         a.__setitem__(key, a[key].reshape(-1)[:-1]))
        variants.members(f"{key} with an extra axis", change_arrays=lambda a, key=key:
                         a.__setitem__(key, a[key][None]))
    for key in float_keys:
        variants.members(f"{key} as float32", change_arrays=lambda a, key=key:
                         a.__setitem__(key, a[key].astype(np.float32)))
        variants.members(f"NaN in {key}", change_arrays=lambda a, key=key:
                         a[key].reshape(-1).__setitem__(rng.randrange(a[key].size), np.nan))
    for key in rng.sample(float_keys, 4):
        variants.members(f"inf in {key}", change_arrays=lambda a, key=key:
                         a[key].reshape(-1).__setitem__(0, -np.inf))
    weight = "params/fc1.W"
    for dtype in (np.int64, np.complex128, np.bool_, "U8", "S8", "datetime64[s]",
                  [("a", "<f8"), ("b", "<i4")], np.float16):
        variants.members(f"{weight} as {dtype}", change_arrays=lambda a, dtype=dtype:
                         a.__setitem__(weight, np.zeros(a[weight].shape, dtype=dtype)))
    variants.members("permutation with a repeated index", change_arrays=lambda a:
                     a["data/permutation"].__setitem__(0, a["data/permutation"][1]))
    variants.members("permutation as floats", change_arrays=lambda a: a.__setitem__(
        "data/permutation", a["data/permutation"].astype(np.float64)))
    # 7) object arrays and pickled payloads in every place
    for key in keys + [ckptio.META_KEY, "evil"]:
        variants.members(f"pickled payload as {key}", change_arrays=lambda a, key=key:
                         a.__setitem__(key, np.array([Payload(marker)], dtype=object)))
    variants.raw("a zip member that is not .npy", zip_with({
        **{f"{k}.npy": _npy(v) for k, v in arrays.items()}, "params/fc1.W": b"raw bytes"}))
    variants.raw("a zip member .npy with garbage", zip_with({
        **{f"{k}.npy": _npy(v) for k, v in arrays.items() if k != weight},
        f"{weight}.npy": b"\x93NUMPY garbage"}))
    variants.raw("an .npy header claiming 2^40 elements", zip_with({
        **{f"{k}.npy": _npy(v) for k, v in arrays.items() if k != weight},
        f"{weight}.npy": npy_with_header((2**40,)),
        "meta.json.npy": _npy(meta_array(variants.good_meta(f"ckpt-{variants.seq:06d}")))}))
    variants.raw("an .npy header claiming more data than there is", zip_with({
        **{f"{k}.npy": _npy(v) for k, v in arrays.items() if k != weight},
        f"{weight}.npy": npy_with_header((10**6,), body=bytes(80)),
        "meta.json.npy": _npy(meta_array(variants.good_meta(f"ckpt-{variants.seq:06d}")))}))
    # 8) metadata that lies
    lies = [
        (("info", "id"), "ckpt-000001"), (("info", "id"), "../../etc/passwd"), (("info", "id"), 5),
        (("info", "id"), None),
        (("info", "step"), "12"), (("info", "step"), 1.5), (("info", "step"), -1),
        (("info", "step"), None), (("info", "step"), True), (("info", "step"), [8]),
        (("info", "step"), 10**400), (("info", "epoch"), 2**63),
        (("schedule",), {"name": "polynomial", "params": {"total": 10**400}, "anchor": 1e-3,
                         "start_epoch": 0}),
        (("info", "hparams", "eval_every"), 10**400),
        (("info", "branch"), "0"), (("info", "branch"), -1), (("info", "branch"), 99),
        (("info", "branch"), 0.5), (("info", "epoch"), "x"), (("info", "epoch"), -3),
        (("info", "seq"), "x"),
        (("info", "hparams"), "adam"), (("info", "hparams"), None),
        (("info", "hparams", "lr"), -1), (("info", "hparams", "lr"), 0),
        (("info", "hparams", "lr"), "0.1"), (("info", "hparams", "lr"), float("nan")),
        (("info", "hparams", "lr"), float("inf")), (("info", "hparams", "lr"), None),
        (("info", "hparams", "beta1"), 1.5), (("info", "hparams", "beta2"), -0.1),
        (("info", "hparams", "eps"), 0), (("info", "hparams", "batch_size"), 0),
        (("info", "hparams", "batch_size"), 10**9), (("info", "hparams", "batch_size"), 2.5),
        (("info", "hparams", "keep_prob"), 0), (("info", "hparams", "keep_prob"), 2),
        (("info", "hparams", "l2"), -1), (("info", "hparams", "bn_momentum"), 1),
        (("info", "hparams", "eval_every"), 0), (("info", "hparams", "schedule"), "cosine"),
        (("info", "hparams", "schedule_params"), "fast"),
        (("info", "hparams", "schedule_params"), {"base": 0.5}),
        (("info", "hparams", "optimizer"), "sgd"), (("info", "hparams", "optimizer"), "gd"),
        (("info", "hparams", "optimizer"), ["adam"]), (("info", "hparams", "colour"), "red"),
        (("optimizer", "t"), -1), (("optimizer", "t"), "3"), (("optimizer", "t"), 1.5),
        (("optimizer", "t"), None), (("optimizer",), "adam"),
        (("schedule", "name"), "cosine"), (("schedule", "params"), {"x": 1}),
        (("schedule", "params"), [1]), (("schedule", "anchor"), "abc"),
        (("schedule", "anchor"), float("nan")), (("schedule", "anchor"), -1.0),
        (("schedule", "anchor"), 0), (("schedule", "anchor"), None),
        (("schedule", "start_epoch"), "x"), (("schedule", "start_epoch"), -5),
        (("schedule", "start_epoch"), 2.5),
        (("iterator", "position"), 10**9), (("iterator", "batch_size"), 0),
        (("iterator", "epoch"), -1), (("iterator", "rng_state"), "seed"),
        (("iterator", "rng_state", "state", "state"), -1), (("iterator",), []),
        (("dropout_rng",), {"bit_generator": "MT19937"}), (("dropout_rng",), "x"),
        (("dropout_rng", "state", "inc"), "x"),
        (("recent_costs",), ["a"]), (("recent_costs",), [float("nan")]),
        (("recent_costs",), "abc"), (("recent_costs",), None), (("recent_costs",), [None]),
        (("recent_costs",), [1.0] * 10_000),
        (("branches",), "x"), (("branches",), {"x": 1}), (("branches",), {"0": 5}),
        (("branches",), {"0": {"parent_branch": "a", "fork_step": 0, "from_checkpoint": None}}),
        (("branches",), {"0": {"parent_branch": None, "fork_step": -4, "from_checkpoint": None}}),
        (("branches",), {"0": {"parent_branch": 7, "fork_step": 0, "from_checkpoint": None}}),
        (("branches",), {"0": {"parent_branch": None, "fork_step": 0, "from_checkpoint": 3}}),
        (("branches",), {"0": {}}), (("branches",), {}), (("branches",), []),
        (("format",), "panda-journal-v1"), (("format",), "something-else"), (("format",), None),
        (("architecture", "n_features"), 3), (("architecture", "hidden"), [8]),
        (("architecture", "dtype"), "float32"), (("architecture",), None),
        (("config", "seed"), 1), (("config", "dataset"), "spirals"), (("config",), "x"),
    ]
    for path, value in lies:
        variants.members(f"meta {'.'.join(path)} = {value!r:.40}", change_meta=put(path, value))
    for path in [("info",), ("info", "id"), ("info", "step"), ("info", "branch"),
                 ("info", "epoch"), ("info", "hparams"), ("info", "hparams", "optimizer"),
                 ("info", "hparams", "lr"), ("architecture",), ("config",), ("optimizer",),
                 ("optimizer", "t"), ("schedule",), ("schedule", "anchor"),
                 ("schedule", "start_epoch"), ("iterator",), ("iterator", "rng_state"),
                 ("dropout_rng",), ("recent_costs",), ("branches",), ("format",)]:
        variants.members(f"meta without {'.'.join(path)}", change_meta=remove(path))
    for raw, what in [(b"[]", "a list"), (b'"x"', "a string"), (b"{", "broken JSON"),
                      (b"\xff\xfe{}", "not UTF-8"), (b"", "empty"), (b"NaN", "NaN"),
                      (b'{"format": "panda-checkpoint-v1"}', "only a format")]:
        variants.members(f"meta.json is {what}", raw_meta=np.frombuffer(raw, np.uint8))
    variants.members("meta.json as int64", raw_meta=np.arange(3))
    variants.members("meta.json as 2-D bytes", raw_meta=meta_array({}).reshape(1, -1))
    # 9) checkpoints of other architectures and of other runs
    for what, path in foreign.items():
        foreign_arrays, foreign_meta = ckptio.read(path, CHECKPOINT_FORMAT)

        def take_foreign(a, foreign_arrays=foreign_arrays):
            a.clear()
            a.update(foreign_arrays)

        def take_foreign_meta(m, foreign_meta=foreign_meta):
            info_id, seq = m["info"]["id"], m["info"]["seq"]
            m.clear()
            m.update(copy.deepcopy(foreign_meta))
            m["info"]["id"], m["info"]["seq"] = info_id, seq

        variants.members(what, change_arrays=take_foreign, change_meta=take_foreign_meta)


def _npy(value: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, value)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    """A run with checkpoints at steps 0, 4 and 8, and foreign checkpoints to copy."""
    folder = tmp_path_factory.mktemp("good")
    with Trainer(RunConfig(**SMALL), folder, run_id="victim") as trainer:
        run_steps(trainer, 4)
        trainer.checkpoint("middle")
        run_steps(trainer, 4)
        good = trainer.checkpoint("good")
    foreign = {}
    for run_id, config in [
        ("narrower", RunConfig(**{**SMALL, "hidden": (8,)})),
        ("deeper", RunConfig(**{**SMALL, "hidden": (16, 16)})),
        ("float32", RunConfig(**{**SMALL, "dtype": "float32"})),
        ("no-batchnorm", RunConfig(**{**SMALL, "batchnorm": False})),
        ("spirals", RunConfig(**{**SMALL, "dataset": "spirals"})),  # same shapes, other data
        ("other-seed", RunConfig(**{**SMALL, "seed": 7})),  # same shapes, another run
        ("momentum", RunConfig(**{**SMALL, "optimizer": "momentum"})),
    ]:
        with Trainer(config, folder, run_id=run_id) as other:
            run_steps(other, 8)
            checkpoint_id = other.checkpoint()
        foreign[f"a checkpoint of run '{run_id}'"] = folder / run_id / f"{checkpoint_id}.npz"
    return folder / "victim", good, foreign


def test_hundreds_of_damaged_checkpoints_are_reported_and_never_loaded(good_run, tmp_path):
    victim, good, foreign = good_run
    run_dir = tmp_path / "victim"
    shutil.copytree(victim, run_dir)
    marker = tmp_path / "pickle-ran-code"
    # The payload is live: unpickling it anywhere else creates its marker.
    control_marker = tmp_path / "control-marker"
    pickle.loads(pickle.dumps(Payload(control_marker)))
    assert control_marker.exists()

    arrays, meta = ckptio.read(run_dir / f"{good}.npz", CHECKPOINT_FORMAT)
    rng = random.Random(6)
    variants = Variants(run_dir, arrays, meta)
    generate(variants, foreign, marker, rng)
    assert len(variants.written) >= 200

    # A control with no defect (only its id fits its new name) is a valid checkpoint.
    control_dir = tmp_path / "control" / "victim"
    shutil.copytree(victim, control_dir)
    control = Variants(control_dir, arrays, meta)
    control.members("control")
    with Trainer.open(control_dir.parent) as reopened:
        assert reopened.snapshot().last_good_checkpoint == f"ckpt-{FIRST_VARIANT:06d}"

    good_ids = sorted(p.stem for p in victim.glob("ckpt-*.npz"))
    with Trainer.open(tmp_path) as trainer:
        snap = trainer.snapshot()
        damaged = {d["file"]: d["reason"] for d in snap.damaged}
        loaded = sorted(set(variants.written) - set(damaged))
        assert not loaded, [f"{name}: {variants.written[name]}" for name in loaded]
        assert len(snap.damaged) == len(damaged) == len(variants.written)
        for name, reason in damaged.items():
            assert name in reason and len(reason) > len(name) + 5, (name, reason)
        # the state is the last good checkpoint's, exactly
        assert [c["id"] for c in snap.checkpoints] == good_ids
        assert (snap.last_good_checkpoint, snap.step) == (good, 8)
        state, _ = trainer.export_state()
        for key, value in arrays.items():
            np.testing.assert_array_equal(state[key], value, err_msg=key)
        # none can be rolled back to, inspected or exported
        for name in variants.written:
            checkpoint_id = name.removesuffix(".npz")
            for attempt in (trainer.rollback, trainer.inspect_checkpoint, trainer.export_state,
                            lambda cid: trainer.weight_distance(good, cid)):
                with pytest.raises(ValueError, match=checkpoint_id):
                    attempt(checkpoint_id)
        assert len(trainer.snapshot().damaged) == len(variants.written), "listed twice"
        assert run_steps(trainer, 3).step == 11 and trainer.snapshot().error is None
    assert not marker.exists(), "a pickled payload was executed"
    pickled = sum("pickle" in what for what in variants.written.values())
    report("damaged checkpoint files", tried=len(variants.written), reported=len(damaged),
           loaded_by_mistake=len(loaded), with_pickled_payloads=pickled,
           code_executed=int(marker.exists()),
           rollbacks_refused=len(variants.written))


def test_damaged_journal_files_are_reported_and_the_run_still_opens(good_run, tmp_path):
    """The history files: a damaged chunk is reported and skipped, never a crash."""
    victim, good, _ = good_run
    journal = sorted((victim / "journal").glob("*.npz"))[-1]
    arrays, meta = ckptio.read(journal, JOURNAL_FORMAT)
    data = journal.read_bytes()
    rng = random.Random(7)

    def rewrite(change_arrays=None, change_meta=None):
        a, m = {k: v.copy() for k, v in arrays.items()}, copy.deepcopy(meta)
        if change_arrays:
            change_arrays(a)
        if change_meta:
            change_meta(m)
        return npz_bytes({**a, ckptio.META_KEY: meta_array(m)})

    step_key = "steps/step"
    cases = {
        "truncated": data[: len(data) // 2], "random bytes": rng.randbytes(900),
        "a raw pickle": pickle.dumps(Payload(tmp_path / "journal-marker")),
        "rows of unequal length": rewrite(lambda a: a.__setitem__(step_key, a[step_key][:-1])),
        "steps as text": rewrite(lambda a: a.__setitem__(step_key, a[step_key].astype("U4"))),
        "a 2-D column": rewrite(lambda a: a.__setitem__(step_key, a[step_key][None])),
        "a missing column": rewrite(delete([step_key])),
        "steps out of order": rewrite(lambda a: a.__setitem__(step_key, a[step_key][::-1].copy())),
        "NaN steps": rewrite(lambda a: a.__setitem__(step_key, a[step_key] * np.nan)),
        "events not a list": rewrite(change_meta=put(("events",), "boom")),
        "events of garbage": rewrite(change_meta=put(("events",), [1, "x", None])),
        "an event without a step": rewrite(change_meta=put(("events",), [{"kind": "change"}])),
        "branch as text": rewrite(change_meta=put(("branch",), "x")),
        "branch_info garbage": rewrite(change_meta=put(("branch_info",), 5)),
        "branch_info of a new branch": rewrite(change_meta=lambda m: m.update(
            branch=5, branch_info={"parent_branch": "q", "fork_step": "z", "from_checkpoint": 1})),
        "no events": rewrite(change_meta=remove(("events",))),
    }
    tried = 0
    for what, content in cases.items():
        folder = tmp_path / f"case{tried}"
        shutil.copytree(victim, folder / "victim")
        (folder / "victim" / "journal" / journal.name).write_bytes(content)
        tried += 1
        with Trainer.open(folder) as trainer:
            snap = trainer.snapshot()
            assert (snap.last_good_checkpoint, snap.step) == (good, 8), what
            files = [d["file"] for d in snap.damaged]
            assert files == [f"journal/{journal.name}"], (what, snap.damaged)
            steps = snap.history["step"]
            assert np.all(np.diff(steps) > 0) and len(steps) <= 8, what
            assert run_steps(trainer, 2).step == 10, what
    assert not (tmp_path / "journal-marker").exists()
    report("damaged journal files", tried=tried, crashes=0, code_executed=0)
