"""Hostile input: names that try to leave checkpoints/, odd notes, and bad data files.

Every hostile value must be refused with a ValueError whose message says what is wrong (or,
for notes and file names, neutralised), nothing may be created or deleted outside the run's
folder, and a run that is already training must not notice.
"""

from __future__ import annotations

import io
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlcore import checkpoint as ckptio
from dlcore.data import load_file, prepare_dataset
from dlcore.store import MAX_NOTE_LENGTH
from dlcore.trainer import RunConfig, Trainer, list_runs
from tests.test_reliability import (
    SMALL,
    Payload,
    folder_state,
    npz_bytes,
    report,
    run_steps,
    wait_until_idle,
)

TALLY = {"names": 0, "notes": 0, "data files": 0, "crashes": 0}


@pytest.fixture(scope="module", autouse=True)
def summary():
    yield
    report("hostile inputs", names_tried=TALLY["names"], notes_tried=TALLY["notes"],
           data_files_tried=TALLY["data files"], crashes=TALLY["crashes"])


def refused(kind: str, call, *args, **kwargs) -> str:
    """call(...) must raise ValueError with a message; anything else counts as a crash."""
    TALLY[kind] += 1
    try:
        call(*args, **kwargs)
    except ValueError as error:
        assert str(error).strip(), f"{call.__name__}{args}: ValueError without a message"
        return str(error)
    except Exception as error:
        TALLY["crashes"] += 1
        raise AssertionError(f"{call.__name__}{args!r:.80} crashed: {error!r}") from error
    pytest.fail(f"{call.__name__}{args!r:.80} was accepted")


BAD_RUN_IDS = [
    "..", ".", "../escape", "../../etc", "/tmp/panda-abs", "/", "a/b", "a\\b", "a/../b",
    "run/..", "x\x00y", "\x00", "abc\n", "\nabc", "tab\tid", "é", "Ａbc", "abc\u202e",
    "\u200b", "run\u2215slash", "😀", "a" * 101, "a" * 10_000, " ", " lead", "trail ", "-dash",
    ".hidden", "_under", "C:\\x", "~", "~root", "$HOME", "run*", "run?", "ru|n", "ru:n",
    5, 3.5, b"abc", ["a"], Path("a"), Path("../x"),
]
BAD_CHECKPOINT_IDS = [
    "../ckpt-000000", "ckpt-000000/../../decoy", "/abs/ckpt-000000", "ckpt-000000\n",
    "ckpt-000000\x00", "ckpt-٠٠٠٠٠٠", "ckpt-００００００", "ckpt-²²²²²²", "ckpt-000000.npz",
    "ckpt-0000000", "ckpt-00000", "CKPT-000000", "ckpt-00000a", "", " ", "..", ".",
    "journal/000000", "../existing/ckpt-000000", "ckpt-000000 ", "ckpt-+00000", "ckpt--00000",
    "ckpt-000000" * 1000, 0, None, 3.2, b"ckpt-000000", ["ckpt-000000"], Path("ckpt-000000"),
]


@pytest.fixture
def sandbox(tmp_path):
    """checkpoints/ with one idle run, and decoy files beside and around it."""
    checkpoint_dir = tmp_path / "checkpoints"
    trainer = Trainer(RunConfig(**SMALL), checkpoint_dir, run_id="existing")
    run_steps(trainer, 3)
    trainer.checkpoint("kept")
    for decoy in ("decoy.npz", "ckpt-000000.npz", "escape/ckpt-000000.npz", "etc/passwd"):
        (tmp_path / decoy).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / decoy).write_bytes(b"decoy")
    (checkpoint_dir / "ckpt-000000.npz").write_bytes(b"decoy")
    yield tmp_path, checkpoint_dir, trainer
    trainer.stop()


def test_run_ids_that_try_to_escape_are_refused(sandbox):
    root, checkpoint_dir, _ = sandbox
    before = folder_state(root)
    for run_id in BAD_RUN_IDS:
        refused("names", Trainer, RunConfig(**SMALL), checkpoint_dir, run_id=run_id)
        refused("names", Trainer.open, checkpoint_dir, run_id=run_id)
    assert folder_state(root) == before
    assert not Path("/tmp/panda-abs").exists()
    assert list_runs(checkpoint_dir) == ["existing"]


