"""The files of an :class:`~exemplar_svm.ExemplarIndex`: its vectors, ids and solver statistics.

Format version 2 (written since the manifest names every file):

``index.json``
    ``{"format": "exemplar-svm-index", "version": 2, "count": n, "dim": d, "files": {...},
    "settings": {...}}``; ``files`` maps ``"vectors"``, ``"ids"`` and (when computed)
    ``"second_moment"`` to ``{"name", "bytes", "sha256"}``.
``vectors-<hash>.npy``
    The (n, d) float32 unit rows, ``.npy`` without pickles.
``ids-<hash>.json``
    The n ids, a JSON list of strings, in row order (so the checksum covers them).
``second-moment-<hash>.npy``
    The (d, d) float64 ``X^T X`` the solver seeds with, when it has been computed.

Version 1 kept the ids in the manifest, with the array entries at its top level; it is still
read (its ids are not covered by a checksum) and is replaced by version 2 on the next save.

The same files, with the same entries, make up the index part of a persisted LlamaIndex
retriever (see :mod:`exemplar_svm.llama_index`).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from exemplar_svm._checks import check_ids
from exemplar_svm._files import (
    Payload,
    content_file,
    decode_json,
    encode_json,
    file_entry,
    open_file,
    publish,
    read_all,
    read_checked,
    read_manifest,
    read_version,
    tidy,
)

FORMAT = "exemplar-svm-index"
VERSION = 2
VERSIONS = (1, 2)
MANIFEST = "index.json"
WHAT = "an exemplar-svm index"

# A stored row is a float32 unit vector: its squared length is 1 within about 1e-6.
_UNIT_TOLERANCE = 1e-3
# An .npy header (magic, version, length and the header dict) is padded to a multiple of 64
# bytes, and numpy itself refuses headers over 10,000 bytes.
_NPY_HEADER_LEAST = 64
_NPY_HEADER_MOST = 16384


@dataclass(frozen=True)
class IndexState:
    """What an index saves: its rows, ids, solver statistics and ranking settings."""

    vectors: NDArray[np.float32]
    ids: list[str]
    gram: NDArray[np.float64] | None
    settings: dict[str, Any]


def encode(state: IndexState) -> tuple[dict[str, Any], dict[str, Any], dict[str, Payload]]:
    """The manifest's fields (count, dim, settings), its file entries by role, and the files'
    contents by name."""
    contents: dict[str, tuple[str, Payload]] = {
        "vectors": ("vectors", _npy(state.vectors)),
        "ids": ("ids", encode_json(state.ids, "the ids")),
    }
    if state.gram is not None:
        contents["second_moment"] = ("second-moment", _npy(state.gram))
    files: dict[str, Any] = {}
    payloads: dict[str, Payload] = {}
    for role, (prefix, payload) in contents.items():
        suffix = ".json" if isinstance(payload, bytes) else ".npy"
        name, files[role] = content_file(prefix, suffix, payload)
        payloads[name] = payload
    fields: dict[str, Any] = {"count": len(state.ids), "dim": int(state.vectors.shape[1])}
    if state.settings:
        fields["settings"] = state.settings
    return fields, files, payloads


def save(folder: Path, state: IndexState) -> None:
    """Write ``state`` to ``folder`` as one version (see :func:`exemplar_svm._files.publish`)."""
    fields, files, payloads = encode(state)
    manifest = {"format": FORMAT, "version": VERSION, **fields, "files": files}
    publish(folder, MANIFEST, manifest, payloads, previous=lambda: named_files(folder))


def load(folder: Path) -> IndexState:
    """Read the index in ``folder``; every problem raises ``ValueError`` naming the file."""
    tidy(folder, MANIFEST)
    return read_version(
        folder,
        MANIFEST,
        lambda manifest: decode(folder, folder / MANIFEST, manifest),
        format=FORMAT,
        versions=VERSIONS,
        what=WHAT,
    )


def named_files(folder: Path) -> set[str]:
    """The files the folder's manifest names (none without one); raises ``ValueError`` if
    the manifest is not an index's, so a save never overwrites what it did not write."""
    if not (folder / MANIFEST).exists() and not (folder / MANIFEST).is_symlink():
        return set()
    _, manifest = read_manifest(folder, MANIFEST, format=FORMAT, versions=VERSIONS, what=WHAT)
    return file_names(manifest)


