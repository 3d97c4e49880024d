"""ExemplarIndex: a corpus of embeddings ranked per query by kNN, the exemplar SVM or both."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, cast, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_ids, check_k, check_positive, unit_rows
from exemplar_svm._files import read_versioned_json, write_atomic
from exemplar_svm.svm import fit

Mode = Literal["svm", "knn", "hybrid"]
MODES: tuple[str, ...] = get_args(Mode)

#: Examples for :meth:`ExemplarIndex.search`: corpus ids, vectors, or a mix of both.
Examples = Union[str, ArrayLike, Sequence[Union[str, ArrayLike]], None]  # noqa: UP007

#: Defaults of :meth:`ExemplarIndex.search`, shared by the framework adapters.
DEFAULT_MODE: Mode = "svm"
DEFAULT_C = 0.1
DEFAULT_NEGATIVE_WEIGHT = 10.0

FORMAT = "exemplar-svm-index"
FORMAT_VERSION = 1
MANIFEST = "index.json"


@dataclass(frozen=True)
class Hit:
    """One ranked document.

    Attributes
    ----------
    id : str
        The document's id in the index.
    score : float
        The ranking score of the search mode; higher is better. For ``"svm"`` it is the SVM's
        decision value, for ``"knn"`` the cosine similarity, for ``"hybrid"`` the mean of the
        two z-scores.
    similarity : float
        Cosine similarity between the document and the query, whatever the mode.
    """

    id: str
    score: float
    similarity: float


class ExemplarIndex:
    """A corpus of embeddings searched by the exemplar SVM, kNN or a hybrid of both.

    Vectors are stored L2-normalised as float32, so cosine similarity is a dot product and the
    SVM sees every document at the same scale.

    Parameters
    ----------
    vectors : array-like of shape (n, d)
        One embedding per document.
    ids : sequence of str, optional
        One unique id per document; ``"0"``, ``"1"``, ... by default.

    Examples
    --------
    >>> import numpy as np
    >>> from exemplar_svm import ExemplarIndex
    >>> rng = np.random.default_rng(0)
    >>> index = ExemplarIndex(rng.normal(size=(100, 16)))
    >>> [hit.id for hit in index.search(index.vector("7"), k=3, mode="knn")][0]
    '7'
    >>> hits = index.search(index.vector("7"), k=3, negatives=["7"])
    >>> "7" in [hit.id for hit in hits]
    False
    """

    def __init__(self, vectors: ArrayLike, ids: Sequence[str] | None = None) -> None:
        matrix = unit_rows(as_matrix(vectors, "vectors", dtype=np.float32), "vectors")
        id_list = [str(i) for i in range(len(matrix))] if ids is None else list(ids)
        self._corpus = _Corpus.build(matrix, id_list)

    # -- corpus ------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """Document ids in row order (a copy)."""
        return list(self._corpus.ids)

    @property
    def vectors(self) -> NDArray[np.float32]:
        """The normalised corpus matrix, read-only."""
        return self._corpus.vectors

    @property
    def dim(self) -> int:
        return int(self._corpus.vectors.shape[1])

    def __len__(self) -> int:
        return len(self._corpus.ids)

    def __contains__(self, item: object) -> bool:
        return item in self._corpus.rows

    def vector(self, item: str) -> NDArray[np.float32]:
        """The stored (normalised) vector of document ``item``."""
        corpus = self._corpus
        vector: NDArray[np.float32] = corpus.vectors[corpus.row(item)].copy()
        return vector

    def add(self, vectors: ArrayLike, ids: Sequence[str] | None = None) -> list[str]:
        """Append documents; the index is unchanged if any of them is invalid.

        Safe to call while other threads search: they finish on the corpus they started with.
        Returns the ids of the new documents (``str(row)`` by default).
        """
        corpus = self._corpus
        matrix = unit_rows(as_matrix(vectors, "vectors", dim=self.dim, dtype=np.float32), "vectors")
        start = len(corpus.ids)
        new_ids = [str(start + i) for i in range(len(matrix))] if ids is None else list(ids)
        if len(new_ids) != len(matrix):
            raise ValueError(f"got {len(new_ids)} ids for {len(matrix)} vectors; pass one id each")
        clash = next((item for item in new_ids if item in corpus.rows), None)
        if clash is not None:
            raise ValueError(f"duplicate id {clash!r}: the index already holds a document with it")
        self._corpus = _Corpus.build(np.vstack([corpus.vectors, matrix]), [*corpus.ids, *new_ids])
        return new_ids

    # -- search ------------------------------------------------------------------------------

    def search(
        self,
        query: ArrayLike,
        k: int = 10,
        *,
        mode: Mode = DEFAULT_MODE,
        positives: Examples = None,
        negatives: Examples = None,
        C: float = DEFAULT_C,
        negative_weight: float = DEFAULT_NEGATIVE_WEIGHT,
    ) -> list[Hit]:
        """Rank the corpus for ``query`` and return the best ``k`` documents, best first.

        Parameters
        ----------
        query : array-like of shape (d,) or (m, d)
            The query embedding, or several (their shared concept is searched for).
        k : int, default=10
            How many hits; the whole remaining corpus if it holds fewer.
        mode : {"svm", "knn", "hybrid"}, default="svm"
            ``"svm"`` ranks by an exemplar SVM trained with the query and ``positives`` as
            positives and every other corpus document as a negative. ``"knn"`` ranks by cosine
            similarity to the normalised mean of the query and positive vectors (named negatives
            are only left out). ``"hybrid"`` ranks by the mean of the z-scored SVM and kNN
            scores over the candidate documents.
        positives, negatives : str, vector, or sequence of them, optional
            Extra examples, as corpus ids or vectors. Corpus documents named here are left out
            of the results.
        C : float, default=0.1
            The SVM's loss weight (see :func:`exemplar_svm.fit`).
        negative_weight : float, default=10.0
            How many anonymous corpus rows one named negative counts for in the SVM's loss.

        Returns
        -------
        list of Hit
        """
        k = check_k(k)
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        C = check_positive(C, "C")
        negative_weight = check_positive(negative_weight, "negative_weight")
        corpus = self._corpus  # one snapshot: a concurrent add() cannot change it under us
        queries = unit_rows(as_matrix(query, "query", dim=self.dim), "query")
        pos_rows, pos_vectors = corpus.examples(positives, "positives")
        neg_rows, neg_vectors = corpus.examples(negatives, "negatives")
        both = set(pos_rows) & set(neg_rows)
        if both:
            clash = corpus.ids[min(both)]
            raise ValueError(f"document {clash!r} is named both as a positive and a negative")

        vectors = corpus.vectors
        candidates = np.ones(len(vectors), dtype=bool)
        candidates[pos_rows + neg_rows] = False
        if not candidates.any():
            return []

        similarity: NDArray[Any] = vectors @ _direction(queries).astype(np.float32)
        positive_set = np.vstack([queries, pos_vectors, vectors[pos_rows]])
        scores: NDArray[Any]
        if mode == "knn":
            scores = vectors @ _direction(positive_set).astype(np.float32)
        else:
            # Every corpus row that is not a positive is a negative; named ones weigh more.
            is_negative = np.ones(len(vectors), dtype=bool)
            is_negative[pos_rows] = False
            weights = np.ones(len(vectors))
            weights[neg_rows] = negative_weight
            model = fit(
                positive_set,
                np.vstack([vectors[is_negative], neg_vectors]),
                C=C,
                negative_weights=np.concatenate(
                    [weights[is_negative], np.full(len(neg_vectors), negative_weight)]
                ),
            )
            scores = model.decision_function(vectors)
            if mode == "hybrid":
                knn_scores = vectors @ _direction(positive_set).astype(np.float32)
                scores = (_zscore(scores, candidates) + _zscore(knn_scores, candidates)) / 2

        rows = _top_k(np.asarray(scores, dtype=np.float64), candidates, k)
        return [
            Hit(id=corpus.ids[row], score=float(scores[row]), similarity=float(similarity[row]))
            for row in rows
        ]

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to the directory ``path``: the matrix as ``.npy``, ids and format as JSON.

        The manifest is replaced last, by an atomic rename, so a crash leaves either the old
        index or the new one, never a mix.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        # Only ever overwrite an index this library wrote; this raises for anything else.
        old = _read_manifest(folder) if (folder / MANIFEST).exists() else None
        corpus = self._corpus
        payload = _npy_bytes(corpus.vectors)
        digest = hashlib.sha256(payload).hexdigest()
        array_name = f"vectors-{digest[:16]}.npy"
        write_atomic(folder / array_name, payload)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "count": len(self),
            "dim": self.dim,
            "dtype": "float32",
            "vectors": array_name,
            "sha256": digest,
            "ids": list(corpus.ids),
        }
        write_atomic(folder / MANIFEST, json.dumps(manifest).encode())
        if old is not None and old.get("vectors") != array_name:
            (folder / str(old["vectors"])).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExemplarIndex:
        """Load an index written by :meth:`save`; anything else raises ``ValueError``."""
        folder = Path(path)
        manifest = _read_manifest(folder)
        array_name = manifest.get("vectors")
        if not isinstance(array_name, str) or Path(array_name).name != array_name:
            raise ValueError(f"{folder / MANIFEST} is corrupt: bad 'vectors' entry")
        payload = (folder / array_name).read_bytes()
        if hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
            raise ValueError(f"{folder / array_name} is corrupt: its checksum does not match")
        try:
            vectors = np.load(io.BytesIO(payload), allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{folder / array_name} is not a readable .npy array: {exc}") from None
        expected = (manifest.get("count"), manifest.get("dim"))
        if vectors.dtype != np.float32 or vectors.shape != expected:
            raise ValueError(
                f"{folder / array_name} is corrupt: {vectors.dtype} {vectors.shape}, "
                f"expected float32 {expected}"
            )
        ids = manifest.get("ids")
        if not isinstance(ids, list) or len(ids) != len(vectors):
            raise ValueError(f"{folder / MANIFEST} is corrupt: ids do not match the vectors")
        index = cls.__new__(cls)
        index._corpus = _Corpus.build(vectors, ids)
        return index

    def __repr__(self) -> str:
        return f"ExemplarIndex(n={len(self)}, dim={self.dim})"


@dataclass(frozen=True)
class _Corpus:
    """The index's state, replaced whole on every change so readers always see one version."""

    vectors: NDArray[np.float32]  # normalised, read-only
    ids: tuple[str, ...]
    rows: dict[str, int]

    @classmethod
    def build(cls, vectors: NDArray[Any], ids: list[str]) -> _Corpus:
        if len(ids) != len(vectors):
            raise ValueError(f"got {len(ids)} ids for {len(vectors)} vectors; pass one id each")
        check_ids(ids)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        matrix.flags.writeable = False
        return cls(matrix, tuple(ids), {item: row for row, item in enumerate(ids)})

    def row(self, item: str, name: str = "ids") -> int:
        try:
            return self.rows[item]
        except KeyError:
            raise ValueError(f"unknown id {item!r} in {name}: no document has it") from None

    def examples(self, examples: Examples, name: str) -> tuple[list[int], NDArray[Any]]:
        """Split examples into corpus rows (named by id) and extra normalised vectors."""
        dim = self.vectors.shape[1]
        empty = np.empty((0, dim))
        if examples is None:
            return [], empty
        if isinstance(examples, str):
            return [self.row(examples, name)], empty
        if _is_numeric(examples):
            return [], unit_rows(as_matrix(cast(ArrayLike, examples), name, dim=dim), name)
        rows: list[int] = []
        vectors: list[NDArray[Any]] = []
        items: Iterable[Any] = examples  # type: ignore[assignment]
        for item in items:
            if isinstance(item, str):
                rows.append(self.row(item, name))
            else:
                vectors.append(as_matrix(item, name, dim=dim))
        stacked = unit_rows(np.vstack(vectors), name) if vectors else empty
        return sorted(set(rows)), stacked