def test_checkpoint_ids_that_try_to_escape_are_refused(sandbox):
    root, _, trainer = sandbox
    good = trainer.snapshot().checkpoints[0]["id"]
    before = folder_state(root)
    for checkpoint_id in BAD_CHECKPOINT_IDS:
        calls = [trainer.rollback, trainer.delete_checkpoint, trainer.inspect_checkpoint,
                 lambda cid: trainer.weight_distance(good, cid)]
        if checkpoint_id is not None:  # export_state(None) is the live state
            calls.append(trainer.export_state)
        for call in calls:
            refused("names", call, checkpoint_id)
    assert folder_state(root) == before
    snap = wait_until_idle(trainer)
    assert snap.status == "paused" and snap.error is None and snap.damaged == ()


def test_odd_file_names_inside_a_run_folder_do_not_break_open(sandbox):
    """Files a person (or another program) left in the run folder are skipped or reported."""
    root, checkpoint_dir, trainer = sandbox
    trainer.stop()
    run_dir = checkpoint_dir / "existing"
    good = (run_dir / "ckpt-000000.npz").read_bytes()
    odd = ["ckpt-²²²²²².npz", "ckpt-٠٠٠٠٠٩.npz", "ckpt-.npz", "ckpt-abc.npz",
           "ckpt-000001.npz.npz", "ckpt-000000 copy.npz", "ckpt-000099\n.npz",
           "journal/²³.npz", "journal/notes.npz", "journal/000099.npz.tmp"]
    for name in odd:
        (run_dir / name).write_bytes(good)
    (run_dir / "ckpt-000098.npz").mkdir()  # a folder under a checkpoint name
    TALLY["names"] += len(odd) + 1
    with Trainer.open(checkpoint_dir) as reopened:
        snap = reopened.snapshot()
        assert (snap.step, snap.last_good_checkpoint) == (3, "ckpt-000001")
        assert [c["id"] for c in snap.checkpoints] == ["ckpt-000000", "ckpt-000001"]
        assert all(ckptio.CHECKPOINT_ID.match(d["file"].removesuffix(".npz"))
                   or "not a checkpoint name" in d["reason"] or d["file"].startswith("journal/")
                   for d in snap.damaged), snap.damaged
        assert run_steps(reopened, 2).step == 5


HOSTILE_NOTES = [
    "\x00", "\x1b[31mred\x1b[0m", "line 1\nline 2\r\n", "\u202eevil", "\ud800", "tab\there",
    "\x7f\x9b", "<script>alert(1)</script>", "../../etc/passwd", "😀" * 100, "a" * MAX_NOTE_LENGTH,
    "\u200b\u200d\ufeff", "%s%n{0}", "",
]
TOO_LONG_OR_NOT_TEXT = ["a" * (MAX_NOTE_LENGTH + 1), "x" * 10**6, 5, None, b"bytes", ["a"]]


def test_notes_are_neutralised_or_refused(sandbox):
    _, checkpoint_dir, trainer = sandbox
    stored = {}
    for note in HOSTILE_NOTES:
        TALLY["notes"] += 1
        checkpoint_id = trainer.checkpoint(note)
        kept = trainer.snapshot().checkpoints[-1]["note"]
        assert kept.isprintable() or set(kept) <= {" "}, repr(kept)
        assert len(kept) <= MAX_NOTE_LENGTH
        stored[checkpoint_id] = kept
    for note in TOO_LONG_OR_NOT_TEXT:
        refused("notes", trainer.checkpoint, note)
    trainer.stop()
    with Trainer.open(checkpoint_dir) as reopened:  # the notes read back from the files
        notes = {c["id"]: c["note"] for c in reopened.snapshot().checkpoints}
        assert {cid: notes[cid] for cid in stored} == stored