def file_names(manifest: Mapping[str, Any]) -> set[str]:
    """The file names a manifest (version 1 or 2, index or retriever) mentions."""
    files = manifest.get("files")
    if isinstance(files, dict):
        return {str(entry.get("name")) for entry in files.values() if isinstance(entry, dict)}
    names = {str(manifest.get("vectors"))}
    moment = manifest.get("second_moment")
    if isinstance(moment, dict):
        names.add(str(moment.get("file")))
    return names


def decode(folder: Path, manifest_path: Path, manifest: Mapping[str, Any]) -> IndexState:
    """The index a version-1 or version-2 manifest describes."""
    if manifest.get("version") == 1:
        return _decode_v1(folder, manifest_path, manifest)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ValueError(f"{manifest_path} is corrupt: no 'files' entry")
    return decode_fields(folder, manifest_path, manifest, files)


def decode_fields(
    folder: Path, manifest_path: Path, fields: Mapping[str, Any], files: Mapping[str, Any]
) -> IndexState:
    """The index of version-2 ``fields`` (count, dim, settings) and ``files`` entries."""
    count, dim = _shape(fields, manifest_path)
    vectors = _array(
        folder, manifest_path, "vectors", files.get("vectors"), np.float32, (count, dim)
    )
    name, size, digest = file_entry(files.get("ids"), manifest_path, "ids")
    payload = read_checked(folder, name, digest, manifest_path, size=size)
    ids = _ids(decode_json(payload, folder / name), count, folder / name)
    gram = None
    if files.get("second_moment") is not None:
        entry = files["second_moment"]
        gram = _array(folder, manifest_path, "second_moment", entry, np.float64, (dim, dim))
    return _checked(vectors, ids, gram, fields.get("settings", {}), manifest_path)


def _decode_v1(folder: Path, manifest_path: Path, manifest: Mapping[str, Any]) -> IndexState:
    count, dim = _shape(manifest, manifest_path)
    name, digest = manifest.get("vectors"), manifest.get("sha256")
    vectors = _read_npy(folder, name, digest, manifest_path, np.float32, (count, dim), None)
    ids = _ids(manifest.get("ids"), count, manifest_path)
    gram = None
    moment = manifest.get("second_moment")
    if moment is not None:
        if not isinstance(moment, dict):
            raise ValueError(f"{manifest_path} is corrupt: bad 'second_moment' entry")
        name, digest = moment.get("file"), moment.get("sha256")
        gram = _read_npy(folder, name, digest, manifest_path, np.float64, (dim, dim), None)
    return _checked(vectors, ids, gram, manifest.get("settings", {}), manifest_path)


def _shape(fields: Mapping[str, Any], manifest_path: Path) -> tuple[int, int]:
    count, dim = fields.get("count"), fields.get("dim")
    for name, value in (("count", count), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{manifest_path} is corrupt: bad {name!r} {value!r}")
    return int(count), int(dim)  # type: ignore[arg-type]


def _array(
    folder: Path,
    manifest_path: Path,
    role: str,
    entry: object,
    dtype: type,
    shape: tuple[int, int],
) -> tuple[Path, NDArray[Any]]:
    """An array file of the manifest (its path and array), its size checked against
    ``shape`` before it is read."""
    name, size, digest = file_entry(entry, manifest_path, role)
    data = math.prod(shape) * np.dtype(dtype).itemsize
    if not data + _NPY_HEADER_LEAST <= size <= data + _NPY_HEADER_MOST:
        raise ValueError(
            f"{manifest_path} is corrupt: {name} is listed with {size} bytes, which cannot be "
            f"a {np.dtype(dtype)} array of shape {shape}"
        )
    return _read_npy(folder, name, digest, manifest_path, dtype, shape, size)


def _npy(array: NDArray[Any]) -> list[bytes | memoryview]:
    """An .npy file of ``array`` as its header and its data (not copied)."""
    contiguous = np.ascontiguousarray(array)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, np.lib.format.header_data_from_array_1_0(contiguous)
    )
    return [header.getvalue(), contiguous.data.cast("B")]


