"""StoreIndex: the exemplar SVM over a vector database, without copying the corpus out of it.

The full exemplar SVM trains against every document, but only the documents near its margin
shape the solution (the squared hinge of a document far below the margin is zero). So per query
the store is asked for the documents that can matter, and a fixed random sample of the store
stands in for all the others:

1. Train a first model against the cached background sample alone, each sampled document
   standing for ``count / len(sample)`` documents, and estimate from it how many documents lie
   inside the SVM's margin: the documents the full SVM has to see.
2. Fetch, with their vectors and at the same time, the ``candidates`` nearest documents of the
   query and that many (at most ``max_candidates``) of the documents the first model ranks
   highest.
3. Train on the fetched documents (weight 1 each) plus the background documents that were not
   fetched, which stand for the rest of the store (each weighs ``rest / their number``): an
   unbiased estimate of the full loss, stratified by what was fetched.
4. Rank the store by the model: a linear score orders documents like the store's similarity
   to the weight vector (cosine always; inner product and L2 on unit-normalised vectors). When a
   bound proves that no unfetched document can beat the fetched top ``k``, the store need not be
   asked again; otherwise the store's own search with the weight vector ranks the collection.

With a background at least as large as the store every document is in the problem with its true
weight, so the search equals :meth:`ExemplarIndex.search` on the same vectors. Memory on the
client is the background plus the candidates, whatever the size of the store.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix, check_count, check_k, unit_rows
from exemplar_svm._solver import solve
from exemplar_svm.index import (
    DEFAULT_C,
    DEFAULT_FEEDBACK,
    DEFAULT_FEEDBACK_WEIGHT,
    DEFAULT_HYBRID_WEIGHT,
    DEFAULT_MODE,
    DEFAULT_NEGATIVE_WEIGHT,
    DEFAULT_PRIOR,
    DEFAULT_ROCCHIO,
    SEARCH_OPTIONS,
    Examples,
    Hit,
    Mode,
    PriorDirection,
    check_search_options,
    direction_of,
    split_examples,
)
from exemplar_svm.stores import METRICS, VectorStore

F64 = np.float64
DEFAULT_BACKGROUND = 4000
DEFAULT_CANDIDATES = 256
DEFAULT_MAX_CANDIDATES = 8192
# Stored vectors count as unit-normalised within this tolerance (float32 embeddings).
_UNIT_TOLERANCE = 1e-3
# Fetch this many times the margin violators the sample predicts: the estimate is noisy.
_VIOLATOR_MARGIN = 1.5


@dataclass
class _Pool:
    """The documents fetched for one query, with the regions of the store they cover."""

    ids: list[str]
    vectors: NDArray[F64]  # unit rows
    position: dict[str, int]
    # Each fetch covers the documents with ``direction @ x >= threshold`` (its last score).
    regions: list[tuple[NDArray[F64], float]]

    def add(self, ids: list[str], vectors: NDArray[F64], direction: NDArray[F64] | None) -> None:
        """Add fetched documents; ``direction`` is what the store ranked them by, if anything:
        they are its top, so it covers every document that scores as high."""
        new = [i for i, item in enumerate(ids) if item not in self.position]
        for i in new:
            self.position[ids[i]] = len(self.ids)
            self.ids.append(ids[i])
        self.vectors = np.vstack([self.vectors, vectors[new]])
        if direction is not None:
            scores = vectors @ direction
            self.regions.append((direction, float(scores.min()) if len(scores) else math.inf))

    def bound(self, direction: NDArray[F64]) -> float:
        """An upper bound of ``direction @ x`` over every unit ``x`` outside the fetched regions.

        Outside, ``u @ x < t`` for each region, so for any ``beta >= 0``
        ``direction @ x <= |direction - sum beta u| + sum beta t``; a few choices of beta are
        tried and the smallest bound kept.
        """
        best = float(np.linalg.norm(direction))
        for u, t in self.regions:
            beta = max(0.0, float(direction @ u))
            best = min(best, float(np.linalg.norm(direction - beta * u)) + beta * t)
        if len(self.regions) > 1:
            basis = np.array([u for u, _ in self.regions])
            beta, *_ = np.linalg.lstsq(basis.T, direction, rcond=None)
            if (beta >= 0).all():
                thresholds = np.array([t for _, t in self.regions])
                residual = direction - basis.T @ beta
                best = min(best, float(np.linalg.norm(residual)) + float(beta @ thresholds))
        return best


class StoreIndex:
    """The exemplar SVM over any :class:`exemplar_svm.stores.VectorStore`.

    Searches like :meth:`ExemplarIndex.search`, with the same modes and options, but reads only a
    cached background sample and, per query, the documents near the query and near the SVM's
    margin; the whole store is ranked by the store's own similarity search.

    Parameters
    ----------
    store : VectorStore
        The vector database (see :mod:`exemplar_svm.stores`); its ids name the results.
    background : int, default=4000
        Size of the random sample that stands for the documents not fetched. Drawn once, on the
        first search, and kept until :meth:`refresh_background`. A background at least as large
        as the store makes the search exact.
    candidates : int, default=256
        Nearest documents of the query fetched (with vectors) on every search.
    max_candidates : int, default=8192
        At most this many more documents fetched, those the first model ranks highest.
    seed : int, default=0
        Seed of the background sample.

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
        self.store = store
        self.background = check_count(background, "background")
        self.candidates = check_k(candidates)
        self.max_candidates = check_count(max_candidates, "max_candidates")
        self.seed = check_count(seed, "seed")
        self._sample: tuple[list[str], NDArray[F64]] | None = None
        self._lock = threading.Lock()

    def refresh_background(self) -> None:
        """Draw the background sample again (after the store has changed a lot)."""
        ids, vectors = self.store.sample(self.background, self.seed)
        sample = (list(ids), self._unit(vectors, "the background sample"))
        with self._lock:
            self._sample = sample

    @property
    def background_ids(self) -> list[str]:
        """Ids of the cached background sample (drawn now if it has not been yet)."""
        return list(self._background()[0])

    def _background(self) -> tuple[list[str], NDArray[F64]]:
        with self._lock:
            sample = self._sample
        if sample is None:
            self.refresh_background()
            with self._lock:
                sample = self._sample
        assert sample is not None
        return sample

    def _unit(self, vectors: ArrayLike, what: str) -> NDArray[F64]:
        matrix = np.asarray(vectors, dtype=F64)
        if matrix.size == 0:
            return matrix.reshape(0, matrix.shape[-1] if matrix.ndim == 2 else 0)
        matrix = as_matrix(matrix, what)
        norms = np.linalg.norm(matrix, axis=1)
        if self.store.metric != "cosine" and np.abs(norms - 1).max() > _UNIT_TOLERANCE:
            raise ValueError(
                f"the store ranks by {self.store.metric!r} but its vectors are not "
                f"unit-normalised ({what} has norms from {norms.min():.4g} to "
                f"{norms.max():.4g}), so its ranking would not be the SVM's; use a store with "
                "cosine distance, or store normalised embeddings"
            )
        return unit_rows(matrix, what)

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
        """Rank the store for ``query``; the best ``k`` documents, best first.

        Takes the arguments of :meth:`ExemplarIndex.search`, with store ids as examples.
        ``"hybrid"`` z-scores are estimated from the fetched documents and the background.
        """
        k = check_k(k)
        # Every ranking option is a parameter of this method, named as in SEARCH_OPTIONS.
        arguments = locals()
        options = check_search_options({name: arguments[name] for name in SEARCH_OPTIONS})
        sample_ids, sample = self._background()
        total = self.store.count()
        if total == 0 or not len(sample):
            return []
        dim = sample.shape[1]
        queries = unit_rows(as_matrix(query, "query", dim=dim), "query")
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

        query_direction = direction_of(queries)
        positive_set = np.vstack([queries, pos_vectors])
        centroid = direction_of(positive_set)
        knn_direction = centroid
        if options["rocchio"] and len(neg_vectors):
            knn_direction = direction_of(
                (centroid - options["rocchio"] * neg_vectors.mean(axis=0))[np.newaxis]
            )

        pool = _Pool([], np.empty((0, dim)), {}, [])
        if mode == "knn":
            pool.add(*self._nearest(knn_direction, min(total, k + len(named))), knn_direction)
            scores = pool.vectors @ knn_direction
            return self._hits(pool, scores, named, k, query_direction)

        trainer = _Trainer(pool, options, total, named, sample, sample_ids)
        # A first model against the background alone says where the margin lies, before any
        # store query, so both fetches (the query's neighbours, and the documents that model
        # ranks highest: the ones the full SVM has to see) can run at the same time.
        guess = trainer.train(positive_set, neg_vectors, centroid)
        norm = float(np.linalg.norm(guess[0]))
        extra = min(self.max_candidates, math.ceil(_VIOLATOR_MARGIN * trainer.violators(guess)))
        fetches = [(knn_direction, self.candidates)]
        if norm and extra:  # a zero model (positives like the background) aims nowhere
            fetches.append((guess[0] / norm, extra))
        with ThreadPoolExecutor(max_workers=len(fetches)) as workers:
            futures = [
                (aim, workers.submit(self._nearest, aim, min(total, size + len(named))))
                for aim, size in fetches
            ]
            for aim, future in futures:
                pool.add(*future.result(), aim)
        trainer.pick_feedback(knn_direction)
        model = trainer.train(positive_set, neg_vectors, centroid)

        direction, offset = trainer.ranking(model, knn_direction)
        scores = pool.vectors @ direction + offset
        hits = self._hits(pool, scores, named, k, query_direction)
        if len(pool.ids) >= total:
            return hits
        if len(hits) == k and hits[-1].score - offset > pool.bound(direction):
            return hits
        # The fetched documents cannot prove the top k: let the store rank the collection.
        ids = self.store.search_by_vector(
            (direction / np.linalg.norm(direction)).astype(np.float32), k + len(named)
        )
        unseen = [item for item in dict.fromkeys(ids) if item not in pool.position]
        if unseen:
            pool.add(unseen, self._fetch(unseen, "results"), direction)
            scores = pool.vectors @ direction + offset
        return self._hits(pool, scores, named, k, query_direction)

    def _nearest(self, direction: NDArray[F64], k: int) -> tuple[list[str], NDArray[F64]]:
        ids, vectors = self.store.nearest(direction.astype(np.float32), k)
        return list(ids), self._unit(np.asarray(vectors).reshape(len(ids), -1), "nearest")

    def _fetch(self, ids: Sequence[str], what: str) -> NDArray[F64]:
        return self._unit(np.asarray(self.store.fetch(ids)).reshape(len(ids), -1), what)

    def _hits(
        self,
        pool: _Pool,
        scores: NDArray[F64],
        named: set[str],
        k: int,
        query_direction: NDArray[F64],
    ) -> list[Hit]:
        keep = np.array([item not in named for item in pool.ids], dtype=bool)
        rows = np.flatnonzero(keep)
        # Ties go to the document fetched first: the same order every run.
        order = rows[np.lexsort((rows, -scores[rows]))][:k]
        similarity = pool.vectors[order] @ query_direction
        return [
            Hit(pool.ids[row], float(scores[row]), float(cosine))
            for row, cosine in zip(order, similarity, strict=True)
        ]

    def __repr__(self) -> str:
        return (
            f"StoreIndex({type(self.store).__name__}, background={self.background}, "
            f"candidates={self.candidates}, max_candidates={self.max_candidates})"
        )


