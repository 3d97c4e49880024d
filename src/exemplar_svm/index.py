"""ExemplarIndex: a corpus of embeddings ranked per query by kNN, the exemplar SVM or both."""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, cast, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm import _index_files
from exemplar_svm._blas import ONE_BLAS_THREAD, blas_threads
from exemplar_svm._checks import (
    as_id_list,
    as_matrix,
    check_count,
    check_fraction,
    check_ids,
    check_k,
    check_nonnegative,
    check_positive,
    check_rows,
    unit_rows,
)
from exemplar_svm._index_files import IndexState
from exemplar_svm._locks import WriteLock
from exemplar_svm._solver import (
    MEMORY_SHARE,
    CorpusStats,
    corpus_products,
    first_directions,
    solve_many,
)
from exemplar_svm.stores import Metric

if TYPE_CHECKING:
    from exemplar_svm.calibration import Calibration

Mode = Literal["auto", "prf", "svm", "knn", "hybrid", "lda"]
PriorDirection = Literal["query", "contrast"]
MODES: tuple[str, ...] = get_args(Mode)

#: Examples for :meth:`ExemplarIndex.search`: corpus ids, vectors, or a mix of both.
Examples = Union[str, ArrayLike, Sequence[Union[str, ArrayLike]], None]  # noqa: UP007

#: Defaults of :meth:`ExemplarIndex.search`, shared by the framework adapters. Chosen on the tune
#: half of the shared datasets' queries and reported on the other half (see docs/quality.md):
#: ``"auto"`` ranks a query alone by adaptive dense pseudo-relevance feedback (``"prf"``, about
#: twice the cost of kNN) and a query with examples by the hybrid of that ranking and an
#: exemplar SVM trained on the examples and the feedback documents.
DEFAULT_MODE: Mode = "auto"
DEFAULT_C = 0.003
DEFAULT_NEGATIVE_WEIGHT = 1000.0
DEFAULT_PRIOR = 0.0
DEFAULT_FEEDBACK = 50
DEFAULT_FEEDBACK_THRESHOLD = 4.0
DEFAULT_FEEDBACK_WEIGHT = 0.5
DEFAULT_PRF_WEIGHT = 2.0
DEFAULT_HYBRID_WEIGHT = 0.7
DEFAULT_ROCCHIO = 0.0
DEFAULT_DEMOTE = 0.25

#: Every ranking option of :meth:`ExemplarIndex.search` (everything but the query, ``k`` and the
#: examples) with its default, as the framework adapters pass them through.
SEARCH_DEFAULTS: dict[str, Any] = {
    "mode": DEFAULT_MODE,
    "C": DEFAULT_C,
    "negative_weight": DEFAULT_NEGATIVE_WEIGHT,
    "prior": DEFAULT_PRIOR,
    "prior_direction": "query",
    "feedback": DEFAULT_FEEDBACK,
    "feedback_threshold": DEFAULT_FEEDBACK_THRESHOLD,
    "feedback_weight": DEFAULT_FEEDBACK_WEIGHT,
    "prf_weight": DEFAULT_PRF_WEIGHT,
    "hard_negatives": 0,
    "hard_negative_weight": 0.0,
    "hybrid_weight": DEFAULT_HYBRID_WEIGHT,
    "rocchio": DEFAULT_ROCCHIO,
    "demote": DEFAULT_DEMOTE,
}
SEARCH_OPTIONS: tuple[str, ...] = tuple(SEARCH_DEFAULTS)

# At most this many queries of a batch share their passes over the corpus (each holds a few
# arrays over all rows meanwhile).
_BATCH_GROUP = 8
# What one query in flight holds per corpus row when its solver works on the whole problem in
# place, measured (benchmarks/memory.py: 0.21 of a 100k x 384 corpus, with positives): its
# plan's arrays and the solver's outputs over every row.
_QUERY_BYTES_PER_ROW = 320
# What a query's temporaries take beyond its solver's share (benchmarks/memory.py).
_SHARE_MARGIN = 0.03
# The queries in flight hold at most a quarter of the corpus matrix, or this much on a small
# corpus (a quarter of 10,000 x 384 floats is 3.8 MB; sharing passes is worth more there).
_BATCH_MEMORY_FLOOR = 16 * 2**20

# Pseudo-relevance feedback always takes at least this many documents (fewer only when
# ``feedback`` says so), so a query whose neighbours are all alike still gets some.
_MIN_FEEDBACK = 3
# Feedback takes at most this share of the candidates: on a small corpus "the nearest few" are
# a large part of it, and moving the query towards them only blurs it.
FEEDBACK_SHARE = 10
# Adaptive feedback skips documents this similar to the query: copies of it.
_DUPLICATE = 0.99

#: The largest value each ranking option takes (see :meth:`ExemplarIndex.search`). Up to these
#: the solver stays well-conditioned and a search's memory bounded; beyond them an option
#: either breaks the solve (``C`` or a weight of 1e15: a singular system; ``prior`` of 1e39:
#: no hits) or has no further effect, so a larger value is refused as a likely mistake.
OPTION_BOUNDS: dict[str, float] = {
    "C": 1e6,
    "negative_weight": 1e6,
    "prior": 1e3,
    "feedback": 100,
    "feedback_threshold": 100.0,
    "feedback_weight": 1e3,
    "prf_weight": 100.0,
    "hard_negatives": 1000,
    "hard_negative_weight": 1e6,
    "hybrid_weight": 1.0,
    "rocchio": 100.0,
    "demote": 1e3,
}
#: At most this many query vectors in one search (one query of several vectors).
MAX_QUERY_ROWS = 64
#: At most this many positive and negative examples (ids and vectors together) per search.
#: Each positive costs the SVM solver about 28 bytes per corpus row (its outputs on every row);
#: a negative costs the demotion 4 bytes per row, in passes bounded to a quarter of the corpus.
MAX_EXAMPLES: dict[str, int] = {"positives": 64, "negatives": 1000}

