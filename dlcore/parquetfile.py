"""Parquet files, through pyarrow: typed columns, one example per row.

The label column is chosen as in a CSV (named label, class or y, else the last). Feature
columns must be integers, floats or booleans; the label column may also hold strings.
Rows are counted from 1 in messages (a Parquet file has no header row).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlcore import memory
from dlcore.tables import (
    Part,
    RawFile,
    check_column_names,
    first_non_finite,
    non_finite_message,
    scratch_array,
)

BATCH_ROWS = 65536
LABEL_BYTES = 64  # a label, if it is a str, per row, for the memory estimate


def read_parquet(path: Path, max_bytes: int | None, check_memory) -> RawFile:
    """A .parquet file -> RawFile with X: (m, n_features) float32 or float64 (Fortran order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = path.name
    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{name}: not a Parquet file, or a damaged one ({error})") from None
    schema = file.schema_arrow
    names = [column.strip() for column in schema.names]
    label = check_column_names(names, name)
    features = [j for j in range(len(names)) if j != label]
    for j in features:
        if not _is_number_type(schema.field(j).type):
            raise ValueError(
                f"{name}: column {names[j]!r} holds {schema.field(j).type} values; every "
                "feature column must hold numbers"
            )
    label_type = schema.field(label).type
    if not (_is_number_type(label_type) or _is_text_type(label_type)):
        raise ValueError(
            f"{name}: the label column {names[label]!r} holds {label_type} values; "
            "labels must be integers or names"
        )
    metadata = file.metadata
    rows = metadata.num_rows
    expanded = sum(metadata.row_group(g).total_byte_size for g in range(metadata.num_row_groups))
    if max_bytes is not None and expanded > max_bytes:
        raise ValueError(
            f"{name}: its columns take {memory.format_size(expanded)} uncompressed, "
            f"more than the {memory.format_size(max_bytes)} limit"
        )
    dtype = np.result_type(
        np.float32, *(schema.field(j).type.to_pandas_dtype() for j in features)
    )
    check_memory(
        name,
        rows * (len(features) * dtype.itemsize + LABEL_BYTES),
        rows * len(features),
        f"{rows:,} rows × {len(features):,} features as {dtype}, plus the copy that training "
        "uses",
    )
    X = scratch_array((rows, len(features)), order="F", dtype=dtype)
    labels = []
    done = 0
    try:
        for batch in file.iter_batches(batch_size=BATCH_ROWS, use_threads=False):
            for column, j in enumerate(features):
                values = batch.column(j)
                _refuse_nulls(values, done, name, names[j])
                X[done : done + len(batch), column] = values.to_numpy(zero_copy_only=False)
            values = batch.column(label)
            _refuse_nulls(values, done, name, names[label])
            if pa.types.is_dictionary(values.type):
                values = values.dictionary_decode()
            labels.append(values.to_numpy(zero_copy_only=False))
            done += len(batch)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f"{name}: damaged Parquet file ({error})") from None
    feature_names = [names[j] for j in features]

    def cell(i: int, j: int) -> str:
        return f"row {i + 1}, column {feature_names[j]!r}"

    bad = first_non_finite(X)
    if bad is not None:
        raise ValueError(non_finite_message(name, cell(*bad), X[bad]))
    labels = np.concatenate(labels) if labels else np.array([], dtype=np.int64)
    if labels.dtype == object:
        labels = labels.astype(str)
    part = Part(
        X=X[:done],
        labels=labels,
        cell=cell,
        label_place=lambda i: f"row {i + 1}, column {names[label]!r}",
    )
    return RawFile(name=name, train=part, dev=None, feature_shape=(len(features),))


def _is_number_type(arrow_type) -> bool:
    import pyarrow as pa

    return (
        pa.types.is_integer(arrow_type)
        or pa.types.is_floating(arrow_type)
        or pa.types.is_boolean(arrow_type)
    )


def _is_text_type(arrow_type) -> bool:
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)


def _refuse_nulls(values, done: int, name: str, column: str) -> None:
    if values.null_count:
        first = int(np.argmax(values.is_null().to_numpy(zero_copy_only=False)))
        raise ValueError(f"{name}: row {done + first + 1}, column {column!r} is empty (null)")