def _is_numeric(value: object) -> bool:
    """True for one vector or one matrix of numbers (not ids, not a list of examples)."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged: a list of examples of different kinds
        return False
    return array.size > 0 and array.ndim <= 2 and array.dtype.kind in "fiub"


def _direction(vectors: NDArray[Any]) -> NDArray[np.float64]:
    mean: NDArray[np.float64] = np.asarray(vectors, dtype=np.float64).mean(axis=0)
    norm = float(np.linalg.norm(mean))
    if norm == 0:
        raise ValueError("the query vectors cancel out (their mean is zero); pass other examples")
    return mean / norm


def _zscore(scores: NDArray[Any], mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    values: NDArray[np.float64] = np.asarray(scores, dtype=np.float64)
    selected = values[mask]
    std = float(selected.std())
    return (values - float(selected.mean())) / (std if std > 0 else 1.0)


def _top_k(scores: NDArray[np.float64], mask: NDArray[np.bool_], k: int) -> NDArray[np.intp]:
    """Rows of the ``k`` best candidates, best first; ties go to the lower row, every run."""
    rows = np.flatnonzero(mask)
    values = scores[rows]
    if k < len(rows):
        cut = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= cut
        rows, values = rows[keep], values[keep]
    order = np.lexsort((rows, -values))[:k]
    return rows[order]


def _npy_bytes(array: NDArray[Any]) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _read_manifest(folder: Path) -> dict[str, Any]:
    return read_versioned_json(
        folder / MANIFEST, format=FORMAT, version=FORMAT_VERSION, what="an exemplar-svm index"
    )