_OPTION_CHECKS: dict[str, Any] = {
    "C": check_positive,
    "negative_weight": check_positive,
    "prior": check_nonnegative,
    "feedback": check_count,
    "feedback_threshold": check_nonnegative,
    "feedback_weight": check_positive,
    "prf_weight": check_nonnegative,
    "hard_negatives": check_count,
    "hard_negative_weight": check_nonnegative,
    "rocchio": check_nonnegative,
    "demote": check_nonnegative,
}


def check_search_options(
    options: Mapping[str, Any], *, own: Collection[str] = ()
) -> dict[str, Any]:
    """Validate ranking options of :meth:`ExemplarIndex.search`; return them normalised.

    Raises ``ValueError`` for an unknown name or a bad value, naming it. ``own`` are options a
    caller (a framework adapter) takes as arguments of its own, so they are refused here.
    ``None`` values are dropped (they mean "the default").
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
    checked = {name: value for name, value in options.items() if value is not None}
    if "mode" in checked and checked["mode"] not in MODES:
        raise ValueError(f"unknown mode {checked['mode']!r}; choose one of {', '.join(MODES)}")
    direction = checked.get("prior_direction", "query")
    if direction not in get_args(PriorDirection):
        raise ValueError(f"unknown prior_direction {direction!r}; choose 'query' or 'contrast'")
    for name, check in _OPTION_CHECKS.items():
        if name in checked:
            most = OPTION_BOUNDS[name]
            checked[name] = check(checked[name], name, int(most) if check is check_count else most)
    if "hybrid_weight" in checked:
        checked["hybrid_weight"] = check_fraction(checked["hybrid_weight"], "hybrid_weight")
    return checked


def resolve_options(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Every search option: the defaults, overridden by each layer in turn (``None`` skipped)."""
    resolved = dict(SEARCH_DEFAULTS)
    for layer in layers:
        resolved.update(check_search_options(layer))
    return resolved


