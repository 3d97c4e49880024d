"""A corpus embedded once and saved to a folder: what ``exemplar-svm index`` writes and
``exemplar-svm search --corpus FOLDER`` reads.

The folder holds the documents (ids, texts, other fields), their :class:`ExemplarIndex` (in the
subfolder ``index``, as :meth:`ExemplarIndex.save` writes it) and the name and settings of the
embedding model that made the vectors, so that a search embeds only its query, with that same
model. A folder is written whole into a temporary sibling and then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from exemplar_svm.corpus import Record
from exemplar_svm.embedders import (
    DEFAULT_MODEL,
    Embedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from exemplar_svm.index import ExemplarIndex

FORMAT = "exemplar-svm-corpus"
VERSION = 1
MANIFEST = "corpus.json"
INDEX_FOLDER = "index"
WHAT = "a corpus folder written by 'exemplar-svm index'"

Kind = Literal["sentence-transformers", "openai"]


@dataclass(frozen=True)
class EmbedderSpec:
    """Which embedding model made a corpus's vectors, without any secret (no API key).

    Parameters
    ----------
    kind : {"sentence-transformers", "openai"}
        A local sentence-transformers model, or an OpenAI-compatible server.
    model : str
        The model's name (or local path).
    base_url : str, optional
        The OpenAI-compatible server it was embedded with; ``None`` for OpenAI's own API (or
        ``OPENAI_BASE_URL``). A search may point elsewhere (the same model on another host).
    dimensions : int, optional
        The vector length asked of an OpenAI-compatible server.
    normalize : bool, default=True
        Whether a sentence-transformers model's vectors were normalised to unit length.
    """

    kind: Kind = "sentence-transformers"
    model: str = DEFAULT_MODEL
    base_url: str | None = None
    dimensions: int | None = None
    normalize: bool = True

    def describe(self) -> str:
        """A short name for messages, e.g. ``sentence-transformers/all-MiniLM-L6-v2``."""
        if self.kind == "openai":
            where = f" at {self.base_url}" if self.base_url else ""
            size = f", dimensions={self.dimensions}" if self.dimensions else ""
            return f"--openai-model {self.model}{size}{where}"
        return self.model

    def embedder(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        show_progress: bool | None = None,
    ) -> Embedder:
        """The embedder this spec names; ``base_url`` (OpenAI-compatible only) overrides the
        recorded server. Nothing is loaded or contacted until the first text is embedded."""
        if self.kind == "openai":
            return OpenAIEmbedder(
                self.model,
                dimensions=self.dimensions,
                base_url=base_url or self.base_url,
                api_key=api_key,
                show_progress=show_progress,
            )
        return SentenceTransformerEmbedder(
            self.model, normalize=self.normalize, show_progress=show_progress
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.model,
            "base_url": self.base_url,
            "dimensions": self.dimensions,
            "normalize": self.normalize,
        }

    @classmethod
    def from_json(cls, value: object, where: Path) -> EmbedderSpec:
        """The spec saved in ``where``; ``ValueError`` naming the file for anything else."""
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} is corrupt: 'embedder' is not an object")
        kind, model = value.get("kind"), value.get("model")
        base_url, dimensions = value.get("base_url"), value.get("dimensions")
        normalize = value.get("normalize", True)
        if kind not in ("sentence-transformers", "openai") or not isinstance(model, str):
            raise ValueError(f"{where} is corrupt: unknown embedder {dict(value)!r}")
        if base_url is not None and not isinstance(base_url, str):
            raise ValueError(f"{where} is corrupt: the embedder's base_url is not a string")
        if dimensions is not None and (
            isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1
        ):
            raise ValueError(f"{where} is corrupt: the embedder's dimensions are not a count")
        if not isinstance(normalize, bool):
            raise ValueError(f"{where} is corrupt: the embedder's normalize is not a boolean")
        return cls(kind, model, base_url, dimensions, normalize)


@dataclass
class SavedCorpus:
    """A corpus with its vectors and the model that made them.

    Parameters
    ----------
    records : list of Record
        The documents, in the index's row order.
    index : ExemplarIndex
        Their vectors, with ids ``[record.id for record in records]``.
    embedder : EmbedderSpec
        The model that embedded them; a search must embed its query with the same one.
    source : str
        Where the documents came from (the corpus file), for messages.
    """

    records: list[Record]
    index: ExemplarIndex
    embedder: EmbedderSpec
    source: str
    by_id: dict[str, Record] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if [record.id for record in self.records] != self.index.ids:
            raise ValueError("the records' ids must be the index's ids, in the same order")
        self.by_id = {record.id: record for record in self.records}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the corpus to the folder ``path``, whole or not at all.

        Everything is written into a temporary folder beside ``path``, which is then renamed
        to ``path``. An existing corpus folder at ``path`` is replaced (it is moved aside just
        before the rename and deleted after it); anything else there is refused with
        ``ValueError``, so that no other data is ever deleted.
        """
        target = Path(path)
        check_writable(target)
        parent = target.resolve().parent
        temporary = Path(tempfile.mkdtemp(dir=parent, prefix=f".{target.name}.", suffix=".tmp"))
        try:
            # mkdtemp makes the folder private; the corpus folder is as readable as any other.
            temporary.chmod(0o777 & ~_umask())
            self.index.save(temporary / INDEX_FOLDER)
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "source": self.source,
                "count": len(self.records),
                "dim": self.index.dim,
                "embedder": self.embedder.to_json(),
                "index": INDEX_FOLDER,
                "records": [
                    {"id": record.id, "text": record.text, "metadata": record.metadata}
                    for record in self.records
                ],
            }
            # Written last: a folder without its manifest is never taken for a corpus folder.
            with open(temporary / MANIFEST, "w", encoding="utf-8") as file:
                json.dump(manifest, file, ensure_ascii=False)
                file.flush()
                os.fsync(file.fileno())
            _move_into_place(temporary, target)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SavedCorpus:
        """Read a folder written by :meth:`save`; anything else raises ``ValueError``."""
        folder = Path(path)
        manifest_path = folder / MANIFEST
        manifest = _read_manifest(folder)
        records = _records(manifest.get("records"), manifest_path)
        embedder = EmbedderSpec.from_json(manifest.get("embedder"), manifest_path)
        index = ExemplarIndex.load(folder / INDEX_FOLDER)
        if index.ids != [record.id for record in records]:
            raise ValueError(
                f"{manifest_path} is corrupt: its documents do not match the index in "
                f"{folder / INDEX_FOLDER}; write the folder again with 'exemplar-svm index'"
            )
        source = manifest.get("source")
        return cls(records, index, embedder, source if isinstance(source, str) else str(folder))


