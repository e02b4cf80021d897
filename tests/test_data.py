"""Tests for dlcore.data: datasets, user files, the stratified split, standardization, batches."""

import io
import json
import pickle
import zipfile

import numpy as np
import pytest

from dlcore.data import (
    MIN_EXAMPLES,
    Dataset,
    MiniBatchIterator,
    Standardizer,
    load_digits,
    load_file,
    make_blobs,
    make_spirals,
    prepare_dataset,
    train_dev_split,
)

# ---------------------------------------------------------------------------------------------
# Built-in datasets
# ---------------------------------------------------------------------------------------------


def test_digits_shapes_and_dtypes():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(10))


@pytest.mark.parametrize("make", [make_spirals, make_blobs])
@pytest.mark.parametrize("n_samples, n_classes", [(600, 3), (101, 4), (7, 2)])
def test_generators_sizes_and_class_balance(make, n_samples, n_classes):
    X, y = make(n_samples=n_samples, n_classes=n_classes)
    assert X.shape == (n_samples, 2) and X.dtype == np.float64
    assert y.shape == (n_samples,) and y.dtype == np.int64
    counts = np.bincount(y)
    assert len(counts) == n_classes and counts.max() - counts.min() <= 1
    assert np.isfinite(X).all()


@pytest.mark.parametrize("make", [make_spirals, make_blobs])
def test_generators_are_seeded(make):
    X1, y1 = make(seed=3)
    X2, y2 = make(seed=3)
    X3, _ = make(seed=4)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_spirals_have_two_features_and_unit_radius():
    X, _ = make_spirals(n_samples=300, n_classes=5, noise=0.0, turns=2.0)
    assert X.shape == (300, 2)
    radius = np.linalg.norm(X, axis=1)
    assert radius.max() == pytest.approx(1.0) and radius.min() > 0


def test_blobs_any_dimension_and_spread():
    X, y = make_blobs(n_samples=500, n_classes=5, n_features=7, spread=0.5, seed=1)
    assert X.shape == (500, 7)
    within_class_std = np.mean([X[y == label].std(axis=0).mean() for label in range(5)])
    assert within_class_std == pytest.approx(0.5, rel=0.2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_classes": 1}, "n_classes"),
        ({"n_samples": 2, "n_classes": 3}, "at least n_classes"),
        ({"noise": -1.0}, "noise"),
        ({"turns": 0.0}, "turns"),
    ],
)
def test_spirals_reject_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_spirals(**kwargs)


# ---------------------------------------------------------------------------------------------
# Split and standardization
# ---------------------------------------------------------------------------------------------


def _labelled_rows(counts):
    y = np.repeat(np.arange(len(counts)), counts).astype(np.int64)
    X = np.arange(len(y), dtype=np.float64)[:, None] * np.ones((1, 3))  # row i holds i
    return X, y


def test_split_is_stratified_per_class():
    X, y = _labelled_rows([100, 50, 10, 3, 2])
    X_train, y_train, X_dev, y_dev = train_dev_split(X, y, dev_fraction=0.2, seed=0)
    assert list(np.bincount(y_dev)) == [20, 10, 2, 1, 1]  # round(0.2·count), at least 1
    assert list(np.bincount(y_train)) == [80, 40, 8, 2, 1]


def test_split_keeps_one_training_example_per_class():
    X, y = _labelled_rows([2, 2, 1, 10])
    _, y_train, _, y_dev = train_dev_split(X, y, dev_fraction=0.9, seed=0)
    assert list(np.bincount(y_train)) == [1, 1, 1, 1]
    assert list(np.bincount(y_dev, minlength=4)) == [1, 1, 0, 9]


def test_split_is_deterministic_disjoint_and_complete():
    X, y = _labelled_rows([40, 30, 30])
    first = train_dev_split(X, y, seed=5)
    second = train_dev_split(X, y, seed=5)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
    X_train, y_train, X_dev, y_dev = first
    train_rows, dev_rows = X_train[:, 0].astype(int), X_dev[:, 0].astype(int)
    assert not set(train_rows) & set(dev_rows)
    assert sorted(np.concatenate([train_rows, dev_rows])) == list(range(100))
    np.testing.assert_array_equal(y_train, y[train_rows])  # rows and labels stay together
    np.testing.assert_array_equal(y_dev, y[dev_rows])
    other_seed = train_dev_split(X, y, seed=6)[2]
    assert not np.array_equal(other_seed, X_dev)


