"""ExemplarIndex: a corpus of embeddings ranked per query by kNN, the exemplar SVM or both."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, cast, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._blas import ONE_BLAS_THREAD, blas_threads
from exemplar_svm._checks import (
    as_matrix,
    check_count,
    check_fraction,
    check_ids,
    check_k,
    check_nonnegative,
    check_positive,
    unit_rows,
)
from exemplar_svm._files import read_versioned_json, write_atomic
from exemplar_svm._solver import CorpusStats, corpus_products, first_directions, solve_many
from exemplar_svm.stores import Metric

Mode = Literal["svm", "knn", "hybrid", "lda"]
PriorDirection = Literal["query", "contrast"]
MODES: tuple[str, ...] = get_args(Mode)

#: Examples for :meth:`ExemplarIndex.search`: corpus ids, vectors, or a mix of both.
Examples = Union[str, ArrayLike, Sequence[Union[str, ArrayLike]], None]  # noqa: UP007

#: Defaults of :meth:`ExemplarIndex.search`, shared by the framework adapters. Chosen on half of
#: the queries of the shared datasets and checked on the other half (see the README's Quality
#: section): the hybrid of kNN and an SVM with pseudo-relevance feedback ranks at least as well
#: as kNN on every set and metric measured, and counter-examples, when given, count strongly.
DEFAULT_MODE: Mode = "hybrid"
DEFAULT_C = 0.01
DEFAULT_NEGATIVE_WEIGHT = 1000.0
DEFAULT_PRIOR = 0.0
DEFAULT_FEEDBACK = 5
DEFAULT_FEEDBACK_WEIGHT = 0.5
DEFAULT_HYBRID_WEIGHT = 0.3
DEFAULT_ROCCHIO = 1.0

#: The ranking options of :meth:`ExemplarIndex.search` (everything but the query, ``k`` and the
#: examples), as the framework adapters pass them through.
SEARCH_OPTIONS: tuple[str, ...] = (
    "mode",
    "C",
    "negative_weight",
    "prior",
    "prior_direction",
    "feedback",
    "feedback_weight",
    "hard_negatives",
    "hard_negative_weight",
    "hybrid_weight",
    "rocchio",
)

# At most this many queries of a batch share their passes over the corpus (each holds a few
# arrays over all rows meanwhile).
_BATCH_GROUP = 8

_OPTION_CHECKS: dict[str, Any] = {
    "C": check_positive,
    "negative_weight": check_positive,
    "prior": check_nonnegative,
    "feedback": check_count,
    "feedback_weight": check_positive,
    "hard_negatives": check_count,
    "hard_negative_weight": check_nonnegative,
    "hybrid_weight": check_fraction,
    "rocchio": check_nonnegative,
}


def check_search_options(
    options: Mapping[str, Any], *, own: Collection[str] = ()
) -> dict[str, Any]:
    """Validate ranking options of :meth:`ExemplarIndex.search`; return them normalised.

    Raises ``ValueError`` for an unknown name or a bad value, naming it. ``own`` are options a
    caller (a framework adapter) takes as arguments of its own, so they are refused here.
    """
    taken = sorted(set(own) & set(options))
    if taken:
        raise ValueError(
            f"set {', '.join(taken)} with the retriever's own argument(s), not in search_kwargs"
        )
    unknown = sorted(set(options) - set(SEARCH_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown search option(s) {', '.join(map(repr, unknown))}; "
            f"the options are {', '.join(SEARCH_OPTIONS)}"
        )
    checked = dict(options)
    if "mode" in checked and checked["mode"] not in MODES:
        raise ValueError(f"unknown mode {checked['mode']!r}; choose one of {', '.join(MODES)}")
    direction = checked.get("prior_direction", "query")
    if direction not in get_args(PriorDirection):
        raise ValueError(f"unknown prior_direction {direction!r}; choose 'query' or 'contrast'")
    for name, check in _OPTION_CHECKS.items():
        if name in checked:
            checked[name] = check(checked[name], name)
    return checked


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
        two z-scores, for ``"lda"`` the document's product with the exemplar LDA's direction.
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
        self._corpus = _Corpus.build(
            np.vstack([corpus.vectors, matrix]),
            [*corpus.ids, *new_ids],
            corpus.stats.extended(corpus.vectors, matrix),
        )
        return new_ids

    # -- the VectorStore protocol (exemplar_svm.stores), so a StoreIndex can run over it ------

    metric: Metric = "cosine"

    def count(self) -> int:
        return len(self)

    def nearest(self, vector: ArrayLike, k: int) -> tuple[list[str], NDArray[np.float32]]:
        """The ``k`` documents most similar to ``vector``, best first, with their vectors."""
        corpus = self._corpus
        direction = as_matrix(vector, "vector", dim=self.dim, dtype=np.float32)[0]
        everything = np.ones(len(corpus.ids), dtype=bool)
        rows = top_k((corpus.vectors @ direction).astype(np.float64), everything, check_k(k))
        return [corpus.ids[row] for row in rows], corpus.vectors[rows]

    def search_by_vector(self, vector: ArrayLike, k: int) -> list[str]:
        return self.nearest(vector, k)[0]

    def sample(self, size: int, seed: int) -> tuple[list[str], NDArray[np.float32]]:
        """A uniform random sample of ``min(size, len(self))`` documents, the same per seed."""
        corpus = self._corpus
        n = len(corpus.ids)
        size = min(check_count(size, "size"), n)
        rows = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
        return [corpus.ids[row] for row in rows], corpus.vectors[rows]

    def fetch(self, ids: Sequence[str]) -> NDArray[np.float32]:
        corpus = self._corpus
        rows = [corpus.row(item) for item in ids]
        return corpus.vectors[rows] if rows else np.empty((0, self.dim), dtype=np.float32)

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
        prior: float = DEFAULT_PRIOR,
        feedback: int = DEFAULT_FEEDBACK,
        feedback_weight: float = DEFAULT_FEEDBACK_WEIGHT,
        hybrid_weight: float = DEFAULT_HYBRID_WEIGHT,
        rocchio: float = DEFAULT_ROCCHIO,
        prior_direction: PriorDirection = "query",
        hard_negatives: int = 0,
        hard_negative_weight: float = 0.0,
    ) -> list[Hit]:
        """Rank the corpus for ``query`` and return the best ``k`` documents, best first.

        Parameters
        ----------
        query : array-like of shape (d,) or (m, d)
            The query embedding, or several (their shared concept is searched for).
        k : int, default=10
            How many hits; the whole remaining corpus if it holds fewer.
        mode : {"svm", "knn", "hybrid", "lda"}
            ``"svm"`` ranks by an exemplar SVM trained with the query and ``positives`` as
            positives and every other corpus document as a negative. ``"knn"`` ranks by cosine
            similarity to the normalised mean of the query and positive vectors (the centroid).
            ``"hybrid"`` ranks by a weighted mean of the z-scored SVM and kNN scores over the
            candidate documents. ``"lda"`` is a fast approximation of ``"svm"``, the exemplar
            LDA (Hariharan et al., 2012): it ranks by the difference between the positives' and
            the negatives' means, whitened by the corpus's covariance (the SVM's starting
            point), at about the cost of kNN; ``C``, ``prior`` and ``hybrid_weight`` do not
            apply. On the shared datasets its top 10 shares 8 to 9 documents with the exact
            SVM's (see the README's Speed section).
        positives, negatives : str, vector, or sequence of them, optional
            Extra examples, as corpus ids or vectors. Corpus documents named here are left out
            of the results.
        C : float
            The SVM's loss weight (see :func:`exemplar_svm.fit`); ``C -> 0`` ranks like the
            mean difference between the positives and the corpus.
        negative_weight : float
            How many anonymous corpus rows one named negative counts for in the SVM's loss.
        prior : float
            The text hint: the SVM's weight vector is kept near ``prior`` times the kNN
            direction (the objective regularises ``|w - prior * q|^2`` instead of ``|w|^2``).
            ``0`` is the plain exemplar SVM; with ``prior > 0`` and ``C -> 0`` it ranks like kNN.
        feedback : int
            Pseudo-relevance feedback: the top ``feedback`` kNN documents (at most half of the
            candidates) join the SVM's positives; they stay in the results.
        feedback_weight : float
            Weight of each feedback document as a positive, relative to the query's 1.
        hybrid_weight : float
            Weight of the SVM's z-score in ``"hybrid"`` (the kNN z-score gets the rest).
        prior_direction : {"query", "contrast"}
            Where ``prior`` points: the kNN direction (the positives' centre), or the contrast
            between the positives' centre and the corpus mean.
        hard_negatives : int
            How many of the nearest documents after the feedback ones (by kNN) get
            ``hard_negative_weight`` as negatives instead of 1.
        hard_negative_weight : float
            Their weight: 0 leaves them out of the negatives (likely relevant, so unlabeled),
            above 1 makes them count more (hard negatives).
        rocchio : float
            For the kNN ranking (``"knn"``, and the kNN half of ``"hybrid"``): subtract this many
            times the centroid of the named negatives from the centroid of the positives
            (Rocchio's relevance feedback); 0 ignores negatives.

        Returns
        -------
        list of Hit
        """
        k = check_k(k)
        # Every ranking option is a parameter of this method, named as in SEARCH_OPTIONS.
        arguments = locals()
        checked = check_search_options({name: arguments[name] for name in SEARCH_OPTIONS})
        plan = _plan(self._corpus, query, mode, positives, negatives, checked)
        if plan is None:
            return []
        return _finish(plan, _rankings([plan])[0], k)

    def search_batch(
        self,
        queries: Sequence[ArrayLike],
        k: int = 10,
        *,
        mode: Mode = DEFAULT_MODE,
        **options: Any,
    ) -> list[list[Hit]]:
        """Search for many queries at once: one list of hits per query, in order.

        Each entry of ``queries`` is what :meth:`search` takes as ``query`` (one vector, or
        several for a shared concept); ``options`` are :meth:`search`'s keyword arguments, the
        same for every query. All of them see the same corpus, even while another thread adds
        documents. ``"knn"`` without examples scores the whole batch in one matrix product; the
        SVM modes train one model per query, in groups whose passes over the corpus are shared,
        the groups spread over numpy's BLAS threads (each on one meanwhile: the limit is
        process-wide).
        """
        corpus = self._corpus  # one snapshot for the whole batch
        items = list(queries)
        k = check_k(k)
        options = dict(options)
        positives, negatives = options.pop("positives", None), options.pop("negatives", None)
        checked = check_search_options({**_SEARCH_DEFAULTS, **options, "mode": mode})
        plain = all(examples is None or len(examples) == 0 for examples in (positives, negatives))
        if mode == "knn" and plain and items and all(np.ndim(item) == 1 for item in items):
            matrix = unit_rows(as_matrix(np.vstack(items), "queries", dim=self.dim), "queries")
            scores = corpus.vectors @ matrix.T.astype(np.float32)
            everything = np.ones(len(corpus.vectors), dtype=bool)
            return [
                [
                    Hit(corpus.ids[row], float(scores[row, column]), float(scores[row, column]))
                    for row in top_k(scores[:, column].astype(np.float64), everything, k)
                ]
                for column in range(len(items))
            ]

        def answer(group: list[ArrayLike]) -> list[list[Hit]]:
            plans = [_plan(corpus, item, mode, positives, negatives, checked) for item in group]
            rankings = iter(_rankings([plan for plan in plans if plan is not None]))
            return [[] if plan is None else _finish(plan, next(rankings), k) for plan in plans]

        # The groups run side by side, one per BLAS thread, each on one: a solve's many small
        # steps keep one core busy, so spreading the groups over the cores beats lending every
        # BLAS call all of them (a group still shares its passes over the corpus).
        threads = blas_threads()
        size = max(1, min(_BATCH_GROUP, -(-len(items) // threads)))
        groups = [items[first : first + size] for first in range(0, len(items), size)]
        if threads == 1 or len(groups) == 1:
            return [hits for group in groups for hits in answer(group)]
        with ONE_BLAS_THREAD, ThreadPoolExecutor(min(threads, len(groups))) as pool:
            return [hits for part in pool.map(answer, groups) for hits in part]

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to the directory ``path``: arrays as ``.npy``, ids and format as JSON.

        The corpus statistics the SVM solver seeds with (the second moment) are saved too, when
        they have been computed. The manifest is replaced last, by an atomic rename, so a crash
        leaves either the old index or the new one, never a mix.
        """
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        # Only ever overwrite an index this library wrote; this raises for anything else.
        old = _read_manifest(folder) if (folder / MANIFEST).exists() else None
        corpus = self._corpus
        array_name, digest = _write_array(folder, "vectors", corpus.vectors)
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "count": len(self),
            "dim": self.dim,
            "dtype": "float32",
            "vectors": array_name,
            "sha256": digest,
            "ids": list(corpus.ids),
        }
        if corpus.stats.gram is not None:
            gram_name, gram_digest = _write_array(folder, "second-moment", corpus.stats.gram)
            manifest["second_moment"] = {"file": gram_name, "sha256": gram_digest}
        write_atomic(folder / MANIFEST, json.dumps(manifest).encode())
        if old is not None:
            keep = set(_array_files(manifest))
            for name in _array_files(old):
                if name not in keep:
                    (folder / name).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExemplarIndex:
        """Load an index written by :meth:`save`; anything else raises ``ValueError``."""
        folder = Path(path)
        manifest = _read_manifest(folder)
        expected = (manifest.get("count"), manifest.get("dim"))
        vectors = _read_array(
            folder, manifest.get("vectors"), manifest.get("sha256"), np.float32, expected
        )
        ids = manifest.get("ids")
        if not isinstance(ids, list) or len(ids) != len(vectors):
            raise ValueError(f"{folder / MANIFEST} is corrupt: ids do not match the vectors")
        stats = CorpusStats.of(vectors)
        saved = manifest.get("second_moment")
        if saved is not None:
            if not isinstance(saved, dict):
                raise ValueError(f"{folder / MANIFEST} is corrupt: bad 'second_moment' entry")
            dim = manifest.get("dim")
            stats.gram = _read_array(
                folder, saved.get("file"), saved.get("sha256"), np.float64, (dim, dim)
            )
        index = cls.__new__(cls)
        index._corpus = _Corpus.build(vectors, ids, stats)
        return index

    def __repr__(self) -> str:
        return f"ExemplarIndex(n={len(self)}, dim={self.dim})"