def is_saved_corpus(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder that looks like :meth:`SavedCorpus.save`'s (its manifest
    is not read)."""
    return (Path(path) / MANIFEST).is_file()


def _read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    if not path.is_file():
        raise ValueError(
            f"{folder} is not {WHAT}: it has no {MANIFEST}; make one with "
            f"'exemplar-svm index CORPUS -o {folder}'"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is corrupt: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not {WHAT}")
    if manifest.get("version") != VERSION:
        raise ValueError(
            f"{path} has format version {manifest.get('version')!r}; this exemplar-svm reads "
            f"version {VERSION}: upgrade exemplar-svm, or index the corpus again"
        )
    return manifest


def _records(value: object, where: Path) -> list[Record]:
    if not isinstance(value, list):
        raise ValueError(f"{where} is corrupt: 'records' is not a list")
    records: list[Record] = []
    for number, item in enumerate(value):
        if not isinstance(item, dict):
            raise ValueError(f"{where} is corrupt: record {number} is not an object")
        doc_id, text, metadata = item.get("id"), item.get("text"), item.get("metadata", {})
        if not isinstance(doc_id, str) or not isinstance(text, str):
            raise ValueError(f"{where} is corrupt: record {number} has no string id and text")
        if not isinstance(metadata, dict):
            raise ValueError(f"{where} is corrupt: record {number}'s metadata is not an object")
        records.append(Record(id=doc_id, text=text, metadata=metadata))
    return records


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise ``ValueError`` unless :meth:`SavedCorpus.save` may write ``path``: a new folder
    in an existing one, an empty folder, or a corpus folder (which is replaced)."""
    target = Path(path)
    parent = target.resolve().parent
    if not parent.is_dir():
        raise ValueError(f"cannot write {target}: its folder {parent} does not exist")
    if not target.exists() and not target.is_symlink():
        return
    if target.is_symlink() or not target.is_dir():
        raise ValueError(f"cannot write {target}: it exists and is not a folder")
    if any(target.iterdir()) and not is_saved_corpus(target):
        raise ValueError(
            f"cannot write {target}: it is a folder that holds other files; choose a new "
            "folder (an existing corpus folder is replaced)"
        )


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _move_into_place(temporary: Path, target: Path) -> None:
    """Rename ``temporary`` to ``target``, replacing an empty or corpus folder there."""
    if not target.exists():
        os.replace(temporary, target)
        return
    # A folder cannot be renamed over a non-empty one: move the old one aside first. Between
    # the two renames ``target`` is briefly missing, never half-written.
    aside = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
    os.replace(target, aside / "old")
    try:
        os.replace(temporary, target)
    except BaseException:
        os.replace(aside / "old", target)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    shutil.rmtree(aside, ignore_errors=True)