@pytest.mark.parametrize("dev_fraction", [0.0, 1.0, -0.1, float("nan")])
def test_split_rejects_bad_dev_fraction(dev_fraction):
    X, y = _labelled_rows([10, 10])
    with pytest.raises(ValueError, match="dev_fraction"):
        train_dev_split(X, y, dev_fraction=dev_fraction)


def test_standardizer_constant_column_and_training_stats():
    X_train = np.array([[1.0, 5.0, 0.1], [3.0, 5.0, 0.1], [5.0, 5.0, 0.1]])
    standardizer = Standardizer().fit(X_train)
    np.testing.assert_allclose(standardizer.mean, [3.0, 5.0, 0.1])
    # A constant column's std is max(1, |value|): z-scores 0 in training, and a dev value is
    # measured against the column's magnitude.
    np.testing.assert_allclose(standardizer.std, [np.std([1.0, 3.0, 5.0]), 5.0, 1.0])
    Z = standardizer.transform(X_train)
    assert np.isfinite(Z).all()
    np.testing.assert_allclose(Z[:, 1:], 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), [1.0, 0.0, 0.0], atol=1e-12)
    assert standardizer.transform(X_train.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="expected shape"):
        standardizer.transform(np.ones((2, 4)))


def test_prepare_dataset_standardizes_with_training_statistics_only():
    dataset = prepare_dataset("blobs", seed=2, n_samples=300, n_features=4)
    X, y = make_blobs(n_samples=300, n_features=4, seed=2)
    X_train, _, X_dev, _ = train_dev_split(X, y, seed=2)
    np.testing.assert_allclose(dataset.feature_mean, X_train.mean(axis=0))
    np.testing.assert_allclose(dataset.feature_std, X_train.std(axis=0))
    np.testing.assert_allclose(dataset.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(dataset.X_train.std(axis=0), 1.0)
    np.testing.assert_allclose(dataset.X_dev, (X_dev - X_train.mean(0)) / X_train.std(0))
    assert np.abs(dataset.X_dev.mean(axis=0)).min() > 1e-6  # not the dev set's own mean


def test_prepare_dataset_digits():
    dataset = prepare_dataset("digits")
    assert isinstance(dataset, Dataset)
    assert dataset.name == "digits"
    assert dataset.n_features == 64 and dataset.n_classes == 10
    assert dataset.class_names == tuple(str(label) for label in range(10))
    assert len(dataset.X_train) + len(dataset.X_dev) == 1797
    assert len(dataset.X_dev) == pytest.approx(0.2 * 1797, abs=10)
    assert np.isfinite(dataset.X_train).all()  # digits has constant (always 0) pixels
    assert dataset.y_train.dtype == np.int64 and dataset.y_dev.dtype == np.int64


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_prepare_dataset_dtype_and_layout(dtype):
    dataset = prepare_dataset("spirals", dtype=dtype, n_samples=200)
    for X in (dataset.X_train, dataset.X_dev):
        assert X.dtype == np.dtype(dtype) and X.flags.c_contiguous
        assert not X.flags.writeable
    assert dataset.y_train.dtype == np.int64
    assert dataset.n_features == 2 and dataset.n_classes == 3


@pytest.mark.parametrize(
    "source, kwargs, match",
    [
        ("cifar10", {}, "unknown dataset 'cifar10'"),
        ("data.txt", {}, "unknown dataset"),
        ("digits", {"n_samples": 5}, "unknown option"),
        ("spirals", {"n_sample": 5}, "unknown option.*n_sample"),
        ("spirals", {"n_samples": 5}, "only 5 examples"),
    ],
)
def test_prepare_dataset_rejects_bad_sources(source, kwargs, match):
    with pytest.raises(ValueError, match=match):
        prepare_dataset(source, **kwargs)


def test_prepare_dataset_rejects_bad_dtype():
    with pytest.raises(ValueError, match="float32"):
        prepare_dataset("spirals", dtype="float16")


# ---------------------------------------------------------------------------------------------
# User files: happy paths
# ---------------------------------------------------------------------------------------------


def _write_csv(path, header, rows):
    lines = [",".join(header)] + [",".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _grid_rows(n=12, labels=(0, 1)):
    """n rows of two features (i, 2i) and a label cycling through labels."""
    return [[i, 2 * i, labels[i % len(labels)]] for i in range(n)]


def test_csv_label_column_by_name(tmp_path):
    rows = [[label, i, 2 * i] for i, _, label in _grid_rows()]
    path = _write_csv(tmp_path / "named.csv", ["Class", "x1", "x2"], rows)
    X, y = load_file(path)
    assert X.shape == (12, 2) and X.dtype == np.float64 and y.dtype == np.int64
    np.testing.assert_array_equal(X[:, 0], np.arange(12))
    np.testing.assert_array_equal(y, np.arange(12) % 2)


def test_csv_label_defaults_to_last_column(tmp_path):
    path = _write_csv(tmp_path / "last.csv", ["a", "b", "target"], _grid_rows())
    X, y = load_file(path)
    np.testing.assert_array_equal(X, [[i, 2 * i] for i in range(12)])
    np.testing.assert_array_equal(y, np.arange(12) % 2)


def test_csv_label_beats_class_beats_y(tmp_path):
    rows = [[i % 2, i, i % 3] for i in range(12)]
    _, y = load_file(_write_csv(tmp_path / "all.csv", ["label", "y", "class"], rows))
    np.testing.assert_array_equal(y, np.arange(12) % 2)


def test_csv_label_beats_y_and_x_y_class_keeps_y_as_feature(tmp_path):
    rows = [[i, 2 * i, i % 2] for i in range(12)]
    X, y = load_file(_write_csv(tmp_path / "xy.csv", ["x", "y", "class"], rows))
    np.testing.assert_array_equal(X[:, 1], 2 * np.arange(12))
    rows = [[i % 2, i, 2 * i] for i in range(12)]
    X, y = load_file(_write_csv(tmp_path / "ly.csv", ["LABEL", "y", "z"], rows))
    np.testing.assert_array_equal(y, np.arange(12) % 2)


def test_labels_are_remapped_in_sorted_order_and_recorded(tmp_path):
    rows = _grid_rows(labels=(10, -1, 3.0))
    path = _write_csv(tmp_path / "remap.csv", ["x1", "x2", "label"], rows)
    _, y = load_file(path)
    np.testing.assert_array_equal(y[:3], [2, 0, 1])  # -1 -> 0, 3 -> 1, 10 -> 2
    dataset = prepare_dataset(path)
    assert dataset.class_names == ("-1", "3", "10")
    assert dataset.n_classes == 3 and dataset.name == "remap.csv"


def test_csv_tolerates_bom_spaces_crlf_and_blank_lines(tmp_path):
    text = "\ufeff x1 , x2 ,label\r\n" + "".join(f" {i} , {i}.5 ,{i % 2}\r\n" for i in range(10))
    path = tmp_path / "excel.csv"
    path.write_text(text + "\r\n\r\n", newline="")
    X, y = load_file(path)
    assert X.shape == (10, 2)
    np.testing.assert_array_equal(X[:, 1], np.arange(10) + 0.5)


def test_npz_happy_path(tmp_path):
    X = np.arange(40, dtype=np.float32).reshape(20, 2)
    y = np.array([5, 7] * 10, dtype=np.int32)
    path = tmp_path / "data.npz"
    np.savez_compressed(path, X=X, y=y, extra=np.zeros(3))
    X_loaded, y_loaded = load_file(path)
    assert X_loaded.dtype == np.float64 and y_loaded.dtype == np.int64
    np.testing.assert_array_equal(X_loaded, X)
    np.testing.assert_array_equal(y_loaded, [0, 1] * 10)
    assert prepare_dataset(path, dtype="float32").class_names == ("5", "7")


def test_npz_float_labels_accepted_when_integral(tmp_path):
    path = tmp_path / "floaty.npz"
    np.savez(path, X=np.ones((10, 1)), y=np.array([0.0, 1.0] * 5))
    _, y = load_file(path)
    np.testing.assert_array_equal(y, [0, 1] * 5)


# ---------------------------------------------------------------------------------------------
# User files: every malformed case
# ---------------------------------------------------------------------------------------------


def _bad_csv(tmp_path, text, name="bad.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows_text(n=12, start=0):
    return "".join(f"{i},{2 * i},{i % 2}\n" for i in range(start, start + n))


@pytest.mark.parametrize(
    "text, match",
    [
        # The header is row 1, so data row i (from 0) is row i + 2.
        (
            "x1,x2,label\n" + _rows_text(5) + "5,abc,1\n" + _rows_text(6, 6),
            r"row 7, column 'x2': 'abc' is not a number",
        ),
        (
            "x1,x3,label\n" + _rows_text(3) + "3,,1\n" + _rows_text(8, 4),
            r"row 5, column 'x3' is empty",
        ),
        (
            "x1,x2,label\n" + _rows_text(2) + "2,nan,0\n" + _rows_text(9, 3),
            r"row 4, column 'x2': nan is not a finite number",
        ),
        (
            "x1,x2,label\n" + _rows_text(2) + "-inf,4,0\n" + _rows_text(9, 3),
            r"row 4, column 'x1': -inf is not a finite",
        ),
        (
            "x1,x2,label\n" + _rows_text(8) + "8,16,0.5\n" + _rows_text(3, 9),
            r"row 10, column 'label': 0.5 is not an integer class label",
        ),
        (
            "x1,x2,label\n" + _rows_text(8) + "8,16,cat\n" + _rows_text(3, 9),
            r"row 10, column 'label': 'cat' is not an integer class label",
        ),
        (
            "x1,x2,label\n" + _rows_text(3) + "3,6\n" + _rows_text(8, 4),
            r"row 5 has 2 cells but the header has 3 columns",
        ),
        ("x1,x2,label\n" + "".join(f"{i},{i},7\n" for i in range(12)), "single class"),
        (
            "x1,x2,label\n" + _rows_text(MIN_EXAMPLES - 1),
            f"only {MIN_EXAMPLES - 1} examples; at least {MIN_EXAMPLES}",
        ),
        ("x1,x2,label\n", "only 0 examples"),
        ("x1,x2,label\n" + _rows_text(12) + "0,0,2\n", "class 2 has only 1 example"),
        ("1,2,0\n" + _rows_text(12), "missing header"),
        ("\n\n\n", "empty"),
        ("x1,,label\n" + _rows_text(12), "header column 2 has no name"),
        ("x,x,label\n" + _rows_text(12), "'x' more than once"),
        ("Label,label,x\n" + _rows_text(12), "could each be the label column"),
        ("label\n" + "".join(f"{i % 2}\n" for i in range(12)), "need at least one feature"),
    ],
)
def test_malformed_csv_is_rejected_with_place_and_reason(tmp_path, text, match):
    path = _bad_csv(tmp_path, text)
    with pytest.raises(ValueError, match=match) as raised:
        load_file(path)
    assert "bad.csv" in str(raised.value)


def test_empty_file(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        load_file(_bad_csv(tmp_path, ""))


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("x1,x2,läbel\n".encode("latin-1") + _rows_text().encode())
    with pytest.raises(ValueError, match="not UTF-8"):
        load_file(path)


def test_unknown_extension_and_missing_file(tmp_path):
    path = _bad_csv(tmp_path, "x1,label\n" + _rows_text(), name="data.txt")
    with pytest.raises(ValueError, match=r"unknown file type '\.txt'.*\.tsv, \.parquet or \.npz"):
        load_file(path)
    with pytest.raises(ValueError, match="no such file"):
        load_file(tmp_path / "nowhere.csv")


def test_file_larger_than_max_bytes(tmp_path):
    path = _write_csv(tmp_path / "big.csv", ["x1", "x2", "label"], _grid_rows(100))
    with pytest.raises(ValueError, match="larger than the 100 bytes limit"):
        load_file(path, max_bytes=100)
    with pytest.raises(ValueError, match="limit"):
        prepare_dataset(path, max_bytes=100)


def test_npz_expanding_beyond_max_bytes(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((20_000, 10)), y=np.zeros(20_000, dtype=int))
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match="uncompressed"):
        load_file(path, max_bytes=100_000)


def _npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


GOOD_X, GOOD_Y = np.ones((12, 2)), np.arange(12) % 2


def _with_value(values, index, value):
    changed = values.copy()
    changed[index] = value
    return changed


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"X": GOOD_X}, "no array named 'y'"),
        ({"features": GOOD_X, "y": GOOD_Y}, "no array named 'X'"),
        ({"X": np.ones(12), "y": GOOD_Y}, "X must be 2-D"),
        ({"X": GOOD_X, "y": GOOD_Y[:, None]}, "y must be 1-D"),
        ({"X": GOOD_X, "y": GOOD_Y[:11]}, "X has 12 rows but y has 11 labels"),
        ({"X": np.ones((12, 0)), "y": GOOD_Y}, "no feature columns"),
        ({"X": GOOD_X.astype(str), "y": GOOD_Y}, "dtype <U.*must hold real numbers"),
        (
            {"X": _with_value(GOOD_X, (3, 1), np.inf), "y": GOOD_Y},
            r"X\[3, 1\]: inf is not a finite number",
        ),
        (
            {"X": GOOD_X, "y": np.r_[GOOD_Y[:5], 2.5, GOOD_Y[6:]]},
            r"y\[5\]: 2.5 is not an integer class label",
        ),
        (
            {"X": GOOD_X, "y": np.r_[GOOD_Y[:5], np.nan, GOOD_Y[6:]]},
            r"y\[5\]: nan is not an integer",
        ),
        ({"X": GOOD_X, "y": np.zeros(12, dtype=int)}, "single class"),
        ({"X": GOOD_X[:5], "y": GOOD_Y[:5]}, "only 5 examples"),
    ],
)
def test_malformed_npz_is_rejected(tmp_path, arrays, match):
    with pytest.raises(ValueError, match=match):
        load_file(_npz(tmp_path, **arrays))