@dataclass(frozen=True)
class _Corpus:
    """The index's state, replaced whole on every change so readers always see one version."""

    vectors: NDArray[np.float32]  # normalised, read-only
    ids: tuple[str, ...]
    rows: dict[str, int]
    stats: CorpusStats

    @classmethod
    def build(
        cls, vectors: NDArray[Any], ids: list[str], stats: CorpusStats | None = None
    ) -> _Corpus:
        if len(ids) != len(vectors):
            raise ValueError(f"got {len(ids)} ids for {len(vectors)} vectors; pass one id each")
        check_ids(ids)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        matrix.flags.writeable = False
        stats = CorpusStats.of(matrix) if stats is None else stats
        return cls(matrix, tuple(ids), {item: row for row, item in enumerate(ids)}, stats)

    def row(self, item: str, name: str = "ids") -> int:
        try:
            return self.rows[item]
        except KeyError:
            raise ValueError(f"unknown id {item!r} in {name}: no document has it") from None

    def examples(self, examples: Examples, name: str) -> tuple[list[int], NDArray[Any]]:
        """Split examples into corpus rows (named by id) and extra normalised vectors."""
        ids, vectors = split_examples(examples, name, self.vectors.shape[1])
        return sorted({self.row(item, name) for item in ids}), vectors


