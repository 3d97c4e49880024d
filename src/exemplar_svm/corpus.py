"""Reading a corpus of texts from JSONL or plain-text files, and the sample that ships with us."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from exemplar_svm._checks import check_ids

#: Keys tried, in order, for a JSONL record's id and text.
ID_KEYS = ("_id", "id", "doc_id")
TEXT_KEYS = ("text", "content", "page_content", "body")


@dataclass(frozen=True)
class Record:
    """One document: its id, the text that is embedded, and any other fields."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def sample_corpus_path() -> Path:
    """The small sample corpus shipped with the package (JSONL)."""
    return Path(str(resources.files("exemplar_svm") / "data" / "sample.jsonl"))


def read_corpus(path: str | os.PathLike[str]) -> list[Record]:
    """Read ``path``: JSONL (``.jsonl``/``.ndjson``) or plain text, one document a line.

    JSONL records need a text field (``text``, ``content``, ``page_content`` or ``body``); a
    ``title`` is prepended to it. Ids come from ``_id``, ``id`` or ``doc_id``, else the line
    number. Plain-text ids are line numbers (from 1); blank lines are skipped.
    """
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"corpus file {file} does not exist")
    if file.suffix.lower() in {".jsonl", ".ndjson"}:
        records = [_from_json(row, number, file) for number, row in read_jsonl(file, "documents")]
    else:
        with file.open(encoding="utf-8") as lines:
            records = [
                Record(id=str(number), text=line.strip())
                for number, line in enumerate(lines, start=1)
                if line.strip()
            ]
        if not records:
            raise ValueError(f"corpus file {file} holds no documents")
    check_ids([record.id for record in records], name=f"the ids of {file}")
    return records


def read_jsonl(path: Path, what: str = "records") -> list[tuple[int, dict[str, Any]]]:
    """The JSON objects of a JSONL file with their line numbers; blank lines are skipped.

    Raises ``ValueError`` naming the file and line for anything that is not a JSON object, and
    for a file that holds none (``what`` names what was expected).
    """
    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    rows: list[tuple[int, dict[str, Any]]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path} line {number} is not valid JSON: {exc}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number} must be a JSON object")
            rows.append((number, row))
    if not rows:
        raise ValueError(f"{path} holds no {what}")
    return rows


def _from_json(row: dict[str, Any], number: int, file: Path) -> Record:
    text_key = next((key for key in TEXT_KEYS if isinstance(row.get(key), str)), None)
    if text_key is None:
        raise ValueError(
            f"{file} line {number} has no text: give it one of the fields {', '.join(TEXT_KEYS)}"
        )
    id_key = next((key for key in ID_KEYS if key in row), None)
    doc_id = str(row[id_key]) if id_key is not None else str(number)
    title = row.get("title")
    text = f"{title}\n{row[text_key]}" if isinstance(title, str) and title else row[text_key]
    metadata = {key: value for key, value in row.items() if key not in {id_key, text_key}}
    return Record(id=doc_id, text=text, metadata=metadata)