def test_uploaded_file_names_are_neutralised(tmp_path):
    """Whatever the uploaded file is called, the run keeps it as dataset.csv in its folder."""
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    rows = "x1,x2,label\n" + "".join(f"{i % 7},{i % 3},{i % 2}\n" for i in range(100))
    names = ["data with spaces.csv", "ünïcödé.csv", "..csv", "-rf.csv", ".hidden.csv",
             "a\nb.csv", "x" * 200 + ".csv", "$(touch pwned).csv", "DATA.CSV"]
    checkpoint_dir = tmp_path / "checkpoints"
    for n, name in enumerate(names):
        (uploads / name).write_text(rows)
        TALLY["names"] += 1
        with Trainer(RunConfig(**{**SMALL, "dataset": str(uploads / name)}), checkpoint_dir,
                     run_id=f"upload{n}") as trainer:
            assert trainer.config.dataset == f"dataset{Path(name).suffix.lower()}"
            files = {p.name for p in (checkpoint_dir / f"upload{n}").iterdir()}
            assert files == {"run.json", "journal", "ckpt-000000.npz", trainer.config.dataset}
    assert {p.name for p in tmp_path.iterdir()} == {"uploads", "checkpoints"}
    assert not (Path.cwd() / "pwned").exists()
    # paths that are not a readable regular file
    os.mkfifo(uploads / "fifo.csv")  # reading a FIFO would block for ever
    (uploads / "folder.csv").mkdir()
    (uploads / "zero.csv").symlink_to("/dev/zero")
    (uploads / "passwd.csv").symlink_to("/etc/passwd")
    before = folder_state(checkpoint_dir)
    for path in ["fifo.csv", "folder.csv", "zero.csv", "passwd.csv", "missing.csv",
                 "nul\x00.csv", "../../etc/passwd", "data.txt", "/dev/null"]:
        refused("names", Trainer, RunConfig(**{**SMALL, "dataset": str(uploads / path)}),
                checkpoint_dir)
    assert folder_state(checkpoint_dir) == before


# -- data files ------------------------------------------------------------------------------


def csv_text(header="x1,x2,label", rows=()):
    return header + "\n" + "".join(row + "\n" for row in rows)


GOOD_ROWS = [f"{i % 5},{(i * 7) % 3},{i % 2}" for i in range(30)]


def bad_csv_files(marker: Path) -> dict[str, bytes | str]:
    return {
        "non-numeric feature.csv": csv_text(rows=["1,x,0"] + GOOD_ROWS),
        "non-numeric label.csv": csv_text(rows=["1,2,cat"] + GOOD_ROWS),
        "nan feature.csv": csv_text(rows=["nan,2,0"] + GOOD_ROWS),
        "inf feature.csv": csv_text(rows=["1,inf,0"] + GOOD_ROWS),
        "minus inf feature.csv": csv_text(rows=["1,-inf,1"] + GOOD_ROWS),
        "nan label.csv": csv_text(rows=["1,2,nan"] + GOOD_ROWS),
        "inf label.csv": csv_text(rows=["1,2,inf"] + GOOD_ROWS),
        "empty.csv": b"",
        "blank lines only.csv": "\n\n \n",
        "header only.csv": csv_text(),
        "one row.csv": csv_text(rows=["1,2,0"]),
        "nine rows.csv": csv_text(rows=GOOD_ROWS[:9]),
        "one class.csv": csv_text(rows=[f"{i},{i},3" for i in range(30)]),
        "one example of a class.csv": csv_text(rows=GOOD_ROWS + ["1,1,7"]),
        "float label.csv": csv_text(rows=["1,2,0.5"] + GOOD_ROWS),
        "label 1e30.csv": csv_text(rows=["1,2,1e30", "1,2,2e30"] + GOOD_ROWS),
        "label -1e300.csv": csv_text(rows=["1,2,-1e300"] + GOOD_ROWS),
        "empty cell.csv": csv_text(rows=["1,,0"] + GOOD_ROWS),
        "ragged row.csv": csv_text(rows=["1,2,0,9"] + GOOD_ROWS),
        "short row.csv": csv_text(rows=["1,0"] + GOOD_ROWS),
        "no header.csv": csv_text(header="1,2,0", rows=GOOD_ROWS),
        "duplicate columns.csv": csv_text(header="x,x,label", rows=GOOD_ROWS),
        "empty column name.csv": csv_text(header="x1,,label", rows=GOOD_ROWS),
        "one column.csv": csv_text(header="label", rows=["0", "1"] * 10),
        "two label columns.csv": csv_text(header="label,Label,x", rows=GOOD_ROWS),
        "latin-1.csv": b"x1,x2,label\n" + "é,1,0\n".encode("latin-1"),
        "binary.csv": bytes(range(256)) * 20,
        "nul bytes.csv": b"x1,x2,label\n1,\x002,0\n" * 20,
        "a giant cell.csv": csv_text(rows=["1" * 1_000_000 + ",1,0"] + GOOD_ROWS),
        "unclosed quote.csv": csv_text(rows=['"1,2,0'] + GOOD_ROWS),
        "data.txt": csv_text(rows=GOOD_ROWS),
        "no extension": csv_text(rows=GOOD_ROWS),
        "data.csv.exe": csv_text(rows=GOOD_ROWS),
        "pickle.csv": pickle.dumps(Payload(marker)),
    }