class _Trainer:
    """One query's training problem: the fetched pool plus the background for the rest."""

    def __init__(
        self,
        pool: _Pool,
        options: dict[str, Any],
        total: int,
        named: set[str],
        sample: NDArray[F64],
        sample_ids: list[str],
    ) -> None:
        self.pool = pool
        self.options = options
        self.total = total
        self.named = named
        self.sample = sample
        self.sample_ids = sample_ids
        self.sample_named = np.array([item in named for item in sample_ids], dtype=bool)
        self.feedback: list[str] = []
        self.hard: list[str] = []
        # Rows of the last problem: pool rows then the sampled rest, with their weights.
        self.rest = np.empty((0, sample.shape[1]))
        self.rest_weight = 0.0

    def pick_feedback(self, knn_direction: NDArray[F64]) -> None:
        """The nearest documents by kNN become positives (feedback) or weighted negatives.

        They are looked for among the fetched documents and the background (with a background
        as large as the store, that is every document); those found in the background join
        the fetched ones.
        """
        pool = self.pool
        fresh = [
            row
            for row, item in enumerate(self.sample_ids)
            if item not in pool.position and not self.sample_named[row]
        ]
        ids = [item for item in pool.ids if item not in self.named]
        vectors = pool.vectors[[pool.position[item] for item in ids]]
        ids += [self.sample_ids[row] for row in fresh]
        vectors = np.vstack([vectors, self.sample[fresh]])
        scores = vectors @ knn_direction
        order = np.lexsort((np.arange(len(ids)), -scores))
        # At most half the candidates, so a small store keeps negatives to train against.
        feedback = min(self.options["feedback"], (self.total - len(self.named)) // 2)
        unlabeled = self.total - len(self.named) - feedback
        hard = max(min(self.options["hard_negatives"], unlabeled - 1), 0)
        chosen = order[: feedback + hard]
        missing = [row for row in chosen if ids[row] not in pool.position]
        if missing:
            pool.add([ids[row] for row in missing], vectors[missing], None)
        self.feedback = [ids[row] for row in chosen[:feedback]]
        self.hard = [ids[row] for row in chosen[feedback:]]

    def train(
        self, positive_set: NDArray[F64], neg_vectors: NDArray[F64], centroid: NDArray[F64]
    ) -> tuple[NDArray[F64], float, NDArray[F64]]:
        pool, options = self.pool, self.options
        weights = np.ones(len(pool.ids))
        for item in self.hard:
            weights[pool.position[item]] = options["hard_negative_weight"]
        # Feedback documents are positives and named ones are passed on their own.
        for item in [*self.feedback, *self.named]:
            if item in pool.position:
                weights[pool.position[item]] = 0.0
        # The sample stands for the documents neither fetched nor named: stratified by id.
        covered = self.sample_named | np.array(
            [item in pool.position for item in self.sample_ids], dtype=bool
        )
        self.rest = self.sample[~covered]
        outside = self.total - len(pool.ids) - sum(item not in pool.position for item in self.named)
        self.rest_weight = outside / len(self.rest) if len(self.rest) and outside > 0 else 0.0
        matrix = np.ascontiguousarray(np.vstack([pool.vectors, self.rest]), dtype=np.float32)
        row_weights = np.r_[weights, np.full(len(self.rest), self.rest_weight)]
        feedback = pool.vectors[[pool.position[item] for item in self.feedback]]
        positives = np.vstack([positive_set, feedback])
        positive_weights = np.r_[
            np.ones(len(positive_set)),
            np.full(len(feedback), options["feedback_weight"]),
        ]
        negative_weight = options["negative_weight"]
        center = None
        prior = options["prior"]
        if prior:
            direction = centroid
            if options["prior_direction"] == "contrast":
                direction = direction_of((centroid - self._mean())[np.newaxis])
            center = prior * direction
        w, b, scores, _ = solve(
            positives,
            matrix,
            row_weights,
            neg_vectors,
            np.full(len(neg_vectors), negative_weight),
            options["C"],
            positive_weights=positive_weights,
            center=center,
        )
        return w, b, scores

    def _mean(self) -> NDArray[F64]:
        """The store's mean vector, estimated from the pool and the weighted rest."""
        total = self.pool.vectors.sum(axis=0) + self.rest_weight * self.rest.sum(axis=0)
        count = len(self.pool.ids) + self.rest_weight * len(self.rest)
        mean: NDArray[F64] = total / max(count, 1.0)
        return mean

    def violators(self, model: tuple[NDArray[F64], float, NDArray[F64]]) -> float:
        """Estimated number of store documents inside the margin of ``model``."""
        scores = model[2]
        inside = scores > -1
        n_pool = len(self.pool.ids)
        return float(inside[:n_pool].sum() + self.rest_weight * inside[n_pool:].sum())

    def ranking(
        self, model: tuple[NDArray[F64], float, NDArray[F64]], knn_direction: NDArray[F64]
    ) -> tuple[NDArray[F64], float]:
        """The final score as ``direction @ x + offset``: the SVM's, or the hybrid's.

        The hybrid's z-scores are linear in ``x`` too, with the mean and deviation over the
        store estimated from the pool and the weighted background.
        """
        w, b, _ = model
        if self.options["mode"] != "hybrid":
            return w, b
        keep = np.array([item not in self.named for item in self.pool.ids], dtype=bool)
        rows = np.vstack([self.pool.vectors[keep], self.rest])
        weights = np.r_[np.ones(int(keep.sum())), np.full(len(self.rest), self.rest_weight)]
        share = self.options["hybrid_weight"]
        direction = np.zeros_like(w)
        offset = 0.0
        for part, (u, c) in zip((share, 1 - share), ((w, b), (knn_direction, 0.0)), strict=True):
            values = rows @ u + c
            mean = float(np.average(values, weights=weights))
            std = math.sqrt(float(np.average((values - mean) ** 2, weights=weights)))
            std = std if std > 0 else 1.0
            direction += part * u / std
            offset += part * (c - mean) / std
        return direction, offset


__all__ = ["StoreIndex"]