_SEARCH_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(ExemplarIndex.search).parameters.items()
    if name in SEARCH_OPTIONS
}


@dataclass(frozen=True)
class _Plan:
    """One search up to the SVM's solve: what to rank, and the solver's arguments."""

    corpus: _Corpus
    candidates: NDArray[np.bool_]  # the rows a hit may be
    query_direction: NDArray[np.float32]
    knn_scores: NDArray[Any] | None
    problem: dict[str, Any] | None  # solve's arguments (None: rank by knn_scores)
    hybrid_weight: float | None  # mix with the kNN z-scores ("hybrid")
    lda: bool = False  # rank by the problem's exemplar LDA, not its SVM


def _plan(
    corpus: _Corpus,
    query: ArrayLike,
    mode: Mode,
    positives: Examples,
    negatives: Examples,
    checked: dict[str, Any],
) -> _Plan | None:
    """Everything of one search before the solve; None when no document can be a hit."""
    C, negative_weight, prior = checked["C"], checked["negative_weight"], checked["prior"]
    feedback, feedback_weight = checked["feedback"], checked["feedback_weight"]
    hard_negatives = checked["hard_negatives"]
    hard_negative_weight = checked["hard_negative_weight"]
    hybrid_weight, rocchio = checked["hybrid_weight"], checked["rocchio"]
    queries = unit_rows(as_matrix(query, "query", dim=corpus.vectors.shape[1]), "query")
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
        return None

    query_direction = direction_of(queries).astype(np.float32)
    positive_set = np.vstack([queries, pos_vectors, vectors[pos_rows]])
    centroid = direction_of(positive_set)
    knn_direction = centroid
    negative_set = np.vstack([neg_vectors, vectors[neg_rows]])
    if rocchio and len(negative_set):
        knn_direction = direction_of((centroid - rocchio * negative_set.mean(axis=0))[np.newaxis])
    knn_scores: NDArray[Any] | None = None
    if mode == "hybrid" or feedback or hard_negatives or mode == "knn":
        knn_scores = vectors @ knn_direction.astype(np.float32)
    if mode == "knn":
        return _Plan(corpus, candidates, query_direction, knn_scores, None, None)
    # Every corpus row that is not a positive is a negative; named ones weigh more.
    weights = np.ones(len(vectors))
    weights[neg_rows] = negative_weight
    weights[pos_rows] = 0.0
    positive_weights = np.ones(len(positive_set))
    # At most half the candidates, so a small corpus keeps negatives to train against.
    feedback = min(feedback, int(candidates.sum()) // 2)
    if feedback and knn_scores is not None:
        rows = top_k(knn_scores.astype(np.float64), candidates, feedback)
        positive_set = np.vstack([positive_set, vectors[rows]])
        positive_weights = np.r_[positive_weights, np.full(len(rows), feedback_weight)]
        weights[rows] = 0.0
    # The nearest documents after the feedback ones, keeping at least one negative.
    unweighted = candidates & (weights > 0)
    hard_negatives = min(hard_negatives, int(unweighted.sum()) - 1)
    if hard_negatives > 0 and knn_scores is not None:
        rows = top_k(knn_scores.astype(np.float64), unweighted, hard_negatives)
        weights[rows] = hard_negative_weight
    center = None
    if prior:
        direction = centroid
        if checked["prior_direction"] == "contrast":
            mean = corpus.stats.total / corpus.stats.count
            direction = direction_of((centroid - mean)[np.newaxis])
        center = prior * direction
    problem = {
        "positives": positive_set,
        "corpus": vectors,
        "corpus_weights": weights,
        "extra": neg_vectors,
        "extra_weights": np.full(len(neg_vectors), negative_weight),
        "C": C,
        "stats": corpus.stats,
        "positive_weights": positive_weights,
        "center": center,
    }
    weight = hybrid_weight if mode == "hybrid" else None
    return _Plan(
        corpus, candidates, query_direction, knn_scores, problem, weight, lda=mode == "lda"
    )


def _rankings(plans: Sequence[_Plan]) -> list[NDArray[Any]]:
    """Every plan's scores over the corpus (the plans share one corpus snapshot).

    The passes over the corpus that do not depend on a solve's inner steps (its first one and
    its verifications) are shared by the plans' solves, and the exemplar LDAs are scored in one
    pass: one matrix product each.
    """
    rankings: list[NDArray[Any] | None] = [plan.knn_scores for plan in plans]
    svm = [number for number, plan in enumerate(plans) if plan.problem and not plan.lda]
    solutions = solve_many([cast(dict[str, Any], plans[number].problem) for number in svm])
    for number, solution in zip(svm, solutions, strict=True):
        rankings[number] = solution[2]
    lda = [number for number, plan in enumerate(plans) if plan.problem and plan.lda]
    if lda:
        directions = [_lda_direction(cast(dict[str, Any], plans[number].problem)) for number in lda]
        products = corpus_products(plans[0].corpus.vectors, np.vstack(directions))
        for column, number in enumerate(lda):
            rankings[number] = products[:, column]
    assert all(ranking is not None for ranking in rankings)  # a plan without a problem: kNN
    return cast(list[NDArray[Any]], rankings)


def _lda_direction(problem: dict[str, Any]) -> NDArray[np.float64]:
    """The exemplar LDA's direction for a plan's solver arguments: the solver's seed (neither
    ``C`` nor a prior enters it)."""
    arguments = {name: value for name, value in problem.items() if name not in ("C", "center")}
    direction: NDArray[np.float64] = first_directions(**arguments)[0]
    return direction


def _finish(plan: _Plan, scores: NDArray[Any], k: int) -> list[Hit]:
    """The top ``k`` hits by ``scores`` (the SVM's or the kNN's) under ``plan``."""
    if plan.hybrid_weight is not None and plan.knn_scores is not None:
        scores = plan.hybrid_weight * _zscore(scores, plan.candidates) + (
            1 - plan.hybrid_weight
        ) * _zscore(plan.knn_scores, plan.candidates)
    rows = top_k(np.asarray(scores, dtype=np.float64), plan.candidates, k)
    similarity = plan.corpus.vectors[rows] @ plan.query_direction  # only the hits: no extra pass
    return [
        Hit(id=plan.corpus.ids[row], score=float(scores[row]), similarity=float(cosine))
        for row, cosine in zip(rows, similarity, strict=True)
    ]


def split_examples(examples: Examples, name: str, dim: int) -> tuple[list[str], NDArray[Any]]:
    """Split examples into ids (in order, each once) and normalised extra vectors."""
    empty = np.empty((0, dim))
    if examples is None:
        return [], empty
    if isinstance(examples, str):
        return [examples], empty
    if _is_numeric(examples):
        return [], unit_rows(as_matrix(cast(ArrayLike, examples), name, dim=dim), name)
    ids: dict[str, None] = {}
    vectors: list[NDArray[Any]] = []
    items: Iterable[Any] = examples  # type: ignore[assignment]
    for item in items:
        if isinstance(item, str):
            ids[item] = None
        else:
            vectors.append(as_matrix(item, name, dim=dim))
    stacked = unit_rows(np.vstack(vectors), name) if vectors else empty
    return list(ids), stacked


def _is_numeric(value: object) -> bool:
    """True for one vector or one matrix of numbers (not ids, not a list of examples)."""
    try:
        array = np.asarray(value)
    except ValueError:  # ragged: a list of examples of different kinds
        return False
    return array.size > 0 and array.ndim <= 2 and array.dtype.kind in "fiub"


def direction_of(vectors: NDArray[Any]) -> NDArray[np.float64]:
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


def top_k(scores: NDArray[np.float64], mask: NDArray[np.bool_], k: int) -> NDArray[np.intp]:
    """Rows of the ``k`` best candidates, best first; ties go to the lower row, every run."""
    rows = np.flatnonzero(mask)
    values = scores[rows]
    if k < len(rows):
        cut = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= cut
        rows, values = rows[keep], values[keep]
    order = np.lexsort((rows, -values))[:k]
    return rows[order]


def _write_array(folder: Path, prefix: str, array: NDArray[Any]) -> tuple[str, str]:
    """Write ``array`` as ``<prefix>-<hash>.npy`` (atomically); return its name and sha256."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    name = f"{prefix}-{digest[:16]}.npy"
    write_atomic(folder / name, payload)
    return name, digest


def _read_array(
    folder: Path, name: object, digest: object, dtype: type, shape: tuple[object, ...]
) -> NDArray[Any]:
    """Read an array named in the manifest, refusing anything that is not what was written."""
    if not isinstance(name, str) or Path(name).name != name:
        raise ValueError(f"{folder / MANIFEST} is corrupt: bad array entry {name!r}")
    payload = (folder / name).read_bytes()
    if hashlib.sha256(payload).hexdigest() != digest:
        raise ValueError(f"{folder / name} is corrupt: its checksum does not match")
    try:
        array: NDArray[Any] = np.load(io.BytesIO(payload), allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{folder / name} is not a readable .npy array: {exc}") from None
    if array.dtype != dtype or array.shape != shape:
        raise ValueError(
            f"{folder / name} is corrupt: {array.dtype} {array.shape}, expected "
            f"{np.dtype(dtype)} {shape}"
        )
    return array


def _array_files(manifest: dict[str, Any]) -> list[str]:
    files = [str(manifest.get("vectors"))]
    saved = manifest.get("second_moment")
    if isinstance(saved, dict):
        files.append(str(saved.get("file")))
    return files


def _read_manifest(folder: Path) -> dict[str, Any]:
    return read_versioned_json(
        folder / MANIFEST, format=FORMAT, version=FORMAT_VERSION, what="an exemplar-svm index"
    )
