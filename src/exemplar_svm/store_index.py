"""StoreIndex: the exemplar SVM over a vector database, without copying the corpus out of it.

The full exemplar SVM trains against every document, but only the documents near its margin
shape the solution (the squared hinge of a document far below the margin is zero). So per query
the store is asked for the documents that can matter, and a fixed random sample of the store
stands in for all the others:

1. Train a first model against the cached background sample alone, each sampled document
   standing for ``count / len(sample)`` documents, and estimate from it how many documents lie
   inside the SVM's margin: the documents the full SVM has to see.
2. Fetch, with their vectors and in one store request, the ``candidates`` nearest documents of
   the query and 1.5 times that many (at most ``max_candidates``) of the documents the first
   model ranks highest.
3. Train on the fetched documents (weight 1 each) plus the background documents that were not
   fetched, which stand for the rest of the store (each weighs ``rest / their number``): an
   unbiased estimate of the full loss, stratified by what was fetched.
4. Rank the store by the model: a linear score orders documents like the store's similarity
   to the weight vector (cosine always; inner product and L2 on unit-normalised vectors). The
   fetched documents and the background hold the top ``k`` when no unfetched document can beat
   the ``k``-th: proven by a bound over the unit sphere, or (``skip_when="estimated"``, the
   default) estimated from the background's tail. Otherwise the store's own search with the
   weight vector ranks the collection.

``"knn"`` and ``"prf"`` (the default for a query without positives) train nothing: kNN is one
store query, PRF two (the query's neighbours, which give the feedback documents, then the
neighbours of the moved query), the background only estimating the z-scores that choose the
feedback. Named negatives demote in every mode, over the documents fetched.

With a background at least as large as the store every document is in the problem with its true
weight, so the search equals :meth:`ExemplarIndex.search` on the same vectors. Memory on the
client is the background plus the candidates, whatever the size of the store.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._blas import ONE_BLAS_THREAD
from exemplar_svm._checks import as_matrix, check_count, check_k, check_positive, unit_rows
from exemplar_svm._solver import SCORE_TOLERANCE, corpus_products, solve
from exemplar_svm.index import (
    _MIN_FEEDBACK,
    FEEDBACK_SHARE,
    SEARCH_OPTIONS,
    Examples,
    Hit,
    Mode,
    PriorDirection,
    _feedback,
    as_queries,
    concrete_mode,
    direction_of,
    named_negative_weight,
    resolve_options,
    split_examples,
    top_k,
)
from exemplar_svm.stores import METRICS, FilterableStore, VectorStore, ask, nearest_many

F32 = np.float32
F64 = np.float64
#: When the last store query (ranking the collection by the model) is skipped: when the fetched
#: documents provably hold the top k, or also when the background estimates that they do.
SkipWhen = Literal["estimated", "proven"]
# A model trained on a sample stands for one trained on the whole store only approximately:
# solving it to 1e-4 (rather than a search in memory's 1e-6) changes no ranking that matters and
# saves about half the solver's steps.
_SAMPLE_TOLERANCE = 1e-4
DEFAULT_BACKGROUND = 4000
DEFAULT_CANDIDATES = 256
DEFAULT_MAX_CANDIDATES = 16384
DEFAULT_SKIP_WHEN: SkipWhen = "estimated"
#: Seconds a store request may take (an embedding server's default timeout too).
DEFAULT_STORE_TIMEOUT = 60.0
_T = TypeVar("_T")
# Stored vectors count as unit-normalised within this tolerance (float32 embeddings).
_UNIT_TOLERANCE = 1e-3
# Rows this close to unit length are used as stored (renormalising would only add rounding).
_STORED_UNIT = 1e-6
# Fetch this many times the margin violators the sample predicts: the estimate is noisy.
_VIOLATOR_MARGIN = 1.5
# The estimate skips the last query when fewer than this many unfetched documents are expected
# to beat the k-th hit: at most about one search in ten may then lose one hit, and the fitted
# tail is heavier than the real one.
_EXPECTED_MISSES = 0.1
# The tail of the unfetched background's scores is fitted to its top share (at least _TAIL_ROWS
# rows), and not estimated at all from fewer than _TAIL_SAMPLE documents.
_TAIL_SHARE = 0.01
_TAIL_ROWS = 10
_TAIL_SAMPLE = 1000


def _bound(direction: NDArray[F64], regions: Sequence[tuple[NDArray[F64], float]]) -> float:
    """An upper bound of ``direction @ x`` over every unit ``x`` outside the fetched regions.

    Outside, ``u @ x < t`` for each region ``(u, t)``, so for any ``beta >= 0``
    ``direction @ x <= |direction - sum beta u| + sum beta t``; a few choices of beta are tried
    and the smallest bound kept.
    """
    best = float(np.linalg.norm(direction))
    for u, t in regions:
        beta = max(0.0, float(direction @ u))
        best = min(best, float(np.linalg.norm(direction - beta * u)) + beta * t)
    if len(regions) > 1:
        basis = np.array([u for u, _ in regions])
        beta, *_ = np.linalg.lstsq(basis.T, direction, rcond=None)
        if (beta >= 0).all():
            thresholds = np.array([t for _, t in regions])
            residual = direction - basis.T @ beta
            best = min(best, float(np.linalg.norm(residual)) + float(beta @ thresholds))
    return best


def _expected_misses(rest: NDArray[F64], outside: int, cut: float) -> float:
    """How many of the ``outside`` unfetched documents are expected to score above ``cut``,
    from the scores ``rest`` of the background documents that were not fetched (a uniform
    sample of them).

    The top of the sample's scores is fitted with an exponential tail, which is heavier than
    the Gaussian a linear score over many embeddings is close to (and than the thinner tail of
    documents outside the fetched top), and extrapolated to the ``outside`` documents. Without
    a large enough sample any number of documents may be missed.
    """
    size = len(rest)
    if size < _TAIL_SAMPLE:
        return math.inf
    top = max(_TAIL_ROWS, math.ceil(_TAIL_SHARE * size))
    highest = np.partition(rest, size - top)[size - top :]
    floor = float(highest.min())
    # The maximum-likelihood scale of the excesses over the floor.
    scale = float(highest.sum() - top * floor) / (top - 1)
    if cut <= floor or scale <= 0:
        return math.inf if cut <= floor else 0.0
    return outside * top / size * math.exp(-(cut - floor) / scale)


@dataclass
class _Candidates:
    """The documents one search knows: fetched ones, then the background's other documents."""

    ids: list[str]
    vectors: NDArray[F32]  # unit rows, C-contiguous
    fetched: int  # rows before this came from the store's searches
    position: dict[str, int]
    # Each fetch covers the documents with ``aim @ x >= threshold`` (its last score).
    regions: list[tuple[NDArray[F64], float]]
    # Rows that may be results: under a filter, only those a filtered store search returned
    # (background rows may lie outside the filter; they only shape the model).
    eligible: NDArray[np.bool_]


