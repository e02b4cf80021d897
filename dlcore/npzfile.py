"""NPZ archives: ``X``/``y`` as written by ``numpy.savez(path, X=X, y=y)``, or Keras' layout.

Keras' ``mnist.npz`` holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` with images
``(m, 28, 28)`` uint8; its test split becomes the dev set as given. In both layouts the first
axis indexes examples and the others are flattened into features, without a copy.

Nothing is allocated on a header's word: every member's .npy header (shape, dtype) is read
first and checked against the bytes the archive really holds for it and against the memory
there is. Arrays are read with ``allow_pickle=False``: object arrays are refused and nothing
is ever unpickled.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlcore import memory
from dlcore.tables import Part, RawFile, first_non_finite, non_finite_message

KERAS_NAMES = ("x_train", "y_train", "x_test", "y_test")
LABEL_BYTES = 8  # the int64 class id each label becomes


@dataclass(frozen=True)
class Member:
    """One .npy array in the archive, known from its header alone."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def read_npz(path: Path, max_bytes: int | None, check_memory) -> RawFile:
    """An .npz file -> RawFile; X parts keep their stored dtype, shape (m, n_features)."""
    name = path.name
    with open(path, "rb") as file:
        if file.read(2) != b"PK":
            raise ValueError(
                f"{name}: not an .npz archive (expected a zip of .npy arrays, "
                "as written by numpy.savez)"
            )
    try:
        with zipfile.ZipFile(path) as archive:
            return _read_archive(archive, name, max_bytes, check_memory)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise ValueError(f"{name}: damaged .npz archive ({error})") from None


def _read_archive(archive: zipfile.ZipFile, name, max_bytes, check_memory) -> RawFile:
    infos = {}
    for info in archive.infolist():  # numpy's keys: "X.npy" is X
        infos.setdefault(info.filename.removesuffix(".npy"), info)
    expanded = sum(info.file_size for info in infos.values())
    if max_bytes is not None and expanded > max_bytes:
        raise ValueError(
            f"{name}: its arrays take {memory.format_size(expanded)} uncompressed, "
            f"more than the {memory.format_size(max_bytes)} limit"
        )
    # 1) Which layout, and which members it needs.
    keras = not ({"X", "y"} & set(infos)) and {"x_train", "y_train"} <= set(infos)
    if keras:
        test = [key for key in ("x_test", "y_test") if key in infos]
        if len(test) == 1:
            other = ({"x_test", "y_test"} - set(test)).pop()
            raise ValueError(f"{name}: has {test[0]!r} but no {other!r}; save both or neither")
        groups = [("x_train", "y_train")] + ([("x_test", "y_test")] if test else [])
    else:
        for key in ("X", "y"):
            if key not in infos:
                found = ", ".join(repr(k) for k in infos) or "none"
                raise ValueError(
                    f"{name}: no array named {key!r} (found: {found}); save with "
                    "numpy.savez(path, X=X, y=y), or with Keras' names x_train, y_train, "
                    "x_test, y_test"
                )
        groups = [("X", "y")]
    # 2) Every header checked before any array is read.
    members = {}
    for features, labels in groups:
        members[features] = _header(archive, infos[features], name, "features")
        members[labels] = _header(archive, infos[labels], name, "labels")
        _check_shapes(members[features], members[labels], name)
    if keras and len(groups) == 2 and members["x_test"].shape[1:] != members["x_train"].shape[1:]:
        raise ValueError(
            f"{name}: x_test holds examples of shape {members['x_test'].shape[1:]}, x_train "
            f"of shape {members['x_train'].shape[1:]}; they must be the same"
        )
    _require_memory(members, groups, name, check_memory)
    # 3) Read, flatten, check.
    parts = [_read_part(archive, members[f], members[lab], name) for f, lab in groups]
    return RawFile(
        name=name,
        train=parts[0],
        dev=parts[1] if len(parts) == 2 else None,
        feature_shape=members[groups[0][0]].shape[1:],
    )


def _header(archive, info: zipfile.ZipInfo, name: str, role: str) -> Member:
    key = info.filename.removesuffix(".npy")
    with archive.open(info) as file:
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(file)
            else:
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
        except (ValueError, EOFError) as error:
            # E.g. a raw pickle stored under X.npy: never handed to a reader that would load it.
            raise ValueError(
                f"{name}: {key!r} is not a numpy array in .npy format ({error})"
            ) from None
        header_bytes = file.tell()
    if dtype.hasobject:
        raise ValueError(
            f"{name}: array {key!r} cannot be loaded: it holds Python objects (pickled data), "
            "and pickles are never loaded; save plain numeric arrays"
        )
    allowed, wanted = ("biuf", "real numbers") if role == "features" else ("biufU", "numbers, str")
    if dtype.kind not in allowed:
        raise ValueError(f"{name}: {key} has dtype {dtype}; it must hold {wanted}")
    member = Member(key, info, tuple(shape), dtype, fortran_order)
    held = info.file_size - header_bytes
    if member.nbytes > held:
        raise ValueError(
            f"{name}: {key!r} is damaged: its header claims shape {member.shape} {dtype} "
            f"({memory.format_size(member.nbytes)}), but the archive holds "
            f"{memory.format_size(max(held, 0))} for it"
        )
    return member


def _check_shapes(features: Member, labels: Member, name: str) -> None:
    X, y = features.key, labels.key
    if len(features.shape) < 2:
        raise ValueError(
            f"{name}: {X} must be 2-D (examples, features) or more (examples, height, width, "
            f"...), got shape {features.shape}"
        )
    if len(labels.shape) != 1:
        raise ValueError(f"{name}: {y} must be 1-D (examples,), got shape {labels.shape}")
    if features.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name}: {X} has {features.shape[0]} rows but {y} has {labels.shape[0]} labels"
        )
    if math.prod(features.shape[1:]) == 0:
        raise ValueError(f"{name}: {X} has no feature columns (shape {features.shape})")


def _require_memory(members: dict, groups, name: str, check_memory) -> None:
    held, values = 0, 0
    for features, labels in groups:
        X, y = members[features], members[labels]
        flatten_copy = X.nbytes if X.fortran_order and len(X.shape) > 2 else 0
        held += X.nbytes + flatten_copy + y.nbytes + X.shape[0] * LABEL_BYTES
        values += math.prod(X.shape)
    X = members[groups[0][0]]
    check_memory(
        name,
        held,
        values,
        f"{sum(members[f].shape[0] for f, _ in groups):,} examples × "
        f"{math.prod(X.shape[1:]):,} features as {X.dtype}, plus the copy that training uses",
    )


def _read_part(archive, features: Member, labels: Member, name: str) -> Part:
    X = _read_array(archive, features, name)
    y = _read_array(archive, labels, name)
    example_shape = features.shape[1:]
    X = X.reshape(len(X), math.prod(example_shape))  # a view for C order, as np.save writes

    def cell(i: int, j: int) -> str:
        index = (i, *np.unravel_index(j, example_shape))
        return f"{features.key}[{', '.join(str(int(k)) for k in index)}]"

    bad = first_non_finite(X)
    if bad is not None:
        raise ValueError(non_finite_message(name, cell(*bad), X[bad]))
    return Part(X=X, labels=y, cell=cell, label_place=lambda i: f"{labels.key}[{i}]")


def _read_array(archive, member: Member, name: str) -> np.ndarray:
    try:
        with archive.open(member.info) as file:
            return np.lib.format.read_array(file, allow_pickle=False)
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, OSError) as error:
        raise ValueError(f"{name}: {member.key!r} cannot be read: damaged ({error})") from None