def _read_npy(
    folder: Path,
    name: object,
    digest: object,
    manifest_path: Path,
    dtype: type,
    shape: tuple[int, int],
    size: int | None,
) -> tuple[Path, NDArray[Any]]:
    """An .npy file named by the manifest (its path and array, not copied).

    Its header is read first: only ``dtype`` and ``shape`` pass (an object array, which numpy
    would unpickle, is refused from its header) and the file must be exactly as long as they
    make it, before its data is read; then its checksum must match.
    """
    data = math.prod(shape) * np.dtype(dtype).itemsize
    sizes = (data + _NPY_HEADER_LEAST, data + _NPY_HEADER_MOST)
    path = folder / str(name)
    with open_file(folder, name, size=size, sizes=sizes, named_by=manifest_path) as (file, length):
        try:
            version = np.lib.format.read_magic(file)
            if version == (1, 0):
                found, fortran, kind = np.lib.format.read_array_header_1_0(file)
            elif version == (2, 0):
                found, fortran, kind = np.lib.format.read_array_header_2_0(file)
            else:
                raise ValueError(f"unsupported .npy version {version}")
        except (ValueError, OSError, SyntaxError, TypeError) as exc:
            raise ValueError(f"{path} is not a readable .npy array: {exc}") from None
        if kind.hasobject:
            raise ValueError(
                f"{path} is not a readable .npy array: it holds Python objects (a pickle), "
                "which are never loaded"
            )
        if kind != np.dtype(dtype) or fortran or tuple(found) != shape:
            raise ValueError(
                f"{path} is corrupt: it holds {kind} {tuple(found)}, but {manifest_path} says "
                f"{np.dtype(dtype)} {shape}"
            )
        offset = file.tell()
        if length != offset + data:
            raise ValueError(f"{path} is corrupt: its data does not fill the shape {shape}")
        file.seek(0)
        payload = read_all(file, length, path)
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError(f"{path} is corrupt: its checksum does not match")
    array: NDArray[Any] = np.frombuffer(payload, dtype=kind, offset=offset).reshape(shape)
    array.flags.writeable = False
    return path, array


def _ids(value: object, count: int, path: Path) -> list[str]:
    if not isinstance(value, list) or len(value) != count:
        found = len(value) if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{path} is corrupt: expected {count} ids, found {found}")
    try:
        check_ids(value)
    except ValueError as exc:
        raise ValueError(f"{path} is corrupt: {exc}") from None
    return value


def _checked(
    vectors: tuple[Path, NDArray[np.float32]],
    ids: list[str],
    gram: tuple[Path, NDArray[np.float64]] | None,
    settings: object,
    manifest_path: Path,
) -> IndexState:
    """Re-validate what was read as the constructor validates what it is given."""
    _check_unit_rows(*vectors)
    if gram is not None:
        _check_second_moment(*gram, len(vectors[1]))
    if not isinstance(settings, dict):
        raise ValueError(f"{manifest_path} is corrupt: bad 'settings' (not a mapping)")
    return IndexState(vectors[1], ids, None if gram is None else gram[1], settings)


def _check_unit_rows(path: Path, vectors: NDArray[np.float32]) -> None:
    """Every row finite and of unit length (the index stores normalised rows)."""
    squares = np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64)
    bad = ~(np.abs(squares - 1.0) <= _UNIT_TOLERANCE)  # NaN compares False: bad
    if not bad.any():
        return
    row = int(np.flatnonzero(bad)[0])
    if not np.isfinite(vectors[row]).all():
        problem = "contains NaN or infinite values"
    elif squares[row] == 0:
        problem = "is all zeros"
    else:
        problem = f"has length {math.sqrt(squares[row]):.6g}, not 1"
    raise ValueError(f"{path} is corrupt: row {row} {problem} (an index stores unit vectors)")


def _check_second_moment(path: Path, gram: NDArray[np.float64], count: int) -> None:
    """``X^T X`` of ``count`` unit rows: finite, symmetric, with trace ``count``."""
    if not np.isfinite(gram).all():
        problem = "contains NaN or infinite values"
    elif abs(float(np.trace(gram)) - count) > _UNIT_TOLERANCE * count:
        problem = f"has trace {float(np.trace(gram)):.6g}, not the number of rows ({count})"
    elif not np.allclose(gram, gram.T, rtol=0.0, atol=1e-6 * count):
        problem = "is not symmetric"
    else:
        return
    raise ValueError(f"{path} is corrupt: the second moment {problem}")