FORMAT = _index_files.FORMAT
FORMAT_VERSION = _index_files.VERSION
MANIFEST = _index_files.MANIFEST


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
        id_list = [str(i) for i in range(len(matrix))] if ids is None else as_id_list(ids)
        self._corpus = _Corpus.build(matrix, id_list)
        self._settings: dict[str, Any] = {}
        # Writers take turns; readers use the immutable corpus snapshot they started with.
        self._write_lock = WriteLock()

    @property
    def settings(self) -> dict[str, Any]:
        """The ranking options :meth:`search` uses where the caller passes none (a copy):
        those :meth:`calibrate` chose, else empty (the library's defaults apply).

        Assign a mapping of search options to set them yourself (validated, ``None`` values
        dropped), or ``{}`` to go back to the library's defaults; :meth:`save` keeps them."""
        return dict(self._settings)

    @settings.setter
    def settings(self, options: Mapping[str, Any]) -> None:
        if not isinstance(options, Mapping):
            raise TypeError(
                f"settings must be a mapping of search options, got {type(options).__name__}"
            )
        self._settings = check_search_options(options)

    def calibrate(
        self,
        queries: ArrayLike | None = None,
        relevant: Sequence[Any] | None = None,
        *,
        texts: Sequence[str] | None = None,
        titles: Sequence[str | None] | None = None,
        embedder: Any = None,
        candidates: Mapping[str, Mapping[str, Any]] | None = None,
        max_queries: int = 200,
        seed: int = 0,
        metric: str = "nDCG@10",
        exclude: Sequence[Collection[str]] | None = None,
    ) -> Calibration:
        """Choose the ranking settings for this corpus and keep them as :attr:`settings`.

        Every candidate setting (:data:`exemplar_svm.calibration.CANDIDATES` by default) ranks
        every query (``k=100``); the one with the best mean ``metric`` becomes the index's
        :attr:`settings`, which :meth:`search` and :meth:`search_batch` use for every option
        the caller leaves out and :meth:`save` stores with the index. Ties go to the earlier
        candidate, so the library's default stays unless another does better.

        Two routes:

        - **labelled**: ``queries`` (query vectors) and ``relevant`` (their relevant ids), when
          you have a handful of judged queries;
        - **synthetic**: ``texts`` (the documents' texts, in row order) and ``embedder``; each
          of at most ``max_queries`` documents (drawn with ``np.random.default_rng(seed)``)
          is searched for by its title or first sentence (see
          :func:`exemplar_svm.calibration.synthetic_queries`) and is its only relevant
          document. A biased proxy: a known item shares its words with its query, so these
          queries favour settings that stay near the query. On the three shared datasets
          they picked kNN-like settings that ranked worse on held-out labelled queries than
          the library's default, where labelled tune-half queries picked the default or
          better (``benchmarks/calibration.py``): prefer labelled queries, even a few dozen.

        Parameters
        ----------
        queries : array-like of shape (m, d), optional
            Labelled route: one query vector per row, from the corpus's embedding model.
        relevant : sequence of (list of str or dict of str to float), optional
            Labelled route: per query, the ids of its relevant documents, or ids with gains.
        texts : sequence of str, optional
            Synthetic route: one text per document, in the index's row order.
        titles : sequence of str or None, optional
            Synthetic route: one title (or ``None``) per document; a title is the query.
        embedder : Embedder, optional
            Synthetic route: the model that embedded the corpus (anything
            :func:`exemplar_svm.as_embedder` accepts); queries are embedded as queries.
        candidates : mapping of str to mapping, optional
            Named candidate settings, in order of preference;
            :data:`exemplar_svm.calibration.CANDIDATES` by default.
        max_queries : int, default=200
            Synthetic route: at most this many synthetic queries.
        seed : int, default=0
            Synthetic route: seed of the sample of documents.
        metric : {"nDCG@10", "MAP@100"}, default="nDCG@10"
            What decides.
        exclude : sequence of collections of str, optional
            Labelled route: per query, ids left out of its ranking and judgements (for query
            by example, the query document).

        Returns
        -------
        Calibration
            The choice and every candidate's scores (``to_markdown()`` prints them).

        Examples
        --------
        >>> import numpy as np
        >>> from exemplar_svm import ExemplarIndex
        >>> rng = np.random.default_rng(0)
        >>> index = ExemplarIndex(rng.normal(size=(200, 16)))
        >>> queries = index.vectors[:20] + 0.1 * rng.normal(size=(20, 16))
        >>> result = index.calibrate(queries, [[str(row)] for row in range(20)])
        >>> result.source, result.n_queries, index.settings == result.settings
        ('labelled', 20, True)
        >>> index.settings = {}  # back to the library's defaults
        """
        from exemplar_svm import calibration
        from exemplar_svm.embedders import as_embedder

        chosen = calibration.CANDIDATES if candidates is None else candidates
        labelled = queries is not None or relevant is not None
        synthetic = texts is not None or titles is not None or embedder is not None
        if labelled and synthetic:
            raise ValueError(
                "pass either labelled queries (queries= and relevant=) or the documents' texts "
                "(texts= and embedder=) for synthetic queries, not both"
            )
        if labelled:
            if queries is None or relevant is None:
                raise ValueError("the labelled route needs both queries= and relevant=")
            result = calibration.calibrate(
                self, queries, relevant, candidates=chosen, metric=metric, exclude=exclude
            )
        elif synthetic:
            if texts is None or embedder is None:
                raise ValueError(
                    "the synthetic route needs texts= (one per document) and embedder= (the "
                    "model that embedded the corpus)"
                )
            if exclude is not None:
                raise ValueError("exclude applies to labelled queries only")
            vectors, judged = calibration.synthetic_relevance(
                self,
                texts,
                as_embedder(embedder),
                titles=titles,
                max_queries=max_queries,
                seed=seed,
            )
            result = calibration.calibrate(
                self, vectors, judged, candidates=chosen, metric=metric, source="synthetic"
            )
        else:
            raise ValueError(
                "calibrate needs labelled queries (queries= and relevant=) or the documents' "
                "texts (texts= and embedder=) to build synthetic queries from"
            )
        self._settings = dict(result.settings)
        return result

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

        Safe to call from several threads at once (the adds are applied one after the other,
        none is lost) and while other threads search: they finish on the corpus they started
        with. Returns the ids of the new documents.

        Without ``ids`` a new document's id is its row number as a string (``str(row)``, like
        the constructor's defaults). Where such an id is already taken (by an id you chose, in
        the constructor or an earlier add), ``ValueError`` is raised and nothing is added:
        pass ``ids`` then.
        """
        matrix = unit_rows(as_matrix(vectors, "vectors", dim=self.dim, dtype=np.float32), "vectors")
        given = None if ids is None else as_id_list(ids)
        if given is not None and len(given) != len(matrix):
            raise ValueError(f"got {len(given)} ids for {len(matrix)} vectors; pass one id each")
        # Readers never lock: they read the snapshot in self._corpus, which is replaced whole.
        # Writers read, extend and publish it one at a time, or one of two would be lost.
        with self._write_lock:
            corpus = self._corpus
            start = len(corpus.ids)
            new_ids = [str(start + i) for i in range(len(matrix))] if given is None else given
            clash = next((item for item in new_ids if item in corpus.rows), None)
            if clash is not None and given is None:
                raise ValueError(
                    f"the default id {clash!r} of new row {start + new_ids.index(clash)} (ids "
                    "default to the row number) is already the id of another document, one you "
                    "named yourself; pass ids= for these vectors"
                )
            if clash is not None:
                raise ValueError(
                    f"duplicate id {clash!r}: the index already holds a document with it"
                )
            self._corpus = _Corpus.build(
                np.vstack([corpus.vectors, matrix]),
                [*corpus.ids, *new_ids],
                corpus.stats.extended(corpus.vectors, matrix),
            )
        return list(new_ids)

    # -- the VectorStore protocol (exemplar_svm.stores), so a StoreIndex can run over it ------

    metric: Metric = "cosine"

    def count(self) -> int:
        return len(self)

    def nearest(self, vector: ArrayLike, k: int) -> tuple[list[str], NDArray[np.float32]]:
        """The ``k`` documents most similar to ``vector``, best first, with their vectors."""
        corpus = self._corpus
        direction = as_matrix(vector, "vector", dim=self.dim, dtype=np.float32)[0]
        everything = np.ones(len(corpus.ids), dtype=bool)
        scores = corpus.tie((corpus.vectors @ direction).astype(np.float64))
        rows = top_k(scores, everything, check_k(k))
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
        mode: Mode | None = None,
        positives: Examples = None,
        negatives: Examples = None,
        C: float | None = None,
        negative_weight: float | None = None,
        prior: float | None = None,
        feedback: int | None = None,
        feedback_threshold: float | None = None,
        feedback_weight: float | None = None,
        prf_weight: float | None = None,
        hybrid_weight: float | None = None,
        rocchio: float | None = None,
        demote: float | None = None,
        prior_direction: PriorDirection | None = None,
        hard_negatives: int | None = None,
        hard_negative_weight: float | None = None,
    ) -> list[Hit]:
        """Rank the corpus for ``query`` and return the best ``k`` documents, best first.

        Every ranking option left at ``None`` takes the index's calibrated setting (see
        :meth:`calibrate`), else the library's default (:data:`SEARCH_DEFAULTS`). Each option
        has a range (:data:`OPTION_BOUNDS`, given below) in which the solver stays
        well-conditioned and the search's memory bounded; a value outside it, of the wrong
        type (``True`` is not a number here) or not finite raises ``ValueError``. Vectors must
        be real numbers: complex values and strings are refused, not converted.

        Parameters
        ----------
        query : array-like of shape (d,) or (m, d)
            The query embedding, or several (their shared concept is searched for); at most
            :data:`MAX_QUERY_ROWS` (64) rows.
        k : int, default=10
            How many hits; the whole remaining corpus if it holds fewer.
        mode : {"auto", "prf", "svm", "knn", "hybrid", "lda"}, default="auto"
            ``"auto"`` is ``"prf"`` for a query alone (or with negatives only) and ``"hybrid"``
            when positives are given: the combination that ranked best on the shared datasets
            in each case. ``"prf"`` is dense pseudo-relevance feedback: kNN with the query
            moved towards its nearest documents (``q + prf_weight * weighted mean of the
            feedback documents``). ``"svm"`` ranks by an exemplar SVM trained with the query,
            ``positives`` and the feedback documents as positives and every other corpus
            document as a negative. ``"knn"`` ranks by cosine similarity to the normalised mean
            of the query and positive vectors (the centroid). ``"hybrid"`` ranks by a weighted
            mean of the z-scored SVM and ``"prf"`` scores (plain kNN scores when
            ``prf_weight=0``) over the candidate documents. ``"lda"`` is a fast approximation
            of ``"svm"``, the exemplar LDA (Hariharan et al., 2012): the difference between the
            positives' and the negatives' means, whitened by the corpus's covariance, at about
            the cost of kNN; ``C``, ``prior`` and ``hybrid_weight`` do not apply.
        positives, negatives : str, vector, or sequence of them, optional
            Extra examples, as corpus ids or vectors. Corpus documents named here are left out
            of the results. At most 64 positives and 1000 negatives (:data:`MAX_EXAMPLES`).
        C : float, default=0.003
            The SVM's loss weight (see :func:`exemplar_svm.fit`), in (0, 1e6]; ``C -> 0``
            ranks like the mean difference between the positives and the corpus.
        negative_weight : float, default=1000
            How many anonymous corpus rows one named negative counts for in the SVM's loss
            (at most as many as make all named negatives together half the corpus), in
            (0, 1e6].
        prior : float, default=0
            The text hint: the SVM's weight vector is kept near ``prior`` times the kNN
            direction (the objective regularises ``|w - prior * q|^2`` instead of ``|w|^2``);
            in [0, 1000].
        feedback : int, default=50
            Pseudo-relevance feedback: at most this many of the nearest documents (by kNN, at
            most a tenth of the candidates) are taken as feedback. They move the query in
            ``"prf"`` and join the SVM's positives in the SVM modes; they stay in the results.
            0 turns feedback off; at most 100.
        feedback_threshold : float, default=4
            The feedback documents are the nearest ones whose kNN score is at least this many
            standard deviations above the corpus mean (at least 3 of them, at most
            ``feedback``), each weighted by its excess over the threshold plus 0.5 (at least
            0.1) in ``"prf"``: a query with many close neighbours takes many. ``0`` takes
            exactly ``feedback`` documents, equally weighted (the classic dense PRF). In
            [0, 100].
        feedback_weight : float, default=0.5
            Weight of each feedback document as a positive of the SVM, relative to the
            query's 1; in (0, 1000].
        prf_weight : float, default=2
            How far ``"prf"`` (and the kNN side of ``"hybrid"``) moves the query towards the
            feedback documents' weighted mean; 0 is plain kNN. In [0, 100].
        hybrid_weight : float, default=0.7
            Weight of the SVM's z-score in ``"hybrid"`` (the kNN side gets the rest); in
            [0, 1].
        rocchio : float, default=0
            For the kNN ranking: subtract this many times the centroid of the named negatives
            from the centroid of the positives (Rocchio's relevance feedback). Off by default:
            subtracting a direction also lifts the documents unlike the negatives. In [0, 100].
        demote : float, default=0.25
            Named negatives only ever push documents down: a document more similar (by cosine)
            to one of them than to the positives' centroid loses ``demote`` times the excess,
            in the units of the mode's score. Documents unlike every negative keep their score.
            In [0, 1000].
        prior_direction : {"query", "contrast"}, default="query"
            Where ``prior`` points: the kNN direction (the positives' centre), or the contrast
            between the positives' centre and the corpus mean.
        hard_negatives : int, default=0
            How many of the nearest documents after the feedback ones (by kNN) get
            ``hard_negative_weight`` as negatives instead of 1; at most 1000.
        hard_negative_weight : float, default=0
            Their weight: 0 leaves them out of the negatives (likely relevant, so unlabeled),
            above 1 makes them count more (hard negatives). In [0, 1e6].

        Returns
        -------
        list of Hit
        """
        k = check_k(k)
        # Every ranking option is a parameter of this method, named as in SEARCH_OPTIONS.
        arguments = locals()
        checked = resolve_options(
            self._settings, {name: arguments[name] for name in SEARCH_OPTIONS}
        )
        plan = _plan(self._corpus, query, positives, negatives, checked)
        if plan is None:
            return []
        return _finish(plan, _rankings([plan], k)[0], k)

    def search_batch(
        self,
        queries: Sequence[ArrayLike],
        k: int = 10,
        *,
        mode: Mode | None = None,
        **options: Any,
    ) -> list[list[Hit]]:
        """Search for many queries at once: one list of hits per query, in order.

        Each entry of ``queries`` is what :meth:`search` takes as ``query`` (one vector, or
        several for a shared concept); ``options`` are :meth:`search`'s keyword arguments, the
        same for every query. All of them see the same corpus, even while another thread adds
        documents. ``"knn"`` without examples scores the batch in matrix products of at most
        ``d / 4`` queries each (their scores take at most a quarter of the corpus matrix); the
        SVM modes train one model per query, in groups whose passes over the corpus are shared,
        the groups spread over numpy's BLAS threads (each on one meanwhile: the limit is
        process-wide). A batch of any size is answered in such chunks: at most one group per
        BLAS thread is in flight, a group of at most 8 queries and of fewer when their arrays
        over the corpus (about 320 bytes per row each) would take more than a quarter of the
        corpus matrix (or than 16 MiB, on a corpus under 64 MiB); when only one query fits, the
        batch runs one query at a time. An empty batch returns ``[]``.
        """
        corpus = self._corpus  # one snapshot for the whole batch
        if isinstance(queries, (str, bytes)):
            raise TypeError("queries must be a sequence of query vectors, not a string")
        items = list(queries)
        k = check_k(k)
        options = dict(options)
        positives, negatives = options.pop("positives", None), options.pop("negatives", None)
        checked = resolve_options(self._settings, {**options, "mode": mode})
        if not items:
            return []
        plain = all(examples is None or len(examples) == 0 for examples in (positives, negatives))
        if checked["mode"] == "knn" and plain and all(np.ndim(item) == 1 for item in items):
            return _knn_batch(corpus, items, k)

        memory = max(corpus.vectors.nbytes // 4, _BATCH_MEMORY_FLOOR)
        in_flight = max(1, memory // (_QUERY_BYTES_PER_ROW * len(corpus.vectors)))
        # Each solve's working set takes its part of the same budget.
        share = min(MEMORY_SHARE, memory / in_flight / corpus.vectors.nbytes - _SHARE_MARGIN)

        def answer(group: list[ArrayLike]) -> list[list[Hit]]:
            plans = [_plan(corpus, item, positives, negatives, checked) for item in group]
            rankings = iter(_rankings([plan for plan in plans if plan is not None], k, share))
            return [[] if plan is None else _finish(plan, next(rankings), k) for plan in plans]

        # The groups run side by side, one per BLAS thread, each on one: a solve's many small
        # steps keep one core busy, so spreading the groups over the cores beats lending every
        # BLAS call all of them (a group still shares its passes over the corpus).
        # At most one group per thread in flight, together within a quarter of the corpus (one
        # query at a time if that is all it holds): a batch of any size runs in such chunks.
        threads = min(blas_threads(), in_flight)
        size = max(1, min(_BATCH_GROUP, in_flight // threads, -(-len(items) // threads)))
        groups = [items[first : first + size] for first in range(0, len(items), size)]
        if threads == 1 or len(groups) == 1:
            return [hits for group in groups for hits in answer(group)]
        with ONE_BLAS_THREAD, ThreadPoolExecutor(min(threads, len(groups))) as pool:
            return [hits for part in pool.map(answer, groups) for hits in part]

    # -- persistence -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Save to the directory ``path``: one version of the index, crash-safe.

        The vectors go to ``.npy`` (no pickle), the ids to JSON, with the corpus statistics the
        SVM solver seeds with (the second moment) when they have been computed, and the
        :attr:`settings`. Each file is named after its content and listed, with its size and
        checksum, in the manifest ``index.json``, which is written last by an atomic rename;
        the previous version's files are removed only after that. A process killed at any
        point leaves the old index or the new one, never a mix, and the next save or load
        removes its leftovers. Saves to one folder wait for each other, across processes
        too (an exclusive ``flock`` on the folder, where the platform has it); a load needs no
        lock (see :meth:`load`). A folder holding something else than an index is never
        overwritten: ``ValueError``.
        """
        _index_files.save(Path(path), self._state())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExemplarIndex:
        """Load an index written by :meth:`save` (format version 1 or 2).

        Only regular files inside the folder are opened (no FIFO, device, directory or
        symlink out of it), each file's size is checked against the manifest before it is
        read, the manifest's JSON is bounded (64 MiB, 64 levels of nesting), every file's
        checksum is verified (the ids' too) and the rows are validated as the constructor
        validates them (finite, unit length). A load that races a save in another process
        reads the old or the new version, retrying when the save removed files it was about
        to read. Anything else raises ``ValueError`` naming the file.
        """
        folder = Path(path)
        state = _index_files.load(folder)
        return cls._from_state(state, folder / MANIFEST)

    @classmethod
    def _from_state(cls, state: IndexState, manifest: Path) -> ExemplarIndex:
        """An index of saved ``state``, its settings validated (``manifest`` names them)."""
        try:
            settings = check_search_options(state.settings)
        except ValueError as exc:
            raise ValueError(f"{manifest} is corrupt: bad 'settings' ({exc})") from None
        stats = CorpusStats.of(state.vectors)
        stats.gram = state.gram
        index = cls.__new__(cls)
        index._corpus = _Corpus.build(state.vectors, state.ids, stats)
        index._settings = settings
        index._write_lock = WriteLock()
        return index

    def _state(self) -> IndexState:
        """What :meth:`save` writes, of one snapshot (a retriever persists it with its own)."""
        corpus = self._corpus
        return IndexState(corpus.vectors, list(corpus.ids), corpus.stats.gram, self._settings)

    def __repr__(self) -> str:
        return f"ExemplarIndex(n={len(self)}, dim={self.dim})"


@dataclass(frozen=True)
class _Corpus:
    """The index's state, replaced whole on every change so readers always see one version."""

    vectors: NDArray[np.float32]  # normalised, read-only
    ids: tuple[str, ...]
    rows: dict[str, int]
    stats: CorpusStats
    # Each row's first row with the same bytes, or None when no two rows are equal: a BLAS
    # product may score equal rows differently in the last bits (by where a thread's block
    # starts), so their ties are broken by row order only once they share one score.
    canonical: NDArray[np.intp] | None

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
        rows = {item: row for row, item in enumerate(ids)}
        return cls(matrix, tuple(ids), rows, stats, first_equal_rows(matrix))

    def tie(self, scores: NDArray[Any]) -> NDArray[Any]:
        """``scores`` (one per row, or one column per query) with equal rows scored alike."""
        return scores if self.canonical is None else scores[self.canonical]

    def row(self, item: str, name: str = "ids") -> int:
        try:
            return self.rows[item]
        except KeyError:
            raise ValueError(f"unknown id {item!r} in {name}: no document has it") from None

    def examples(self, examples: Examples, name: str) -> tuple[list[int], NDArray[Any]]:
        """Split examples into corpus rows (named by id) and extra normalised vectors."""
        ids, vectors = split_examples(examples, name, self.vectors.shape[1])
        return sorted({self.row(item, name) for item in ids}), vectors


@dataclass(frozen=True)
class _Plan:
    """One search up to the SVM's solve: what to rank, and the solver's arguments."""

    corpus: _Corpus
    candidates: NDArray[np.bool_]  # the rows a hit may be
    query_direction: NDArray[np.float32]
    knn_scores: NDArray[Any] | None  # the kNN side: kNN or PRF scores
    problem: dict[str, Any] | None  # solve's arguments (None: rank by knn_scores)
    hybrid_weight: float | None  # mix with the kNN z-scores ("hybrid")
    lda: bool = False  # rank by the problem's exemplar LDA, not its SVM
    # How far each row is more like a named negative than like the positives (cosine), and
    # how strongly that demotes it; None without negatives.
    excess: NDArray[np.float64] | None = None
    demote: float = 0.0
    positive_scores: NDArray[Any] | None = None  # cosine to the positives' centroid


def _plan(
    corpus: _Corpus,
    query: ArrayLike,
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
    prf_weight = checked["prf_weight"]
    queries = as_queries(query, corpus.vectors.shape[1])
    pos_rows, pos_vectors = corpus.examples(positives, "positives")
    neg_rows, neg_vectors = corpus.examples(negatives, "negatives")
    both = set(pos_rows) & set(neg_rows)
    if both:
        clash = corpus.ids[min(both)]
        raise ValueError(f"document {clash!r} is named both as a positive and a negative")
    mode = concrete_mode(checked["mode"], bool(pos_rows or len(pos_vectors)))

    vectors = corpus.vectors
    candidates = np.ones(len(vectors), dtype=bool)
    candidates[pos_rows + neg_rows] = False
    if not candidates.any():
        return None

    query_direction = direction_of(queries).astype(np.float32)
    positive_set = np.vstack([queries, pos_vectors, vectors[pos_rows]])
    centroid = direction_of(positive_set)
    negative_set = np.vstack([neg_vectors, vectors[neg_rows]])
    knn_direction = centroid
    if rocchio and len(negative_set):
        knn_direction = direction_of((centroid - rocchio * negative_set.mean(axis=0))[np.newaxis])
    feedback = 0 if mode == "knn" else min(feedback, int(candidates.sum()) // FEEDBACK_SHARE)
    # The textbook SVM (no feedback, no hard negatives) needs no kNN pass.
    knn_scores: NDArray[Any] | None = None
    if mode in ("knn", "prf", "hybrid") or feedback or hard_negatives:
        knn_scores = vectors @ knn_direction.astype(np.float32)
    positive_scores = excess = None
    if len(negative_set) and checked["demote"]:
        positive_scores, excess = _demotion(vectors, centroid, negative_set)
    demotion = {"excess": excess, "demote": checked["demote"], "positive_scores": positive_scores}
    feedback_rows, feedback_weights = _feedback(
        knn_scores, candidates, feedback, checked["feedback_threshold"]
    )
    kind_scores = knn_scores
    if mode in ("prf", "hybrid") and prf_weight and len(feedback_rows):
        moved = knn_direction + prf_weight * (feedback_weights @ vectors[feedback_rows])
        kind_scores = vectors @ direction_of(moved[np.newaxis]).astype(np.float32)
    if mode in ("knn", "prf"):
        return _Plan(corpus, candidates, query_direction, kind_scores, None, None, **demotion)
    # Every corpus row that is not a positive is a negative; named ones weigh more.
    negative_weight = named_negative_weight(
        negative_weight, len(vectors), len(neg_rows) + len(neg_vectors)
    )
    weights = np.ones(len(vectors))
    weights[neg_rows] = negative_weight
    weights[pos_rows] = 0.0
    positive_weights = np.ones(len(positive_set))
    if len(feedback_rows):
        positive_set = np.vstack([positive_set, vectors[feedback_rows]])
        positive_weights = np.r_[positive_weights, np.full(len(feedback_rows), feedback_weight)]
        weights[feedback_rows] = 0.0
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
        corpus,
        candidates,
        query_direction,
        kind_scores,
        problem,
        weight,
        lda=mode == "lda",
        **demotion,
    )


def _demotion(
    vectors: NDArray[np.float32], centroid: NDArray[Any], negatives: NDArray[Any]
) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
    """Every row's cosine to the positives' centroid, and how far it is more like one of the
    negatives (0 if it is not): one more pass, or a few for many negatives."""
    directions = np.vstack([centroid, negatives]).astype(np.float32)
    # A pass over d / 4 directions at a time: its products take a quarter of the corpus matrix.
    width = max(8, vectors.shape[1] // 4)
    if len(directions) <= width:
        products = vectors @ directions.T
        positive_scores = products[:, 0]
        nearest = products[:, 1:].max(axis=1)
    else:
        positive_scores = (vectors @ directions[:width].T)[:, 0]
        nearest = np.full(len(vectors), -np.inf, dtype=np.float32)
        for first in range(1, len(directions), width):
            part = vectors @ directions[first : first + width].T
            np.maximum(nearest, part.max(axis=1), out=nearest)
    return positive_scores, np.maximum(nearest - positive_scores, 0.0).astype(np.float64)


def _knn_batch(corpus: _Corpus, items: list[ArrayLike], k: int) -> list[list[Hit]]:
    """kNN for single-vector queries: matrix products of at most ``d / 4`` queries each, so
    the scores in flight take at most a quarter of the corpus matrix."""
    dim = corpus.vectors.shape[1]
    width = max(1, dim // 4)
    everything = np.ones(len(corpus.vectors), dtype=bool)
    answers: list[list[Hit]] = []
    for first in range(0, len(items), width):
        chunk = np.vstack(items[first : first + width])
        matrix = unit_rows(as_matrix(chunk, "queries", dim=dim), "queries")
        scores = corpus.tie(corpus.vectors @ matrix.T.astype(np.float32))
        for column in range(len(matrix)):
            rows = top_k(scores[:, column].astype(np.float64), everything, k)
            answers.append(
                [
                    Hit(corpus.ids[row], float(scores[row, column]), float(scores[row, column]))
                    for row in rows
                ]
            )
    return answers


def concrete_mode(mode: Mode, has_positives: bool) -> Mode:
    """The mode a search runs: ``"auto"`` is ``"hybrid"`` with positives, else ``"prf"``."""
    if mode != "auto":
        return mode
    return "hybrid" if has_positives else "prf"


def named_negative_weight(weight: float, corpus_size: int, named: int) -> float:
    """The SVM loss weight of each of ``named`` counter-examples: ``weight``, but all of them
    together at most half the corpus, so that on a small corpus they cannot outweigh the
    query and lift what is merely unlike them."""
    if not named:
        return weight
    return min(weight, max(1.0, corpus_size / (2 * named)))


def _feedback(
    scores: NDArray[Any] | None,
    candidates: NDArray[np.bool_],
    most: int,
    threshold: float,
    stats: tuple[float, float] | None = None,
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """The pseudo-relevance-feedback rows (best first) and their weights, summing to 1.

    With ``threshold > 0``: the nearest candidates whose score's z-score over the candidates
    is at least ``threshold`` (at least ``_MIN_FEEDBACK``, at most ``most``), each weighted by
    its z-score's excess over the threshold plus 0.5, at least 0.1; near-copies of the query
    (cosine at least ``_DUPLICATE``) are skipped. With ``threshold == 0``:
    the ``most`` nearest, equally weighted. ``stats`` are the mean and standard deviation the
    z-scores use instead of the candidates' (a StoreIndex estimates them from its sample).
    """
    if most <= 0 or scores is None:
        return np.empty(0, dtype=np.intp), np.empty(0)
    rows = top_k(np.asarray(scores, dtype=np.float64), candidates, most)
    if not threshold:
        return rows, np.full(len(rows), 1.0 / len(rows))
    if stats is None:
        values = np.asarray(scores, dtype=np.float64)[candidates]
        stats = float(values.mean()), float(values.std())
    mean, spread = stats
    # A copy of the query (the document a "more like this" search starts from) tells nothing
    # new, and its z-score would give it most of the weight.
    rows = rows[np.asarray(scores, dtype=np.float64)[rows] < _DUPLICATE]
    z = (np.asarray(scores, dtype=np.float64)[rows] - mean) / (spread or 1.0)
    count = max(min(_MIN_FEEDBACK, most), int(np.count_nonzero(z >= threshold)))
    rows, z = rows[:count], z[:count]
    weights = np.maximum(z - threshold + 0.5, 0.1)
    return rows, weights / weights.sum()


def _rankings(
    plans: Sequence[_Plan], k: int, memory_share: float = MEMORY_SHARE
) -> list[NDArray[Any]]:
    """Every plan's scores over the corpus (the plans share one corpus snapshot), as far as
    its top ``k`` hits need them.

    The passes over the corpus that do not depend on a solve's inner steps (its first one and
    its verifications) are shared by the plans' solves, and the exemplar LDAs are scored in one
    pass: one matrix product each. A plan ranked by its SVM scores alone asks the solver for
    its top k only, which may spare a verification pass (rows that cannot rank score -inf);
    the hybrid and the demotion take every candidate's score.
    """
    rankings: list[NDArray[Any] | None] = [plan.knn_scores for plan in plans]
    svm = [number for number, plan in enumerate(plans) if plan.problem and not plan.lda]
    problems = []
    for number in svm:
        plan = plans[number]
        problem = {**cast(dict[str, Any], plan.problem), "memory_share": memory_share}
        if plan.hybrid_weight is None and plan.excess is None:
            problem["top"] = (k, plan.candidates)
        problems.append(problem)
    solutions = solve_many(problems)
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
    if plan.excess is not None and plan.positive_scores is not None:
        # The penalty is in the units of the ranking's scores, so it means the same in every
        # mode: one standard deviation of cosine costs one standard deviation of score.
        scale = _spread(scores, plan.candidates) / (
            _spread(plan.positive_scores, plan.candidates) or 1.0
        )
        scores = np.asarray(scores, dtype=np.float64) - plan.demote * scale * plan.excess
    corpus = plan.corpus
    scores = corpus.tie(np.asarray(scores, dtype=np.float64))  # equal rows score alike
    rows = top_k(scores, plan.candidates, k)
    sources = rows if corpus.canonical is None else corpus.canonical[rows]
    similarity = corpus.vectors[sources] @ plan.query_direction  # only the hits: no extra pass
    return [
        Hit(id=plan.corpus.ids[row], score=float(scores[row]), similarity=float(cosine))
        for row, cosine in zip(rows, similarity, strict=True)
    ]


def _spread(scores: NDArray[Any], mask: NDArray[np.bool_]) -> float:
    return float(np.asarray(scores, dtype=np.float64)[mask].std())


def as_queries(query: ArrayLike, dim: int) -> NDArray[Any]:
    """The query's normalised rows, at most :data:`MAX_QUERY_ROWS` of them."""
    return unit_rows(
        check_rows(as_matrix(query, "query", dim=dim), "query", MAX_QUERY_ROWS), "query"
    )


def split_examples(examples: Examples, name: str, dim: int) -> tuple[list[str], NDArray[Any]]:
    """Split examples into ids (in order, each once) and normalised extra vectors; at most
    :data:`MAX_EXAMPLES` of them (for ``name``) in all."""
    ids, vectors = _split_examples(examples, name, dim)
    most = MAX_EXAMPLES.get(name)
    if most is not None and len(ids) + len(vectors) > most:
        raise ValueError(
            f"{name} has more than {most} examples, the most a search takes (each costs it "
            "memory over every corpus row): pass the most telling ones"
        )
    return ids, vectors


def _split_examples(examples: Examples, name: str, dim: int) -> tuple[list[str], NDArray[Any]]:
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
        if len(ids) + len(vectors) > MAX_EXAMPLES.get(name, len(ids) + len(vectors)):
            break  # too many: refused by the caller without converting the rest
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


def first_equal_rows(matrix: NDArray[np.float32]) -> NDArray[np.intp] | None:
    """Each row's first row with exactly the same bytes; None when all rows differ.

    Only rows whose first 64 bytes hash alike with another row's are compared byte for byte.
    """
    n = len(matrix)
    if n < 2 or not matrix.size:
        return None
    bits = np.ascontiguousarray(matrix).view(np.uint32).reshape(n, -1)
    # The first 64 bytes (one cache line) of each row, as 64-bit words; fewer for d < 16.
    width = min(bits.shape[1] // 2 * 2, 16)
    head = np.ascontiguousarray(bits[:, :width]).view(np.uint64) if width else bits[:, :1]
    multipliers = np.random.default_rng(0).integers(1, 2**63, head.shape[1], dtype=np.uint64) | 1
    keys = head.astype(np.uint64, copy=False) @ multipliers  # wraps modulo 2**64
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    shared = np.flatnonzero(counts[inverse] > 1)  # in row order
    if not len(shared):
        return None
    # The rows' bytes compared: np.unique's first occurrences are the lowest rows.
    _, first, same = np.unique(bits[shared], axis=0, return_index=True, return_inverse=True)
    canonical = np.arange(n)
    canonical[shared] = shared[first[same.reshape(-1)]]
    if (canonical == np.arange(n)).all():
        return None  # equal keys, different bytes
    return canonical


def top_k(scores: NDArray[np.float64], mask: NDArray[np.bool_], k: int) -> NDArray[np.intp]:
    """Rows of the ``k`` best candidates, best first; ties go to the lower row, every run."""
    rows = np.flatnonzero(mask)
    values = scores[rows]
    if k < len(rows):
        # -inf marks rows a solver proved out of the top k (and numpy's partition is slow on
        # many equal values).
        ranked = values > -np.inf
        if np.count_nonzero(ranked) >= k > 0:
            rows, values = rows[ranked], values[ranked]
        cut = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= cut
        rows, values = rows[keep], values[keep]
    order = np.lexsort((rows, -values))[:k]
    return rows[order]
