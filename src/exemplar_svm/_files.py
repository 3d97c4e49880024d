"""Files this library writes and reads back: versions named by one manifest, published last.

A saved folder holds one *manifest* (JSON with a format and a version) and the files it names,
each named after its content (``vectors-<sha256 prefix>.npy``) with its size and checksum in
the manifest. :func:`publish` writes the files, then replaces the manifest by an atomic rename,
and only then removes the files no manifest names any more: a process killed at any point
leaves the old version or the new one, whole. Writers take an exclusive lock on the folder
(``flock``, where the platform has it), so they also remove what killed writers left, and
:func:`tidy` lets a reader remove their temporary files when no writer holds the lock.

:func:`read_version` reads without a lock: a writer may replace the version meanwhile and
remove files the reader's manifest names, so a file found missing is retried.
Every file is opened only if it is a regular file inside the folder (a symlink must stay
inside it), its size is checked against what the manifest says before it is read, and JSON is
bounded in size and nesting. Every failure is a ``ValueError`` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, Union

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no cross-process lock (see folder_lock)
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

#: A manifest is read only up to this size. Manifests of format version 2 hold no per-document
#: data (the ids and nodes have files of their own); version 1 kept the ids in the manifest.
MAX_MANIFEST_BYTES = 64 * 2**20
#: JSON nested deeper than this (lists and objects) is refused before it is parsed.
MAX_JSON_DEPTH = 64
#: How often a reader re-reads a manifest that a writer replaced while it was being read.
READ_ATTEMPTS = 6
#: Without a cross-process lock, only temporary files at least this old count as leftovers.
STALE_SECONDS = 3600.0

# Files named after their content: <role>-<16 hex digits of their sha256>.<npy|json>.
_CONTENT_NAME = re.compile(r"[a-z]+(?:-[a-z]+)*-[0-9a-f]{16}\.(?:npy|json)")
# write_atomic's temporary files: "." + target name + "." + 8 random characters + ".tmp".
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp")
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(code for code in range(256) if code not in b"[]{}")
_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1


class MissingFileError(ValueError):
    """A file a manifest names is not there (perhaps removed by a writer meanwhile)."""


# -- writing -------------------------------------------------------------------------------


#: What a file is written from: bytes, or several buffers written one after the other (an
#: array's header and its data, so the data is not copied).
Payload = Union[bytes, Sequence[Union[bytes, memoryview]]]  # noqa: UP007


def write_atomic(path: Path, data: Payload) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync, and an atomic rename."""
    handle, temp = _temporary(path)
    try:
        with os.fdopen(handle, "wb") as file:
            for chunk in _chunks(data):
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _temporary(path: Path) -> tuple[int, str]:
    """A new temporary file next to ``path``, named as :data:`_TEMPORARY` expects. Unlike
    ``mkstemp``'s (0600) its permissions follow the umask, as a file ``open`` creates would."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temp = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(temp, flags, 0o666), temp
        except FileExistsError:  # pragma: no cover - 1 in 4 billion
            continue


def _chunks(data: Payload) -> Sequence[bytes | memoryview]:
    return [data] if isinstance(data, bytes) else data


def sync_folder(folder: Path) -> None:
    """Make the renames in ``folder`` durable (POSIX; elsewhere a no-op)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - Windows cannot open a folder
        return
    try:
        os.fsync(handle)
    except OSError:  # pragma: no cover - some file systems refuse to sync a folder
        pass
    finally:
        os.close(handle)