class _Tripwire:
    """Unpickling this writes a file: proof that pickled data was executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (_touch, (self.marker,))


def _touch(path):
    with open(path, "w") as file:
        file.write("unpickled!")
    return 0


def test_npz_with_object_array_is_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "executed"
    X = np.empty((12, 2), dtype=object)
    X[:] = _Tripwire(marker)
    path = tmp_path / "objects.npz"
    np.savez(path, X=X, y=GOOD_Y)  # numpy pickles object arrays into the archive
    with pytest.raises(ValueError, match="'X' cannot be loaded.*(pickle|[Oo]bject)"):
        load_file(path)
    assert not marker.exists()


def test_npz_member_holding_a_raw_pickle_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "raw.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", pickle.dumps(_Tripwire(marker)))
        buffer = io.BytesIO()
        np.save(buffer, GOOD_Y)
        archive.writestr("y.npy", buffer.getvalue())
    with pytest.raises(ValueError, match="'X' is not a numpy array"):
        load_file(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, match",
    [
        (pickle.dumps({"X": GOOD_X, "y": GOOD_Y}), "not an .npz archive"),
        (b"PK\x03\x04 this is not a zip at all", "damaged"),
    ],
)
def test_npz_that_is_not_a_zip(tmp_path, payload, match):
    path = tmp_path / "fake.npz"
    path.write_bytes(payload)
    with pytest.raises(ValueError, match=match):
        load_file(path)


# ---------------------------------------------------------------------------------------------
# MiniBatchIterator
# ---------------------------------------------------------------------------------------------


def _draw(iterator, n_batches):
    return [iterator.next_batch() for _ in range(n_batches)]


def test_batches_have_batch_size_and_an_epoch_covers_distinct_examples():
    iterator = MiniBatchIterator(n_examples=103, batch_size=10, seed=0)
    assert iterator.batches_per_epoch == 10
    epoch_batches = _draw(iterator, 10)
    assert all(b.shape == (10,) and b.dtype == np.int64 for b in epoch_batches)
    seen = np.concatenate(epoch_batches)
    assert len(set(seen.tolist())) == 100 and seen.min() >= 0 and seen.max() < 103
    assert iterator.epoch == 1 and iterator.position == 0
    assert not np.array_equal(np.sort(seen), seen)  # permutation order, not sorted


def test_epochs_counted_and_permutations_differ():
    iterator = MiniBatchIterator(n_examples=20, batch_size=5, seed=1)
    epochs = [np.concatenate(_draw(iterator, 4)) for _ in range(3)]
    assert iterator.epoch == 3
    assert all(sorted(e.tolist()) == list(range(20)) for e in epochs)
    assert not np.array_equal(epochs[0], epochs[1])
    assert not np.array_equal(epochs[1], epochs[2])


def test_same_seed_same_batches_and_tail_is_dropped():
    a, b = MiniBatchIterator(10, 3, seed=7), MiniBatchIterator(10, 3, seed=7)
    for batch_a, batch_b in zip(_draw(a, 20), _draw(b, 20), strict=True):
        np.testing.assert_array_equal(batch_a, batch_b)
        assert len(batch_a) == 3
    assert a.epoch == 6 and a.position == 6  # 3 batches per epoch, the 10th example dropped


def test_batch_size_at_least_n_examples_gives_the_whole_permuted_set():
    iterator = MiniBatchIterator(8, 50, seed=0)
    assert iterator.batches_per_epoch == 1
    first, second = _draw(iterator, 2)
    assert sorted(first.tolist()) == list(range(8)) and sorted(second.tolist()) == list(range(8))
    assert not np.array_equal(first, second)
    assert iterator.epoch == 2


def test_changing_batch_size_mid_epoch_continues_the_same_permutation():
    iterator = MiniBatchIterator(20, 4, seed=3)
    permutation = iterator.state_dict()["permutation"]
    first = iterator.next_batch()
    iterator.batch_size = 6
    assert iterator.position == 4 and iterator.batches_per_epoch == 3
    second, third = _draw(iterator, 2)
    assert len(second) == len(third) == 6
    np.testing.assert_array_equal(np.concatenate([first, second, third]), permutation[:16])
    # 4 examples are left, fewer than 6: the tail is dropped and the epoch is complete.
    assert iterator.epoch == 1 and iterator.position == 0
    # Raising the batch size beyond the remaining tail starts a new epoch at the next batch.
    iterator.batch_size = 4
    _draw(iterator, 4)
    assert iterator.epoch == 1 and iterator.position == 16
    iterator.batch_size = 8
    assert iterator.epoch == 1 and iterator.position == 16
    assert len(iterator.next_batch()) == 8
    assert iterator.epoch == 2 and iterator.position == 8


@pytest.mark.parametrize("bad", [0, -3, 2.5, "4", None, True])
def test_batch_size_validated(bad):
    iterator = MiniBatchIterator(20, 4)
    with pytest.raises(ValueError, match="batch_size"):
        iterator.batch_size = bad
    assert iterator.batch_size == 4
    with pytest.raises(ValueError, match="batch_size"):
        MiniBatchIterator(20, bad)


def test_restore_mid_epoch_reproduces_the_batches_exactly():
    original = MiniBatchIterator(n_examples=97, batch_size=8, seed=11)
    _draw(original, 5)
    original.batch_size = 16
    _draw(original, 2)
    assert original.position not in (0, None)
    state = original.state_dict()
    state = json.loads(json.dumps({k: v for k, v in state.items() if k != "permutation"})) | {
        "permutation": state["permutation"]  # what a checkpoint stores: JSON plus one array
    }
    batches_a = _draw(original, 50)

    restored = MiniBatchIterator(n_examples=97, batch_size=3, seed=999)
    restored.load_state_dict(state)
    batches_b = _draw(restored, 50)
    for a, b in zip(batches_a, batches_b, strict=True):
        np.testing.assert_array_equal(a, b)
    assert restored.epoch == original.epoch and restored.position == original.position


def test_state_dict_is_a_deep_copy():
    iterator = MiniBatchIterator(30, 4, seed=0)
    iterator.next_batch()
    state = iterator.state_dict()
    saved = {
        k: (v.copy() if isinstance(v, np.ndarray) else json.dumps(v)) for k, v in state.items()
    }
    _draw(iterator, 20)
    iterator.batch_size = 5
    np.testing.assert_array_equal(state["permutation"], saved["permutation"])
    for key in ("epoch", "position", "batch_size", "rng_state"):
        assert json.dumps(state[key]) == saved[key]
    # Nor does mutating the saved state change a restored iterator.
    restored = MiniBatchIterator(30, 4)
    restored.load_state_dict(state)
    expected = restored.state_dict()
    state["permutation"][:] = 0
    state["rng_state"]["state"]["state"] = 1
    np.testing.assert_array_equal(restored.state_dict()["permutation"], expected["permutation"])
    assert restored.state_dict()["rng_state"] == expected["rng_state"]


def _corrupt(state, key, value):
    changed = dict(state)
    changed[key] = value
    return changed


def _valid_state():
    donor = MiniBatchIterator(12, 4, seed=5)
    _draw(donor, 4)
    return donor.state_dict()


def _rng_state_with(**changes):
    rng_state = _valid_state()["rng_state"]
    rng_state = json.loads(json.dumps(rng_state))
    for key, value in changes.items():
        if key in ("state", "inc"):
            rng_state["state"][key] = value
        else:
            rng_state[key] = value
    return rng_state


@pytest.mark.parametrize(
    "make_state, match",
    [
        (lambda s: [1, 2, 3], "must be a dict"),
        (lambda s: {k: v for k, v in s.items() if k != "epoch"}, "missing keys.*epoch"),
        (lambda s: s | {"surprise": 1}, "unexpected keys.*surprise"),
        (lambda s: _corrupt(s, "epoch", -1), "'epoch' must be an integer"),
        (lambda s: _corrupt(s, "epoch", 1.5), "'epoch' must be an integer"),
        (lambda s: _corrupt(s, "batch_size", 0), "'batch_size' must be an integer"),
        (lambda s: _corrupt(s, "position", 13), "past the end"),
        (lambda s: _corrupt(s, "position", "3"), "'position' must be an integer"),
        (lambda s: _corrupt(s, "permutation", np.arange(11)), "for 11 examples"),
        (lambda s: _corrupt(s, "permutation", np.zeros(12, int)), "not a permutation"),
        (lambda s: _corrupt(s, "permutation", np.arange(12.0)), "integer array"),
        (lambda s: _corrupt(s, "permutation", np.arange(12)[:, None]), "1-D integer"),
        (lambda s: _corrupt(s, "rng_state", "seed"), "rng_state"),
        (lambda s: _corrupt(s, "rng_state", _rng_state_with(bit_generator="MT19937")), "PCG64"),
        (lambda s: _corrupt(s, "rng_state", _rng_state_with(state=-1)), "outside"),
        (lambda s: _corrupt(s, "rng_state", _rng_state_with(inc=2**130)), "outside"),
        (lambda s: _corrupt(s, "rng_state", _rng_state_with(has_uint32=0.5)), "not an integer"),
        (lambda s: _corrupt(s, "rng_state", {"bit_generator": "PCG64"}), "rng_state"),
    ],
)
def test_invalid_state_is_rejected_without_changing_the_iterator(make_state, match):
    iterator = MiniBatchIterator(12, 3, seed=1)
    _draw(iterator, 2)
    before = iterator.state_dict()
    with pytest.raises(ValueError, match=match):
        iterator.load_state_dict(make_state(_valid_state()))
    after = iterator.state_dict()
    np.testing.assert_array_equal(after.pop("permutation"), before.pop("permutation"))
    assert after == before