def bad_npz_files(marker: Path) -> dict[str, bytes]:
    X, y = np.random.default_rng(0).normal(size=(30, 3)), np.arange(30) % 3
    bomb = io.BytesIO()  # 16 MB of zeros, a few kB on disk
    np.savez_compressed(bomb, X=np.zeros((2000, 1000)), y=np.zeros(2000, np.int64))
    return {
        "not a zip.npz": b"hello, world" * 10,
        "pickled X.npz": npz_bytes(X=np.array([Payload(marker)], dtype=object), y=y),
        "pickled y.npz": npz_bytes(X=X, y=np.array([Payload(marker)] * 30, dtype=object)),
        "a raw pickle.npz": pickle.dumps({"X": X, "y": y, "evil": Payload(marker)}),
        "X 1-D.npz": npz_bytes(X=X[:, 0], y=y),
        "y 2-D.npz": npz_bytes(X=X, y=y[:, None]),
        "length mismatch.npz": npz_bytes(X=X, y=y[:-1]),
        "no y.npz": npz_bytes(X=X),
        "no X.npz": npz_bytes(features=X, y=y),
        "complex X.npz": npz_bytes(X=X.astype(complex), y=y),
        "string X.npz": npz_bytes(X=X.astype(str), y=y),
        "float y.npz": npz_bytes(X=X, y=y + 0.5),
        "huge uint64 y.npz": npz_bytes(X=X, y=np.where(y == 0, 2**64 - 1, y).astype(np.uint64)),
        "nan X.npz": npz_bytes(X=np.where(X > 1.5, np.nan, X), y=y),
        "inf X.npz": npz_bytes(X=np.where(X > 1.5, np.inf, X), y=y),
        "no rows.npz": npz_bytes(X=np.zeros((0, 3)), y=np.zeros(0, np.int64)),
        "no columns.npz": npz_bytes(X=np.zeros((30, 0)), y=y),
        "one class.npz": npz_bytes(X=X, y=np.zeros(30, np.int64)),
        "a bare npy.npz": b"\x93NUMPY" + npz_bytes(X=X)[6:],
        "expands past the limit.npz": bomb.getvalue(),
    }


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A run that keeps training while bad files are uploaded next to it."""
    checkpoint_dir = tmp_path_factory.mktemp("running")
    trainer = Trainer(RunConfig(**SMALL, checkpoint_every=50), checkpoint_dir, run_id="live")
    trainer.update(speed_limit=200)
    trainer.start()
    yield checkpoint_dir, trainer
    trainer.stop()


def check_untouched(checkpoint_dir: Path, trainer: Trainer, step_before: int) -> int:
    deadline = time.monotonic() + 10
    while (snap := trainer.snapshot()).step <= step_before:
        assert time.monotonic() < deadline, "the running run stopped training"
        time.sleep(0.01)
    assert snap.status == "running" and snap.error is None
    assert sorted(p.name for p in checkpoint_dir.iterdir()) == ["live"]
    return snap.step


def test_bad_data_files_get_a_clear_message_and_the_running_run_is_untouched(running, tmp_path):
    checkpoint_dir, trainer = running
    marker = tmp_path / "pickle-ran-code"
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    step = trainer.snapshot().step
    cases = {**bad_csv_files(marker), **bad_npz_files(marker)}
    for name, content in cases.items():
        path = uploads / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        limit = {"max_bytes": 1_000_000} if "limit" in name else {}
        started = time.monotonic()
        messages = [refused("data files", load_file, path, **limit),
                    refused("data files", prepare_dataset, str(path), **limit),
                    refused("data files", Trainer,
                            RunConfig(**{**SMALL, "dataset": str(path), "dataset_params": limit}),
                            checkpoint_dir)]
        assert time.monotonic() - started < 20, f"{name}: took too long"
        for message in messages:
            assert Path(name).name in message or "unknown file type" in message \
                or "must be .csv or .npz" in message or "unknown dataset" in message, message
        step = check_untouched(checkpoint_dir, trainer, step)
    assert not marker.exists(), "a pickled payload was executed"


def test_a_file_larger_than_the_limit_is_refused_before_it_is_read(running, tmp_path):
    checkpoint_dir, trainer = running
    path = tmp_path / "big.csv"
    path.write_text(csv_text(rows=GOOD_ROWS * 100))
    limit = path.stat().st_size - 1
    step = trainer.snapshot().step
    for call, args in [(load_file, (path,)), (prepare_dataset, (str(path),))]:
        message = refused("data files", call, *args, max_bytes=limit)
        assert "limit" in message and "big.csv" in message
    config = RunConfig(**{**SMALL, "dataset": str(path), "dataset_params": {"max_bytes": limit}})
    assert "limit" in refused("data files", Trainer, config, checkpoint_dir)
    check_untouched(checkpoint_dir, trainer, step)
    assert load_file(path, max_bytes=limit + 1)[0].shape == (3000, 2)


def test_odd_but_valid_data_files_work(running, tmp_path):
    """Negative or sparse labels are remapped to 0..C-1 (class_names keep the originals);
    10^5 columns load in bounded time."""
    checkpoint_dir, trainer = running
    step = trainer.snapshot().step
    negative = tmp_path / "negative.csv"
    negative.write_text(csv_text(rows=[f"{i},{i % 3},{-1 if i % 2 else 1}" for i in range(30)]))
    sparse = tmp_path / "sparse.npz"
    sparse.write_bytes(npz_bytes(X=np.arange(60.0).reshape(30, 2), y=np.array([0, 5, 900] * 10)))
    for path, names in [(negative, ("-1", "1")), (sparse, ("0", "5", "900"))]:
        TALLY["data files"] += 1
        data = prepare_dataset(str(path))
        assert data.class_names == names and set(data.y_train) == set(range(len(names)))
    wide = tmp_path / "wide.csv"
    columns = 100_000
    rng = np.random.default_rng(0)
    with open(wide, "w") as f:
        f.write(",".join(f"c{i}" for i in range(columns)) + ",label\n")
        for row in range(20):
            f.write(",".join(f"{v:.2f}" for v in rng.random(columns)) + f",{row % 2}\n")
    TALLY["data files"] += 1
    started = time.monotonic()
    data = prepare_dataset(str(wide))
    seconds = time.monotonic() - started
    assert data.n_features == columns and seconds < 20, seconds
    check_untouched(checkpoint_dir, trainer, step)
    report("10^5 columns", load_seconds=round(seconds, 2))


def test_a_zip_with_many_members_or_odd_names_is_refused(running, tmp_path):
    """Zip members named like paths are never extracted: numpy reads them in memory."""
    checkpoint_dir, trainer = running
    step = trainer.snapshot().step
    path = tmp_path / "slip.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("../../escaped.npy", b"\x93NUMPY")
        archive.writestr("/abs.npy", b"\x93NUMPY")
    for call, args in [(load_file, (path,)), (prepare_dataset, (str(path),))]:
        refused("data files", call, *args)
    assert not (tmp_path.parent / "escaped.npy").exists() and not Path("/abs.npy").exists()
    check_untouched(checkpoint_dir, trainer, step)
