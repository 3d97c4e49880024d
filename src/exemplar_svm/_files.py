"""Files this library writes: atomic replacement, and JSON documents with a format and version."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def read_versioned_json(path: Path, *, format: str, version: int, what: str) -> dict[str, Any]:
    """Read a JSON object written with ``{"format": format, "version": version, ...}``.

    Anything else (missing, not JSON, another format or version) raises a ``ValueError`` that
    names ``what`` the file should have been.
    """
    if not path.is_file():
        raise ValueError(f"{path.parent} is not {what}: {path.name} is missing")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is corrupt: not valid JSON ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != format:
        raise ValueError(f"{path} is not {what}")
    if state.get("version") != version:
        raise ValueError(
            f"{path} has format version {state.get('version')!r}; this exemplar-svm reads "
            f"version {version}: upgrade exemplar-svm or write it again with this version"
        )
    return state