class StoreIndex:
    """The exemplar SVM over any :class:`exemplar_svm.stores.VectorStore`.

    Searches like :meth:`ExemplarIndex.search`, with the same modes and options, but reads only a
    cached background sample and, per query, the documents near the query and near the SVM's
    margin; the whole store is ranked by the store's own similarity search when the fetched
    documents may not hold the top ``k``.

    Parameters
    ----------
    store : VectorStore
        The vector database (see :mod:`exemplar_svm.stores`); its ids name the results. A store
        that implements :class:`exemplar_svm.stores.BatchVectorStore` is asked for both fetches
        in one request (FAISS then scans its vectors once for the two).
    background : int, default=4000
        Size of the random sample that stands for the documents not fetched. Drawn once, on the
        first search, and kept until :meth:`refresh_background`. A background at least as large
        as the store makes the search exact.
    candidates : int, default=256
        Nearest documents of the query fetched (with vectors) on every search.
    max_candidates : int, default=16384
        At most this many more documents fetched, those the first model ranks highest (about
        1.5 times the documents it finds inside the margin: a few thousand at 100k documents,
        tens of thousands at 1M; 16384 is also Milvus's cap). More raise the accuracy at 1M
        documents a little and cost solve time and transfer; fewer save transfer from a remote
        store, at some accuracy.
    seed : int, default=0
        Seed of the background sample.
    skip_when : {"estimated", "proven"}, default="estimated"
        When the last store query, which ranks the whole collection by the model, is skipped:
        when a bound over the unit sphere proves that no unfetched document beats the ``k``-th
        hit (``"proven"``: the ranking is then exactly the store's), or also when the scores of
        the unfetched background documents, their tail extrapolated to the store's size, expect
        fewer than 0.1 such documents (``"estimated"``: measured on clustered embeddings at 1M
        documents, it skips the query for most searches and misses no document). The model
        itself is an estimate unless the background covers the store, which makes both
        settings exact.
    timeout : float or None, default=60.0
        Seconds each request to the store may take; a store that has not answered by then
        (a server that hangs) raises :class:`exemplar_svm.stores.StoreError`, as does any
        failure of the store. ``None`` waits as long as the store does.

    Notes
    -----
    While a search trains and ranks, numpy's BLAS runs on one thread (through threadpoolctl,
    process-wide, restored when the last concurrent search is done): the store scans on the
    same cores next, and BLAS threads left spinning slowed FAISS's scans by 30% on 2 cores.

    Examples
    --------
    >>> import numpy as np
    >>> from exemplar_svm import ExemplarIndex, StoreIndex
    >>> store = ExemplarIndex(np.random.default_rng(0).normal(size=(500, 16)))
    >>> index = StoreIndex(store, background=100)
    >>> [hit.id for hit in index.search(store.vector("7"), k=3, mode="svm")][0]
    '7'
    """

    def __init__(
        self,
        store: VectorStore,
        *,
        background: int = DEFAULT_BACKGROUND,
        candidates: int = DEFAULT_CANDIDATES,
        max_candidates: int = DEFAULT_MAX_CANDIDATES,
        seed: int = 0,
        skip_when: SkipWhen = DEFAULT_SKIP_WHEN,
        timeout: float | None = DEFAULT_STORE_TIMEOUT,
    ) -> None:
        if not isinstance(store, VectorStore):
            raise TypeError(
                f"{type(store).__name__} is not a VectorStore: it needs metric, count, nearest, "
                "search_by_vector, sample and fetch (see exemplar_svm.stores)"
            )
        if store.metric not in METRICS:
            raise ValueError(
                f"the store's metric {store.metric!r} is not supported; the SVM's ranking "
                f"through a store is exact for {', '.join(METRICS)}"
            )
        if skip_when not in get_args(SkipWhen):
            raise ValueError(
                f"skip_when must be one of {', '.join(map(repr, get_args(SkipWhen)))}, "
                f"got {skip_when!r}"
            )
        self.store = store
        self.background = check_count(background, "background")
        self.candidates = check_k(candidates)
        self.max_candidates = check_count(max_candidates, "max_candidates")
        self.seed = check_count(seed, "seed")
        self.skip_when: SkipWhen = skip_when
        self.timeout = None if timeout is None else check_positive(timeout, "timeout")
        self._sample: tuple[list[str], NDArray[F32]] | None = None
        self._lock = threading.Lock()

    def refresh_background(self) -> None:
        """Draw the background sample again (after the store has changed a lot)."""
        ids, vectors = self._ask(
            "a background sample", self.store.sample, self.background, self.seed
        )
        sample = (list(ids), self._unit(vectors, "the background sample"))
        with self._lock:
            self._sample = sample

    @property
    def background_ids(self) -> list[str]:
        """Ids of the cached background sample (drawn now if it has not been yet)."""
        return list(self._background()[0])

    def _background(self) -> tuple[list[str], NDArray[F32]]:
        with self._lock:
            sample = self._sample
        if sample is None:
            self.refresh_background()
            with self._lock:
                sample = self._sample
        assert sample is not None
        return sample

    def _unit(self, vectors: ArrayLike, what: str) -> NDArray[F32]:
        """Stored vectors as C-contiguous float32 unit rows (checked for ``ip`` and ``l2``)."""
        matrix = np.asarray(vectors, dtype=F32)
        if matrix.size == 0:
            return matrix.reshape(0, matrix.shape[-1] if matrix.ndim == 2 else 0)
        if matrix.ndim != 2:
            matrix = as_matrix(matrix, what, dtype=F32)
        matrix = np.ascontiguousarray(matrix)
        # A NaN or infinite value makes its row's norm so: one check instead of a pass.
        norms = np.sqrt(np.einsum("ij,ij->i", matrix, matrix))
        if not np.isfinite(norms).all():
            as_matrix(matrix, what, dtype=F32)  # names the row with NaN or infinite values
            raise ValueError(f"{what} has values too large to normalise; rescale the vectors")
        if self.store.metric != "cosine" and np.abs(norms - 1).max() > _UNIT_TOLERANCE:
            raise ValueError(
                f"the store ranks by {self.store.metric!r} but its vectors are not "
                f"unit-normalised ({what} has norms from {norms.min():.4g} to "
                f"{norms.max():.4g}), so its ranking would not be the SVM's; use a store with "
                "cosine distance, or store normalised embeddings"
            )
        if np.abs(norms - 1).max() > _STORED_UNIT:
            matrix = unit_rows(matrix, what)
        return matrix

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
        filter: Any = None,
    ) -> list[Hit]:
        """Rank the store for ``query``; the best ``k`` documents, best first.

        Takes the arguments of :meth:`ExemplarIndex.search`, with store ids as examples, and
        every mode but ``"lda"``; an option left at ``None`` takes the library's default
        (:data:`exemplar_svm.index.SEARCH_DEFAULTS`: a StoreIndex has no calibrated settings).

        The estimates a search over the store makes, exact when the background covers it:

        - ``"prf"`` (and ``"auto"`` without positives) asks the store twice: for the nearest
          documents of the kNN direction (``max(candidates, feedback + named, k + named)``),
          whose scores are z-scored with the background's mean and deviation to choose the
          feedback documents, then for the nearest of the moved direction.
        - ``"auto"`` with positives is ``"hybrid"``: the SVM trained on the fetched documents
          and the background, mixed with the PRF scores of the same documents; its z-scores
          are estimated from the fetched documents and the background.
        - Named negatives demote documents in every mode, with the spread of the scores
          estimated on the background. Demotion only lowers scores: when it drops the
          ``k``-th hit below the least score the store returned, the store is asked for twice
          as many (up to ``max_candidates``), so no document it did not return beats a hit.

        ``filter``, in the store's own syntax (see :class:`exemplar_svm.stores.FilterableStore`),
        restricts the results: every store search of the query (its neighbours, the documents
        the first model ranks highest, the ranking by the model) applies it, and only documents
        those searches returned are results. The background sample stays the whole
        collection's (it stands for the documents the model is trained against) but no
        background document is returned unless a filtered search returned it too. A store that
        cannot filter raises ``TypeError`` rather than ignore the filter.
        """
        k = check_k(k)
        # Every ranking option is a parameter of this method, named as in SEARCH_OPTIONS.
        arguments = locals()
        options = resolve_options({}, {name: arguments[name] for name in SEARCH_OPTIONS})
        searcher = self._searcher(filter)
        filtering = searcher is not self.store
        mode = options["mode"]
        if mode == "lda":
            raise ValueError(
                "mode 'lda' whitens with the covariance of the whole collection, which a "
                "StoreIndex does not read; use 'svm', 'hybrid' or 'knn' (or an ExemplarIndex)"
            )
        sample_ids, sample = self._background()
        total = self._ask("its count", self.store.count)
        if total == 0 or not len(sample):
            return []
        dim = sample.shape[1]
        queries = as_queries(query, dim)
        pos_ids, pos_vectors = split_examples(positives, "positives", dim)
        neg_ids, neg_vectors = split_examples(negatives, "negatives", dim)
        clash = next((item for item in pos_ids if item in set(neg_ids)), None)
        if clash is not None:
            raise ValueError(f"document {clash!r} is named both as a positive and a negative")
        named = set(pos_ids) | set(neg_ids)
        if pos_ids:
            pos_vectors = np.vstack([pos_vectors, self._fetch(pos_ids, "positives")])
        if neg_ids:
            neg_vectors = np.vstack([neg_vectors, self._fetch(neg_ids, "negatives")])
        if total <= len(named):
            return []
        mode = concrete_mode(mode, bool(len(pos_vectors)))
        options["mode"] = mode

        query_direction = direction_of(queries)
        positive_set = np.vstack([queries, pos_vectors])
        centroid = direction_of(positive_set)
        knn_direction = centroid
        if options["rocchio"] and len(neg_vectors):
            knn_direction = direction_of(
                (centroid - options["rocchio"] * neg_vectors.mean(axis=0))[np.newaxis]
            )
        # The background documents that may be hits stand for the store's in every estimate of
        # a mean or a spread over the corpus (the feedback's z-scores, the demotion's scale).
        free = sample[np.array([item not in named for item in sample_ids], dtype=bool)]
        knn_free = _cosines(free, knn_direction)
        knn_stats = (float(knn_free.mean()), float(knn_free.std())) if len(free) else (0.0, 0.0)
        demotion = _Demotion.of(options["demote"], centroid, neg_vectors, free)
        feedback = min(options["feedback"], (total - len(named)) // FEEDBACK_SHARE)
        if mode in ("knn", "prf"):
            aim, answer = knn_direction, None
            if mode == "prf" and options["prf_weight"] and feedback:
                size = max(self.candidates, feedback + len(named), _wanted(k, named, demotion))
                answer = self._nearest([knn_direction], [min(total, size)], dim, searcher)
                near = _gather(answer, [knn_direction], [], sample[:0], filtering)
                rows, weights = _feedback(
                    _cosines(near.vectors, knn_direction),
                    ~_named_rows(near, named),
                    feedback,
                    options["feedback_threshold"],
                    knn_stats,
                )
                if len(rows):
                    moved = knn_direction + options["prf_weight"] * (weights @ near.vectors[rows])
                    aim, answer = direction_of(moved[np.newaxis]), None
            return self._nearest_hits(
                aim, k, named, total, dim, query_direction, demotion, searcher, answer
            )

        options["negative_weight"] = named_negative_weight(
            options["negative_weight"], total, len(neg_vectors)
        )
        problem = _Problem(
            options,
            total,
            named,
            positive_set,
            neg_vectors,
            centroid,
            knn_direction,
            knn_stats,
            feedback,
        )
        # A first model against the background alone says where the margin lies, before any
        # store query, so both fetches (the query's neighbours, and the documents that model
        # ranks highest: the ones the full SVM has to see) can go in one request.
        with ONE_BLAS_THREAD:
            guess = problem.guess(sample_ids, sample)
        norm = float(np.linalg.norm(guess.w))
        extra = min(self.max_candidates, math.ceil(_VIOLATOR_MARGIN * guess.violators))
        aims, sizes = [knn_direction], [max(self.candidates, feedback)]
        if norm and extra:  # a zero model (positives like the background) aims nowhere
            aims.append(guess.w / norm)
            sizes.append(extra)
        # The store's answers are dropped once gathered: the candidates hold the rows kept.
        found = _gather(
            self._nearest(aims, [min(total, size + len(named)) for size in sizes], dim, searcher),
            aims,
            sample_ids,
            sample,
            filtering,
        )
        with ONE_BLAS_THREAD:
            model = problem.train(found)
            direction, offset, plain = problem.ranking(model, found.vectors, problem.knn)
        scores = plain
        if demotion is not None:
            scores = plain - demotion.penalty(found.vectors, direction)
        excluded = _named_rows(found, named)
        hits = _hits(found, scores, excluded, k, query_direction)
        # Under a filter, the background documents the filtered searches did not return may
        # match it or not: they cannot be results, so only the store's ranking can show that
        # none of them (nor any other unfetched match) beats the k-th hit.
        if model.covers and not filtering:  # every document of the store is a candidate
            return hits
        beaten = filtering and bool(
            len(hits) == k and (scores[~found.eligible] > hits[-1].score).any()
        )
        if len(hits) == k and not beaten:
            # Demotion only lowers scores: the bounds of the undemoted ones still hold.
            if hits[-1].score - offset > _bound(direction, found.regions):
                return hits
            if self.skip_when == "estimated":
                anonymous = ~_named_rows(found, named, results=False)
                rest = scores[found.fetched :][anonymous[found.fetched :]]
                outside = total - found.fetched
                if _expected_misses(rest, outside, hits[-1].score) < _EXPECTED_MISSES:
                    return hits
        # The candidates may not hold the top k: let the store rank the collection, asking for
        # more while demoted documents leave room for ones it did not return.
        unit = (direction / np.linalg.norm(direction)).astype(F32)
        size = min(total, _wanted(k, named, demotion))
        cap = max(self.max_candidates, size)
        while True:
            ranked = self._ask("a search", searcher.search_by_vector, unit, size)
            ids = list(dict.fromkeys(ranked))
            unseen = [item for item in ids if item not in found.position]
            eligible = found.eligible
            if filtering:  # the background documents it returned match the filter
                eligible = eligible.copy()
                eligible[[found.position[item] for item in ids if item in found.position]] = True
            if unseen:
                vectors = self._fetch(unseen, "results")
                more = corpus_products(vectors, np.atleast_2d(direction))[:, 0] + offset
                plain = np.r_[plain, more]
                if demotion is not None:
                    more = more - demotion.penalty(vectors, direction)
                scores = np.r_[scores, more]
                position = dict(found.position)
                position.update(zip(unseen, range(len(found.ids), len(plain)), strict=True))
                eligible = np.r_[eligible, np.ones(len(unseen), dtype=bool)]
                found = _Candidates(
                    [*found.ids, *unseen],
                    np.concatenate([found.vectors, vectors]),
                    found.fetched,
                    position,
                    found.regions,
                    eligible,
                )
            else:
                found.eligible = eligible
            hits = _hits(found, scores, _named_rows(found, named), k, query_direction)
            least = min((float(plain[found.position[item]]) for item in ids), default=-math.inf)
            if len(ids) < size or size >= min(total, cap) or _complete(hits, k, least):
                return hits
            size = min(total, cap, 2 * size)

    def _nearest_hits(
        self,
        aim: NDArray[F64],
        k: int,
        named: set[str],
        total: int,
        dim: int,
        query_direction: NDArray[F64],
        demotion: _Demotion | None,
        searcher: VectorStore,
        answer: list[tuple[list[str], NDArray[F32]]] | None = None,
    ) -> list[Hit]:
        """The best ``k`` by cosine to the unit ``aim`` (demoted), from the store's nearest
        documents (``answer`` if already fetched): twice as many asked for while demoted
        documents leave room for ones it did not return."""
        size = min(total, _wanted(k, named, demotion))
        if answer is not None:
            size = max(size, len(answer[0][0]))
        cap = max(self.max_candidates, size)
        while True:
            if answer is None:
                answer = self._nearest([aim], [size], dim, searcher)
            found = _gather(answer, [aim], [], np.empty((0, dim), dtype=F32))
            plain = _cosines(found.vectors, aim)
            scores = plain
            if demotion is not None:
                scores = plain - demotion.penalty(found.vectors, aim)
            hits = _hits(found, scores, _named_rows(found, named), k, query_direction)
            least = float(plain.min()) if len(plain) else -math.inf
            if len(found.ids) < size or size >= min(total, cap) or _complete(hits, k, least):
                return hits
            size, answer = min(total, cap, 2 * size), None

    def _searcher(self, filter: Any) -> VectorStore:
        """The store, or its view that applies ``filter`` to every search."""
        if filter is None:
            return self.store
        if not isinstance(self.store, FilterableStore):
            raise TypeError(
                f"{type(self.store).__name__} cannot apply a metadata filter (it has no "
                "filtered(filter) method; see exemplar_svm.stores.FilterableStore), and a "
                "filter is never ignored: pass filter=None, or use a store that filters"
            )
        return self.store.filtered(filter)

    def _nearest(
        self,
        aims: Sequence[NDArray[F64]],
        sizes: Sequence[int],
        dim: int,
        searcher: VectorStore,
    ) -> list[tuple[list[str], NDArray[F32]]]:
        answers = self._ask(
            "a nearest-neighbour search", nearest_many, searcher, np.array(aims, dtype=F32), sizes
        )
        return [
            (list(ids), self._unit(np.asarray(vectors).reshape(len(ids), dim), "nearest"))
            for ids, vectors in answers
        ]

    def _fetch(self, ids: Sequence[str], what: str) -> NDArray[F32]:
        vectors = np.asarray(self._ask(f"the vectors of {what}", self.store.fetch, ids))
        return self._unit(vectors.reshape(len(ids), vectors.shape[-1] if vectors.size else 0), what)

    def _ask(self, what: str, call: Callable[..., _T], *args: Any) -> _T:
        return ask(self.store, what, self.timeout, call, *args)

    def __repr__(self) -> str:
        return (
            f"StoreIndex({type(self.store).__name__}, background={self.background}, "
            f"candidates={self.candidates}, max_candidates={self.max_candidates}, "
            f"skip_when={self.skip_when!r})"
        )


def _gather(
    answers: Sequence[tuple[list[str], NDArray[F32]]],
    aims: Sequence[NDArray[F64]],
    sample_ids: Sequence[str],
    sample: NDArray[F32],
    filtering: bool = False,
) -> _Candidates:
    """The fetched documents (each once, in order) followed by the unfetched background
    (which cannot be a result under a filter)."""
    regions: list[tuple[NDArray[F64], float]] = []
    for aim, (found, vectors) in zip(aims, answers, strict=True):
        if found:
            # They are the store's top by `aim`: it covers every document that scores as high.
            regions.append((aim, float(corpus_products(vectors, np.atleast_2d(aim)).min())))
    every = [item for found, _ in answers for item in found]
    # Built backwards, the map keeps each id's first row (tens of thousands: no Python loop).
    first = dict(zip(reversed(every), range(len(every) - 1, -1, -1), strict=True))
    rows = np.sort(np.fromiter(first.values(), dtype=np.intp, count=len(first)))
    ids = [every[row] for row in rows]
    position = dict(zip(ids, range(len(ids)), strict=True))
    rest = [row for row, item in enumerate(sample_ids) if item not in position]
    fetched = len(ids)
    ids += [sample_ids[row] for row in rest]
    position.update(zip(ids[fetched:], range(fetched, len(ids)), strict=True))
    # One copy of the rows kept, straight into the candidates' matrix (tens of megabytes).
    matrix = np.empty((len(ids), sample.shape[1]), dtype=F32)
    start = 0
    for _, vectors in answers:
        kept = rows[(rows >= start) & (rows < start + len(vectors))]
        filled = int(np.searchsorted(rows, start))
        np.take(vectors, kept - start, axis=0, out=matrix[filled : filled + len(kept)])
        start += len(vectors)
    np.take(sample, rest, axis=0, out=matrix[fetched:])
    eligible = np.ones(len(ids), dtype=bool)
    if filtering:
        eligible[fetched:] = False
    return _Candidates(ids, matrix, fetched, position, regions, eligible)


def _named_rows(found: _Candidates, named: set[str], results: bool = True) -> NDArray[np.bool_]:
    """Rows of the named examples, and (``results``) the other rows that cannot be results:
    those that may lie outside the filter."""
    excluded = ~found.eligible if results else np.zeros(len(found.ids), dtype=bool)
    for item in named:
        row = found.position.get(item)
        if row is not None:
            excluded[row] = True
    return excluded


def _hits(
    found: _Candidates,
    scores: NDArray[F64],
    excluded: NDArray[np.bool_],
    k: int,
    query_direction: NDArray[F64],
) -> list[Hit]:
    # Ties go to the document fetched first: the same order every run.
    order = top_k(scores, ~excluded, k)
    similarity = corpus_products(found.vectors[order], np.atleast_2d(query_direction))[:, 0]
    return [
        Hit(found.ids[row], float(scores[row]), float(cosine))
        for row, cosine in zip(order, similarity, strict=True)
    ]


def _cosines(vectors: NDArray[F32], direction: NDArray[F64]) -> NDArray[F64]:
    """``vectors @ direction`` in float32, as :class:`ExemplarIndex` scores kNN and PRF."""
    return np.asarray(vectors @ direction.astype(F32), dtype=F64)


def _wanted(k: int, named: set[str], demotion: _Demotion | None) -> int:
    """How many documents a ranking asks the store for: ``k`` more while some are demoted."""
    return k + len(named) + (k if demotion is not None else 0)


def _complete(hits: list[Hit], k: int, least: float) -> bool:
    """Whether ``hits`` are the top ``k``: the store ranked every document it did not return
    at most ``least`` before demotion, which only lowers scores."""
    return len(hits) == k and hits[-1].score >= least


@dataclass
class _Demotion:
    """The named negatives' demotion, as :class:`ExemplarIndex` demotes: a document more like
    one of them than like the positives' centroid loses ``demote`` times the excess, scaled by
    the spread of the ranking's scores over that of the centroid's cosines (both estimated on
    the background's documents that may be hits)."""

    demote: float
    directions: NDArray[F32]  # the positives' centroid, then the negatives
    free: NDArray[F32]  # the background's documents that may be hits
    spread: float  # of the free documents' cosines to the centroid

    @classmethod
    def of(
        cls, demote: float, centroid: NDArray[F64], negatives: NDArray[Any], free: NDArray[F32]
    ) -> _Demotion | None:
        if not demote or not len(negatives):
            return None
        directions = np.vstack([centroid, negatives]).astype(F32)
        spread = float(_cosines(free, centroid).std()) if len(free) else 0.0
        return cls(demote, directions, free, spread)

    def penalty(self, vectors: NDArray[F32], direction: NDArray[F64]) -> NDArray[F64]:
        """What each row loses under a ranking by ``direction @ x`` (plus any offset)."""
        if not len(self.free):
            scale = 1.0
        else:
            spread = float(corpus_products(self.free, np.atleast_2d(direction))[:, 0].std())
            scale = spread / (self.spread or 1.0)
        products = vectors @ self.directions.T
        excess = np.maximum(products[:, 1:].max(axis=1) - products[:, 0], 0.0).astype(F64)
        penalty: NDArray[F64] = self.demote * scale * excess
        return penalty


@dataclass
class _Model:
    w: NDArray[F64]
    b: float
    violators: float  # estimated store documents inside the margin (the guess only)
    stand_in: NDArray[F64]  # how many store documents each candidate row stands for
    covers: bool  # the candidates are every document of the store


class _Problem:
    """One query's training problem: the candidates, the background standing for the rest."""

    def __init__(
        self,
        options: dict[str, Any],
        total: int,
        named: set[str],
        positive_set: NDArray[F64],
        neg_vectors: NDArray[F64],
        centroid: NDArray[F64],
        knn_direction: NDArray[F64],
        knn_stats: tuple[float, float],
        feedback: int,
    ) -> None:
        self.options = options
        self.total = total
        self.named = named
        self.positive_set = positive_set
        self.neg_vectors = neg_vectors
        self.centroid = centroid
        self.knn_direction = knn_direction
        # The kNN scores' mean and deviation over the store (estimated on the background).
        self.knn_stats = knn_stats
        self.feedback = feedback  # at most this many feedback documents
        # The hybrid's kNN side (moved by PRF) and its scores on the candidates, once known.
        self.knn_side = knn_direction
        self.knn = np.empty(0)

    def guess(self, sample_ids: Sequence[str], sample: NDArray[F32]) -> _Model:
        """The model against the background alone, each document standing for its share."""
        excluded = np.array([item in self.named for item in sample_ids], dtype=bool)
        outside = self.total - len(self.named)
        rest = int((~excluded).sum())
        share = outside / rest if rest and outside > 0 else 0.0
        stand_in = np.where(excluded, 0.0, share)
        # The feedback documents the sample holds (about ``feedback / share``), together
        # weighing as much as the store's feedback is expected to, so the guess leans where the
        # model trained with the store's feedback will.
        weights = stand_in.copy()
        feedback = np.empty(0, dtype=np.intp)
        stands_for = 0.0
        if self.feedback and share:
            knn = _cosines(sample, self.knn_direction)
            threshold = self.options["feedback_threshold"]
            most = max(1, round(self.feedback / share))
            feedback, _ = _feedback(knn, ~excluded, most, threshold, self.knn_stats)
            expected = float(self.feedback)
            if threshold:  # as many as lie above the threshold, but at least the minimum
                mean, spread = self.knn_stats
                above = np.count_nonzero((knn[feedback] - mean) / (spread or 1.0) >= threshold)
                expected = max(min(expected, above * share), min(_MIN_FEEDBACK, expected))
            if len(feedback):
                stands_for = expected / len(feedback)
            weights[feedback] = 0.0
        w, b, scores = self._solve(
            sample,
            weights,
            stand_in,
            sample[feedback].astype(F64),
            _SAMPLE_TOLERANCE,
            feedback_share=stands_for,
        )
        violators = share * float(np.count_nonzero(scores[~excluded] > -1))
        return _Model(w, b, violators, stand_in, rest == outside)

    def train(self, found: _Candidates) -> _Model:
        """The model against the candidates: fetched ones weigh 1, the unfetched background
        stands for the rest of the store.

        The nearest documents by kNN become positives (feedback, chosen as
        :class:`ExemplarIndex` chooses them, with the store's z-scores estimated on the
        background) or weighted negatives; they are looked for among the candidates (with a
        background as large as the store, that is every document). The feedback documents
        also move the hybrid's kNN side (PRF).
        """
        options = self.options
        excluded = _named_rows(found, self.named, results=False)
        n = len(found.ids)
        knn = _cosines(found.vectors, self.knn_direction)
        self.knn = knn
        # Feedback and hard negatives come from the documents that may be results (under a
        # filter, the filtered searches' answers): the model contrasts the filter's documents.
        selectable = ~excluded & found.eligible
        rows = np.flatnonzero(selectable)
        order = rows[np.lexsort((rows, -knn[rows]))]
        feedback_rows, feedback_weights = _feedback(
            knn, selectable, self.feedback, options["feedback_threshold"], self.knn_stats
        )
        feedback = len(feedback_rows)
        if options["mode"] == "hybrid" and options["prf_weight"] and feedback:
            moved = self.knn_direction + options["prf_weight"] * (
                feedback_weights @ found.vectors[feedback_rows]
            )
            self.knn_side = direction_of(moved[np.newaxis])
            self.knn = _cosines(found.vectors, self.knn_side)
        unlabeled = self.total - len(self.named)
        hard = max(min(options["hard_negatives"], unlabeled - feedback - 1), 0)
        # The hard negatives: the nearest documents that are not feedback ones.
        others = order[~np.isin(order, feedback_rows)]
        chosen = np.r_[feedback_rows, others[:hard]].astype(np.intp)
        # Known documents stand for themselves: the fetched ones and the chosen ones.
        known = np.zeros(n, dtype=bool)
        known[: found.fetched] = True
        known[chosen] = True
        rest = ~known & ~excluded
        named_outside = len(self.named) - int((known & excluded).sum())
        outside = self.total - int(known.sum()) - named_outside
        count = int(rest.sum())
        share = outside / count if count and outside > 0 else 0.0
        stand_in = np.where(rest, share, 1.0)
        stand_in[excluded] = 0.0
        weights = stand_in.copy()
        weights[chosen[feedback:]] = options["hard_negative_weight"]
        weights[chosen[:feedback]] = 0.0
        # Each unfetched document sampled once, and no other (a store that changed since the
        # sample was drawn does not count as covered).
        covers = outside == count
        w, b, _ = self._solve(
            found.vectors,
            weights,
            stand_in,
            found.vectors[chosen[:feedback]].astype(F64),
            SCORE_TOLERANCE if covers else _SAMPLE_TOLERANCE,
        )
        return _Model(w, b, 0.0, stand_in, covers)

    def _solve(
        self,
        rows: NDArray[F32],
        weights: NDArray[F64],
        stand_in: NDArray[F64],
        feedback: NDArray[F64],
        tolerance: float,
        feedback_share: float = 1.0,
    ) -> tuple[NDArray[F64], float, NDArray[F64]]:
        """The model on ``rows``; ``tolerance`` bounds its scores' distance from the optimum's.
        Each ``feedback`` row stands for ``feedback_share`` feedback documents."""
        options = self.options
        positives = np.vstack([self.positive_set, feedback])
        positive_weights = np.r_[
            np.ones(len(self.positive_set)),
            np.full(len(feedback), options["feedback_weight"] * feedback_share),
        ]
        center = None
        if options["prior"]:
            direction = self.centroid
            if options["prior_direction"] == "contrast":
                # The store's mean, estimated from the candidates as they stand for it.
                mean = stand_in @ rows / max(float(stand_in.sum()), 1.0)
                direction = direction_of((self.centroid - mean)[np.newaxis])
            center = options["prior"] * direction
        w, b, scores, _ = solve(
            positives,
            rows,
            weights,
            self.neg_vectors,
            np.full(len(self.neg_vectors), options["negative_weight"]),
            options["C"],
            positive_weights=positive_weights,
            center=center,
            tolerance=tolerance,
        )
        return w, b, scores

    def ranking(
        self, model: _Model, rows: NDArray[F32], knn: NDArray[F64]
    ) -> tuple[NDArray[F64], float, NDArray[F64]]:
        """The final score as ``direction @ x + offset``, and its value on every row: the
        SVM's, or the hybrid's (``knn`` holds the rows' kNN scores).

        The hybrid's z-scores are linear in ``x`` too, with the mean and deviation over the
        store estimated from the rows as they stand for it.
        """
        svm = corpus_products(rows, np.atleast_2d(model.w))[:, 0] + model.b
        if self.options["mode"] != "hybrid":
            return model.w, model.b, svm
        share = self.options["hybrid_weight"]
        direction = np.zeros_like(model.w)
        offset = 0.0
        scores = np.zeros(len(svm))
        parts = ((share, model.w, model.b, svm), (1 - share, self.knn_side, 0.0, knn))
        for part, u, c, values in parts:
            mean = float(np.average(values, weights=model.stand_in))
            spread = float(np.average((values - mean) ** 2, weights=model.stand_in))
            std = math.sqrt(spread) if spread > 0 else 1.0
            direction += part * u / std
            offset += part * (c - mean) / std
            scores += part * (values - mean) / std
        return direction, offset, scores


__all__ = ["DEFAULT_SKIP_WHEN", "DEFAULT_STORE_TIMEOUT", "SkipWhen", "StoreIndex"]