def content_file(role: str, suffix: str, payload: Payload) -> tuple[str, dict[str, Any]]:
    """The content-derived name of ``payload`` and its manifest entry (name, bytes, sha256)."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in _chunks(payload):
        hasher.update(chunk)
        size += memoryview(chunk).nbytes
    digest = hasher.hexdigest()
    name = f"{role}-{digest[:16]}{suffix}"
    return name, {"name": name, "bytes": size, "sha256": digest}


def encode_json(value: Any, what: str) -> bytes:
    """``value`` as UTF-8 JSON, refusing what could not be read back (too deep, not JSON)."""
    try:
        payload = json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"cannot save {what}: it must be JSON-serialisable ({exc})") from None
    if json_depth(payload) > MAX_JSON_DEPTH:
        raise ValueError(
            f"cannot save {what}: it is nested more than {MAX_JSON_DEPTH} levels deep, more than "
            "a load accepts; flatten it"
        )
    return payload


@contextlib.contextmanager
def folder_lock(folder: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder``; yields whether this process holds it.

    Writers wait for it (``wait=True``), so two processes never write one folder at once; a
    reader tidying up takes it only if it is free. Without ``fcntl`` (Windows) nothing is
    locked across processes and this yields False.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield False
        return
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    finally:
        os.close(handle)


def publish(
    folder: Path,
    manifest_name: str,
    manifest: Mapping[str, Any],
    payloads: Mapping[str, Payload],
    *,
    previous: Callable[[], Collection[str]],
    after: Callable[[], None] | None = None,
) -> None:
    """Write a version: ``payloads`` (file name -> bytes), then the manifest, then tidy up.

    ``previous`` is called under the lock, before anything is written: it reads the folder's
    current manifest, raises if it is not one this library may overwrite, and returns the
    names of the files it names (empty if there is none). Files of the old version are
    removed only after the new manifest is in place; ``after`` runs then too (e.g. to remove
    an older format's files).
    """
    data = encode_json(dict(manifest), str(folder / manifest_name))
    if len(data) > MAX_MANIFEST_BYTES:
        raise ValueError(
            f"cannot save {folder / manifest_name}: its {len(data)} bytes are more than the "
            f"{MAX_MANIFEST_BYTES} a manifest may have (fewer example vectors?)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    with folder_lock(folder, wait=True) as exclusive:
        old = set(previous())
        _remove_temporaries(folder, manifest_name, exclusive)
        for name, payload in payloads.items():
            write_atomic(folder / name, payload)
        sync_folder(folder)  # the files are in place before the manifest names them
        write_atomic(folder / manifest_name, data)
        sync_folder(folder)
        _remove_unnamed(folder, set(payloads), old, exclusive)
        if after is not None:
            after()


def tidy(folder: Path, manifest_name: str) -> None:
    """Remove the temporary files killed writers left in ``folder``, if no writer holds its
    lock now (a killed writer's lock is released with it).

    Only temporary files are removed: files of an old version that a writer killed after
    publishing could not remove are left to the next save. Failures (a read-only folder) are
    ignored: tidying is never needed to read.
    """
    if not folder.is_dir():
        return
    with folder_lock(folder, wait=False) as exclusive:
        if exclusive:  # else a writer is at work (or there is no lock): leave its files alone
            _remove_temporaries(folder, manifest_name, exclusive)


def remove_files(folder: Path, names: Collection[str]) -> None:
    """Remove files this library wrote: content-named ones and the manifests in ``names``;
    then the folder itself if that left it empty."""
    for name in names:
        with contextlib.suppress(OSError):
            (folder / name).unlink()
    for entry in _entries(folder):
        if _CONTENT_NAME.fullmatch(entry) or _TEMPORARY.fullmatch(entry):
            with contextlib.suppress(OSError):
                (folder / entry).unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()  # only if empty: anything else in it is not ours


def _entries(folder: Path) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _remove_temporaries(folder: Path, manifest_name: str, exclusive: bool) -> None:
    """Temporary files of killed writes (of content files or of the manifest)."""
    now = time.time()
    for entry in _entries(folder):
        match = _TEMPORARY.fullmatch(entry)
        if match is None:
            continue
        target = match.group("target")
        if target != manifest_name and not _CONTENT_NAME.fullmatch(target):
            continue
        path = folder / entry
        with contextlib.suppress(OSError):
            # Without the lock another writer may be writing it: only an old one is a leftover.
            if exclusive or now - path.lstat().st_mtime > STALE_SECONDS:
                path.unlink()


def _remove_unnamed(folder: Path, keep: set[str], old: set[str], exclusive: bool) -> None:
    """Content files no manifest names: every one under the lock, else the old version's."""
    candidates = _entries(folder) if exclusive else sorted(old)
    for entry in candidates:
        if entry in keep or not _CONTENT_NAME.fullmatch(entry):
            continue
        path = folder / entry
        with contextlib.suppress(OSError):
            if not path.is_dir():
                path.unlink()


# -- reading -------------------------------------------------------------------------------


def read_file(
    folder: Path,
    name: object,
    *,
    size: int | None = None,
    sizes: tuple[int, int] | None = None,
    limit: int | None = None,
    named_by: Path | None = None,
) -> bytearray:
    """The bytes of the file ``name`` in ``folder``, opened as :func:`open_file` opens it."""
    with open_file(folder, name, size=size, sizes=sizes, limit=limit, named_by=named_by) as (
        file,
        length,
    ):
        return read_all(file, length, folder / str(name))


@contextlib.contextmanager
def open_file(
    folder: Path,
    name: object,
    *,
    size: int | None = None,
    sizes: tuple[int, int] | None = None,
    limit: int | None = None,
    named_by: Path | None = None,
) -> Iterator[tuple[io.FileIO, int]]:
    """Open the file ``name`` in ``folder`` for reading, checked before anything is read;
    yields the open file and its size.

    It must be a plain name (no folder part), a regular file (not a FIFO, device or folder),
    and if it is a symlink its target must be a regular file in ``folder`` itself. ``size``
    is its exact expected size, ``sizes`` a (least, most) range, ``limit`` a bound; a file of
    another size is refused unread.
    """
    where = f" (named by {named_by})" if named_by is not None else ""
    if not isinstance(name, str) or not _plain_name(name):
        raise ValueError(f"{named_by or folder} is corrupt: bad file name {name!r}")
    path = folder / name
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise MissingFileError(f"{path} is missing{where}") from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read{where}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        path, info = _symlink_target(folder, path, where)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file but {_kind(info.st_mode)}{where}")
    _check_size(path, info.st_size, size, sizes, limit, where)
    # No symlink is followed now, and a FIFO swapped in meanwhile cannot block the open.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        handle = os.open(path, flags)
    except FileNotFoundError:
        raise MissingFileError(f"{path} is missing{where}") from None
    except OSError as exc:
        raise ValueError(f"{path} cannot be read{where}: {exc.strerror}") from None
    with io.FileIO(handle, "rb") as file:
        opened = os.fstat(handle)
        if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
            # Replaced between the check and the open: check what was opened.
            if not stat.S_ISREG(opened.st_mode):
                raise ValueError(f"{path} is not a regular file but {_kind(opened.st_mode)}")
            _check_size(path, opened.st_size, size, sizes, limit, where)
        yield file, opened.st_size


def read_all(file: io.FileIO, size: int, path: Path) -> bytearray:
    """The ``size`` bytes of ``file`` from where it stands; it must hold exactly that many."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    try:
        while filled < size:
            count = file.readinto(view[filled:])
            if not count:
                break
            filled += count
        grown = bool(file.read(1))
    except OSError as exc:
        raise ValueError(f"{path} cannot be read: {exc.strerror or exc}") from None
    if filled != size or grown:
        raise ValueError(f"{path} changed size while it was read")
    return buffer


def _plain_name(name: str) -> bool:
    return (
        bool(name)
        and name not in (".", "..")
        and "\x00" not in name
        and Path(name).name == name
        and os.sep not in name
        and (os.altsep is None or os.altsep not in name)
    )


def _symlink_target(folder: Path, path: Path, where: str) -> tuple[Path, os.stat_result]:
    """Where a symlink leads, if that is a regular file in ``folder`` itself."""
    try:
        target = Path(os.path.realpath(path, strict=True))
        inside = Path(os.path.realpath(folder, strict=True))
    except (OSError, RuntimeError) as exc:
        reason = "a symlink loop" if getattr(exc, "errno", None) == errno.ELOOP else "broken"
        raise ValueError(f"{path} is a symlink that cannot be followed ({reason}){where}") from None
    if target.parent != inside:
        raise ValueError(
            f"{path} is a symlink to {target}, outside {folder}; only files inside the folder "
            f"are read{where}"
        )
    try:
        return target, os.lstat(target)
    except OSError as exc:
        raise ValueError(f"{path} cannot be read{where}: {exc.strerror}") from None


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symlink"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _check_size(
    path: Path,
    actual: int,
    size: int | None,
    sizes: tuple[int, int] | None,
    limit: int | None,
    where: str,
) -> None:
    if size is not None and actual != size:
        raise ValueError(
            f"{path} has {actual} bytes, not the {size} the manifest says{where}: it is "
            "truncated, or not the file that was saved"
        )
    if sizes is not None and not sizes[0] <= actual <= sizes[1]:
        raise ValueError(
            f"{path} has {actual} bytes, which does not fit the shape the manifest gives"
            f"{where}: it is truncated, or not the file that was saved"
        )
    if limit is not None and actual > limit:
        raise ValueError(f"{path} has {actual} bytes, more than the {limit} it may have{where}")


def json_depth(payload: bytes | bytearray) -> int:
    """How deeply lists and objects nest in JSON ``payload`` (brackets in strings ignored)."""
    brackets = _STRINGS.sub(b"", payload).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    steps = _DEPTH_STEP[np.frombuffer(brackets, dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int64).max())


def decode_json(payload: bytes | bytearray, path: Path) -> Any:
    """Parse JSON read from ``path``, nested at most :data:`MAX_JSON_DEPTH` levels."""
    if json_depth(payload) > MAX_JSON_DEPTH:
        raise ValueError(
            f"{path} is corrupt: its JSON is nested more than {MAX_JSON_DEPTH} levels deep"
        )
    try:
        return json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is corrupt: not valid JSON ({exc})") from None


def file_entry(entry: object, manifest: Path, role: str) -> tuple[str, int, str]:
    """A manifest's entry for one file, checked: its name, size and sha256."""
    if not isinstance(entry, dict):
        raise ValueError(f"{manifest} is corrupt: bad {role!r} file entry")
    name, size, digest = entry.get("name"), entry.get("bytes"), entry.get("sha256")
    if not isinstance(name, str) or not _CONTENT_NAME.fullmatch(name):
        raise ValueError(f"{manifest} is corrupt: bad {role!r} file name {name!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"{manifest} is corrupt: bad {role!r} size {size!r}")
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ValueError(f"{manifest} is corrupt: bad {role!r} checksum {digest!r}")
    return name, size, digest


def read_checked(
    folder: Path,
    name: object,
    digest: object,
    manifest: Path,
    *,
    size: int | None = None,
    sizes: tuple[int, int] | None = None,
) -> bytearray:
    """:func:`read_file`, then the sha256 the manifest gives must match."""
    payload = read_file(folder, name, size=size, sizes=sizes, named_by=manifest)
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError(f"{folder / str(name)} is corrupt: its checksum does not match")
    return payload


def read_manifest(
    folder: Path, name: str, *, format: str, versions: Collection[int], what: str
) -> tuple[bytearray, dict[str, Any]]:
    """The raw bytes and the parsed JSON object of a manifest of ``format``, one of
    ``versions``; anything else raises a ``ValueError`` naming ``what`` it should have been."""
    path = folder / name
    try:
        raw = read_file(folder, name, limit=MAX_MANIFEST_BYTES)
    except MissingFileError:
        raise ValueError(f"{folder} is not {what}: {name} is missing") from None
    state = decode_json(raw, path)
    if not isinstance(state, dict) or state.get("format") != format:
        raise ValueError(f"{path} is not {what}")
    version = state.get("version")
    if isinstance(version, bool) or version not in versions:
        newest = max(versions)
        raise ValueError(
            f"{path} has format version {version!r}; this exemplar-svm reads version"
            f"{'s' if len(versions) > 1 else ''} {', '.join(map(str, sorted(versions)))}: "
            f"upgrade exemplar-svm, or save it again as version {newest}"
        )
    return raw, state


def read_version(
    folder: Path,
    name: str,
    read: Callable[[dict[str, Any]], T],
    *,
    format: str,
    versions: Collection[int],
    what: str,
) -> T:
    """``read(manifest)`` for the folder's manifest, retried when a writer interferes.

    ``read`` reads the files the manifest names. A reader takes no lock, so a writer may
    publish a new version and remove the old one's files meanwhile: a file found missing is
    therefore retried (with the manifest read again) up to :data:`READ_ATTEMPTS` times, as
    its name is its content's (a file that is there is the right one). If the manifest never
    changed the missing file is reported; if it kept changing, a ``ValueError`` says so.
    """
    failure: MissingFileError | None = None
    seen: set[bytes] = set()
    for attempt in range(READ_ATTEMPTS):
        raw, state = read_manifest(folder, name, format=format, versions=versions, what=what)
        seen.add(hashlib.sha256(raw).digest())
        try:
            return read(state)
        except MissingFileError as exc:
            failure = exc
        time.sleep(0.002 * 2**attempt)  # let the writer finish its version
    assert failure is not None
    if len(seen) == 1:
        raise failure
    raise ValueError(
        f"{folder / name} was replaced {len(seen) - 1} times while it was being read, and "
        "files it named were removed each time: another process keeps saving to this "
        "folder; load it again when it is done"
    ) from failure


def read_versioned_json(path: Path, *, format: str, version: int, what: str) -> dict[str, Any]:
    """Read a small JSON file written with ``{"format": format, "version": version, ...}``.

    Anything else (missing, not JSON, another format or version) raises a ``ValueError`` that
    names ``what`` the file should have been.
    """
    return read_manifest(path.parent, path.name, format=format, versions=(version,), what=what)[1]
