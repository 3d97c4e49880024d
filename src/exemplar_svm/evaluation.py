"""Retrieval-quality evaluation: rank a labelled dataset with several search methods and compare.

A *method* is a name and the keyword arguments it passes to :meth:`ExemplarIndex.search`, such as
``{"svm C=0.1": {"mode": "svm", "C": 0.1}}``, so any mode or option of the index can be measured
without changing this module.

A method may instead name a vector database's "more like these, not like those" baseline:
options ``{"baseline": "best_score"}`` (the reserved key ``"baseline"``, alone) rank with
:func:`exemplar_svm.baselines.recommend_scores`, exactly as Qdrant's Recommend API does on a
cosine collection, with the query and the positive examples as its positives and the negative
examples as its negatives. The strategies are ``"average_vector"``, ``"best_score"`` and
``"sum_scores"`` (:data:`~exemplar_svm.baselines.RECOMMEND_STRATEGIES`).

Two kinds of dataset are read (see :func:`load_dataset`):

* **text queries** in the BEIR layout: ``corpus.jsonl``, ``queries.jsonl`` and
  ``qrels/test.tsv`` (graded gains);
* **query by example**: a ``corpus.jsonl`` whose records carry a ``label``; a sample of
  documents serve as queries and every other document with the same label is relevant.

Two protocols are measured (see :func:`evaluate`):

* ``"query"``: the query alone;
* ``"feedback"``: relevance feedback, the query plus a few relevant documents as ``positives``
  and a few non-relevant ones as ``negatives``; the examples are left out of the judgements.

The metrics are nDCG@10, Recall@100, P@10 and MAP@100 (:data:`METRICS`), as trec_eval defines
them (``ndcg_cut_10`` with linear gains, ``recall_100``, ``P_10``, ``map_cut_100``) and BEIR
and ranx report them: a gain > 0 is relevant, and MAP@100 divides by the number of relevant
documents of the query, not by ``min(relevant, 100)``. They come with per-query paired
differences against a baseline method (kNN by default), their standard errors and win/loss
counts. :class:`Report` prints as a Markdown table or as JSON. Queries can be split in two
stable halves (``split="tune"`` / ``"test"``) so that what is tuned on one half is reported
on the other.

Examples
--------
>>> from exemplar_svm.evaluation import evaluate, load_dataset
>>> dataset = load_dataset("../shared/datasets/cranfield")  # doctest: +SKIP
>>> report = evaluate(dataset, {"knn": {"mode": "knn"}, "svm": {"mode": "svm"}})  # doctest: +SKIP
>>> print(report.to_markdown())  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from exemplar_svm.baselines import RECOMMEND_STRATEGIES, recommend_scores
from exemplar_svm.corpus import ID_KEYS, read_jsonl
from exemplar_svm.embedders import Embedder, progress_on
from exemplar_svm.index import ExemplarIndex, top_k

Split = Literal["all", "tune", "test"]
Protocol = Literal["query", "feedback"]
Kind = Literal["text", "example"]
SPLITS: tuple[str, ...] = get_args(Split)
PROTOCOLS: tuple[str, ...] = get_args(Protocol)

#: The metrics of every report, in table order.
METRICS: tuple[str, ...] = ("nDCG@10", "Recall@100", "P@10", "MAP@100")

#: Where the precomputed embeddings of a dataset live, relative to its folder.
DEFAULT_EMBEDDINGS = "embeddings/all-MiniLM-L6-v2"

#: The methods measured when none are given: the baselines, every search mode with the library's
#: defaults (so the figures follow what ``ExemplarIndex.search`` does out of the box) and the
#: default itself; kNN is the baseline the others are compared with.
DEFAULT_METHODS: dict[str, dict[str, Any]] = {
    "knn": {"mode": "knn"},
    # Dense pseudo-relevance feedback as anyone writes it: q + 1 * mean(top 5 kNN), then kNN.
    "dense prf (m=5, beta=1)": {
        "mode": "prf",
        "feedback": 5,
        "feedback_threshold": 0,
        "prf_weight": 1.0,
    },
    # The notebook everyone copies: C=0.1, the query as the only positive.
    "svm (textbook)": {"mode": "svm", "C": 0.1, "feedback": 0},
    "hybrid (textbook)": {
        "mode": "hybrid",
        "C": 0.1,
        "feedback": 0,
        "prf_weight": 0.0,
        "hybrid_weight": 0.5,
    },
    # The text hint: w kept near 3 times the query direction.
    "svm + prior": {"mode": "svm", "C": 0.1, "feedback": 0, "prior": 3.0},
    # The SVM with the feedback documents as weak positives, at the library's C.
    "svm + feedback": {"mode": "svm"},
    # The SVM's fast approximation: the whitened mean difference (query against the corpus).
    "lda": {"mode": "lda", "feedback": 0},
    # The adaptive dense PRF and its hybrid with the SVM, at the library's settings.
    "prf": {"mode": "prf"},
    "hybrid": {"mode": "hybrid"},
    "default": {},
}

#: The dense-PRF settings :func:`tune_prf` chooses from: feedback documents ``m`` and weight
#: ``beta`` of ``q + beta * mean(top m kNN documents)``.
PRF_GRID: tuple[tuple[int, float], ...] = tuple(
    (m, beta) for m in (2, 3, 5, 10, 20) for beta in (0.5, 1.0, 2.0, 4.0)
)

#: The name :func:`tune_prf`'s method goes by in a report.
TUNED_PRF = "dense prf (tuned)"


def prf_method(m: int, beta: float) -> dict[str, Any]:
    """The search options of dense PRF with ``m`` feedback documents of weight ``beta``."""
    return {"mode": "prf", "feedback": m, "feedback_threshold": 0, "prf_weight": beta}


#: Methods for the relevance-feedback protocol: centroid (Rocchio) baselines, Qdrant's recommend
#: strategies and SVMs.
FEEDBACK_METHODS: dict[str, dict[str, Any]] = {
    # The centroid of the query and the positives; the negatives ignored.
    "knn": {"mode": "knn", "demote": 0.0},
    # Rocchio: the centroid minus a weight times the negatives' centroid (0.25 is the classic).
    "rocchio 0.25": {"mode": "knn", "rocchio": 0.25, "demote": 0.0},
    "rocchio 0.5": {"mode": "knn", "rocchio": 0.5, "demote": 0.0},
    "rocchio 1": {"mode": "knn", "rocchio": 1.0, "demote": 0.0},
    # What a vector database offers: Qdrant's Recommend API (exemplar_svm.baselines).
    "qdrant average_vector": {"baseline": "average_vector"},
    "qdrant best_score": {"baseline": "best_score"},
    "qdrant sum_scores": {"baseline": "sum_scores"},
    "svm (textbook)": {"mode": "svm", "C": 0.1, "feedback": 0, "negative_weight": 10.0},
    # The library's modes at their defaults.
    "prf": {"mode": "prf"},
    "svm": {"mode": "svm"},
    "default": {},
}

#: Query-by-example sample size and seed of the shared datasets' reference figures.
DEFAULT_QUERIES = 300
DEFAULT_SEED = 0

#: Differences at most this large count as ties.
TIE_TOLERANCE = 1e-9

_RESERVED = frozenset({"query", "k"})
#: The option naming a vector-database baseline (exemplar_svm.baselines) instead of a search.
_BASELINE = "baseline"
_EXAMPLE_KEYS = frozenset({"positives", "negatives"})


# -- data ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Query:
    """One evaluation query.

    Attributes
    ----------
    id : str
        The query's id (for query by example, the id of the query document).
    vector : ndarray of shape (d,)
        The query embedding.
    relevant : dict of str to float
        Judged documents and their gains; a gain > 0 is relevant.
    document : str or None
        For query by example, the corpus id of the query document, which is never judged:
        it is dropped from the ranking. ``None`` for text queries.
    text : str or None
        The query text, when there is one.
    """

    id: str
    vector: NDArray[np.float32]
    relevant: dict[str, float]
    document: str | None = None
    text: str | None = None


@dataclass(frozen=True, eq=False)
class Dataset:
    """A corpus, its embeddings and judged queries.

    Attributes
    ----------
    name : str
        A short name (the folder's name).
    kind : {"text", "example"}
        ``"text"`` for text queries with qrels, ``"example"`` for query by example on a
        labelled corpus.
    ids : list of str
        Corpus document ids, in row order.
    vectors : ndarray of shape (n, d)
        Corpus embeddings, one row per id.
    queries : list of Query
        The queries, in file order (text) or sampling order (example).
    labels : list of str or None
        Each document's label, for a labelled corpus.
    """

    name: str
    kind: Kind
    ids: list[str]
    vectors: NDArray[np.float32]
    queries: list[Query]
    labels: list[str] | None = None


def document_text(record: Mapping[str, Any]) -> str:
    """The text embedded for a corpus record: ``title + " " + text``, or ``text`` alone.

    This is the BEIR convention; the shared datasets have empty titles, so their precomputed
    embeddings are of ``text`` alone either way.
    """
    text = record.get("text")
    if not isinstance(text, str):
        raise ValueError(f"corpus record {record.get('_id', '?')!r} has no 'text' string")
    title = record.get("title")
    return f"{title} {text}" if isinstance(title, str) and title else text


def has_embeddings(
    folder: str | os.PathLike[str], embeddings: str | os.PathLike[str] = DEFAULT_EMBEDDINGS
) -> bool:
    """Whether ``folder`` holds the precomputed embeddings its queries need.

    ``corpus.npy`` always, and ``queries.npy`` too for a text-query (BEIR) dataset.
    """
    base = Path(folder)
    directory = base / embeddings
    needed = ["corpus.npy"] + (["queries.npy"] if (base / "queries.jsonl").is_file() else [])
    return all((directory / name).is_file() for name in needed)


def load_dataset(
    folder: str | os.PathLike[str],
    *,
    embeddings: str | os.PathLike[str] = DEFAULT_EMBEDDINGS,
    embedder: Embedder | None = None,
    n_queries: int | None = DEFAULT_QUERIES,
    seed: int = DEFAULT_SEED,
) -> Dataset:
    """Load a dataset folder: text queries if it has ``queries.jsonl``, else query by example.

    Parameters
    ----------
    folder : path
        The dataset folder.
    embeddings : path, default="embeddings/all-MiniLM-L6-v2"
        Folder of the precomputed ``corpus.npy`` (and ``queries.npy``), relative to ``folder``.
    embedder : Embedder, optional
        Embed the texts with this model instead of reading precomputed embeddings.
    n_queries, seed
        Query-by-example sampling, see :func:`load_labelled`; unused for text queries.

    Returns
    -------
    Dataset
    """
    if (Path(folder) / "queries.jsonl").is_file():
        return load_beir(folder, embeddings=embeddings, embedder=embedder)
    return load_labelled(
        folder, embeddings=embeddings, embedder=embedder, n_queries=n_queries, seed=seed
    )


def load_beir(
    folder: str | os.PathLike[str],
    *,
    embeddings: str | os.PathLike[str] = DEFAULT_EMBEDDINGS,
    embedder: Embedder | None = None,
    qrels: str = "qrels/test.tsv",
) -> Dataset:
    """Load a BEIR-format text-query dataset.

    Parameters
    ----------
    folder : path
        Holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``,
        ``text``) and the qrels.
    embeddings : path, default="embeddings/all-MiniLM-L6-v2"
        Folder, relative to ``folder``, of ``corpus.npy`` and ``queries.npy``: float arrays
        with one row per line of ``corpus.jsonl`` / ``queries.jsonl``, in file order.
    embedder : Embedder, optional
        Embed instead: documents with ``embed_documents`` (see :func:`document_text`), queries
        with ``embed_query``. The precomputed embeddings are then not read.
    qrels : str, default="qrels/test.tsv"
        The judgements, relative to ``folder``: ``query-id<TAB>corpus-id<TAB>gain`` lines after
        an optional header. Gains of 0 or less are judged non-relevant.

    Returns
    -------
    Dataset
        Every query of ``queries.jsonl``, those without a relevant document included
        (:func:`evaluate` skips and counts them).
    """
    base = Path(folder)
    records = read_jsonl(base / "corpus.jsonl")
    ids = [_record_id(record, base / "corpus.jsonl", line) for line, record in records]
    query_records = read_jsonl(base / "queries.jsonl")
    query_ids = [_record_id(record, base / "queries.jsonl", line) for line, record in query_records]
    query_texts = [str(record.get("text", "")) for _, record in query_records]
    judgements = _read_qrels(base / qrels)
    if embedder is None:
        vectors = _load_vectors(base, embeddings, "corpus", len(ids))
        query_vectors = _load_vectors(base, embeddings, "queries", len(query_ids))
    else:
        vectors = _embed_documents(embedder, [document_text(record) for _, record in records])
        query_vectors = np.vstack([embedder.embed_query(text) for text in query_texts]).astype(
            np.float32
        )
    queries = [
        Query(id=query_id, vector=query_vectors[row], relevant=judgements.get(query_id, {}), text=t)
        for row, (query_id, t) in enumerate(zip(query_ids, query_texts, strict=True))
    ]
    return Dataset(name=base.resolve().name, kind="text", ids=ids, vectors=vectors, queries=queries)


def load_labelled(
    folder: str | os.PathLike[str],
    *,
    embeddings: str | os.PathLike[str] = DEFAULT_EMBEDDINGS,
    embedder: Embedder | None = None,
    n_queries: int | None = DEFAULT_QUERIES,
    seed: int = DEFAULT_SEED,
    label_field: str = "label",
) -> Dataset:
    """Load a labelled corpus for query by example.

    A sample of documents serve as queries, each with its stored embedding; the relevant
    documents of a query are the other documents with the same label (gain 1). The query
    document stays in the corpus (so the SVM sees it among its negatives, as in the shared
    datasets' reference figures) but :func:`evaluate` drops it from the ranking.

    Parameters
    ----------
    folder : path
        Holds ``corpus.jsonl`` with ``_id``, ``text`` and ``label`` fields.
    embeddings : path, default="embeddings/all-MiniLM-L6-v2"
        Folder, relative to ``folder``, of ``corpus.npy`` (one row per line of
        ``corpus.jsonl``).
    embedder : Embedder, optional
        Embed the documents with this model instead (see :func:`document_text`).
    n_queries : int or None, default=300
        How many query documents: rows ``np.random.default_rng(seed).choice(n, n_queries,
        replace=False)``, in that order (this reproduces the reference figures). ``None``, or
        a number at least the corpus size, takes every document in corpus order.
    seed : int, default=0
        Seed of the sample.
    label_field : str, default="label"
        The record field holding the label.

    Returns
    -------
    Dataset
    """
    base = Path(folder)
    records = read_jsonl(base / "corpus.jsonl")
    ids = [_record_id(record, base / "corpus.jsonl", line) for line, record in records]
    labels = []
    for line, record in records:
        if label_field not in record:
            raise ValueError(
                f"{base / 'corpus.jsonl'} line {line} has no {label_field!r} field; query by "
                "example needs a labelled corpus (or add queries.jsonl and qrels for text queries)"
            )
        labels.append(str(record[label_field]))
    if embedder is None:
        vectors = _load_vectors(base, embeddings, "corpus", len(ids))
    else:
        vectors = _embed_documents(embedder, [document_text(record) for _, record in records])
    if n_queries is not None and (isinstance(n_queries, bool) or n_queries < 1):
        raise ValueError(f"n_queries must be a positive whole number or None, got {n_queries!r}")
    if n_queries is None or n_queries >= len(ids):
        rows = list(range(len(ids)))
    else:
        rows = [int(row) for row in np.random.default_rng(seed).choice(len(ids), n_queries, False)]
    members: dict[str, list[str]] = {}
    for doc_id, label in zip(ids, labels, strict=True):
        members.setdefault(label, []).append(doc_id)
    queries = [
        Query(
            id=ids[row],
            vector=vectors[row],
            relevant={doc: 1.0 for doc in members[labels[row]] if doc != ids[row]},
            document=ids[row],
        )
        for row in rows
    ]
    return Dataset(
        name=base.resolve().name,
        kind="example",
        ids=ids,
        vectors=vectors,
        queries=queries,
        labels=labels,
    )


def _record_id(record: dict[str, Any], path: Path, line: int) -> str:
    key = next((key for key in ID_KEYS if key in record), None)
    if key is None:
        raise ValueError(f"{path} line {line} has no id: give it an '_id' field")
    return str(record[key])


def _read_qrels(path: Path) -> dict[str, dict[str, float]]:
    if not path.is_file():
        raise ValueError(f"{path} does not exist: a text-query dataset needs its qrels")
    judgements: dict[str, dict[str, float]] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 3:
                raise ValueError(f"{path} line {number}: expected query-id, corpus-id, gain")
            try:
                gain = float(fields[2])
            except ValueError:
                if number == 1:
                    continue  # the header line
                raise ValueError(
                    f"{path} line {number}: the gain {fields[2]!r} is not a number"
                ) from None
            judgements.setdefault(fields[0], {})[fields[1]] = gain
    return judgements


def _load_vectors(
    folder: Path, embeddings: str | os.PathLike[str], name: str, rows: int
) -> NDArray[np.float32]:
    path = folder / embeddings / f"{name}.npy"
    if not path.is_file():
        raise ValueError(
            f"no precomputed embeddings at {path}; pass an embedder (CLI: --model) to embed "
            "the texts, or another --embeddings folder"
        )
    array = np.load(path, allow_pickle=False)
    if array.ndim != 2 or len(array) != rows:
        raise ValueError(
            f"{path} has shape {array.shape} but {name} has {rows} records: expected one row each"
        )
    return np.ascontiguousarray(array, dtype=np.float32)


def _embed_documents(embedder: Embedder, texts: list[str]) -> NDArray[np.float32]:
    return np.ascontiguousarray(embedder.embed_documents(texts), dtype=np.float32)


# -- splits ----------------------------------------------------------------------------------


def query_split(query_id: str) -> Literal["tune", "test"]:
    """The stable half a query belongs to: ``"tune"`` or ``"test"``.

    Decided by the parity of the first byte of ``sha256(query_id)``, so a query stays on its
    side across runs, machines and sample sizes, and the halves are about equal.
    """
    return "tune" if hashlib.sha256(query_id.encode("utf-8")).digest()[0] % 2 == 0 else "test"


def select_split(queries: Iterable[Query], split: str) -> list[Query]:
    """The queries of ``split``: ``"all"``, or the ``"tune"`` or ``"test"`` half."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return [query for query in queries if split == "all" or query_split(query.id) == split]


# -- metrics ---------------------------------------------------------------------------------


def _gains(ranking: Sequence[str], relevant: Mapping[str, float], k: int) -> NDArray[np.float64]:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive whole number, got {k!r}")
    return np.array([max(relevant.get(doc, 0.0), 0.0) for doc in ranking[:k]], dtype=np.float64)


def _count_relevant(relevant: Mapping[str, float]) -> int:
    return sum(gain > 0 for gain in relevant.values())


def ndcg(ranking: Sequence[str], relevant: Mapping[str, float], k: int = 10) -> float:
    """Normalised discounted cumulative gain at ``k``, with graded gains.

    ``DCG = sum(gain_i / log2(i + 1))`` over the ranks ``i = 1..k`` (linear gains, as given),
    divided by the DCG of the ideal ranking of every relevant document of the query.

    Parameters
    ----------
    ranking : sequence of str
        Document ids, best first, without duplicates.
    relevant : mapping of str to float
        Judged documents and their gains; gains of 0 or less count as 0.
    k : int, default=10
        The cutoff.

    Returns
    -------
    float
        In [0, 1]; 0.0 when nothing is relevant.
    """
    gains = _gains(ranking, relevant, k)
    ideal = np.sort(np.array([g for g in relevant.values() if g > 0], dtype=np.float64))[::-1][:k]
    if not len(ideal):
        return 0.0
    dcg = float(gains @ (1 / np.log2(np.arange(2, len(gains) + 2))))
    best = float(ideal @ (1 / np.log2(np.arange(2, len(ideal) + 2))))
    return dcg / best


def precision(ranking: Sequence[str], relevant: Mapping[str, float], k: int = 10) -> float:
    """Precision at ``k``: relevant documents in the top ``k``, divided by ``k``.

    A ranking shorter than ``k`` counts its missing ranks as non-relevant.
    """
    return float(np.count_nonzero(_gains(ranking, relevant, k))) / k


def recall(ranking: Sequence[str], relevant: Mapping[str, float], k: int = 100) -> float:
    """Recall at ``k``: the share of the relevant documents found in the top ``k``.

    0.0 when nothing is relevant.
    """
    total = _count_relevant(relevant)
    return float(np.count_nonzero(_gains(ranking, relevant, k))) / total if total else 0.0


def _precision_sum(ranking: Sequence[str], relevant: Mapping[str, float], k: int) -> float:
    """The sum of the precision at the rank of each relevant document in the top ``k``."""
    hits = _gains(ranking, relevant, k) > 0
    precisions = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precisions[hits].sum())


def average_precision(ranking: Sequence[str], relevant: Mapping[str, float], k: int = 100) -> float:
    """Average precision cut at ``k`` (the per-query term of MAP@k).

    The sum of the precision at the rank of each relevant document in the top ``k``, divided
    by the number of relevant documents of the query: trec_eval's ``map_cut_k``, which BEIR
    and ranx report as map@k. Relevant documents missing from the top ``k`` count as
    precision 0, so when more than ``k`` documents are relevant even a perfect top ``k``
    scores ``k / relevant`` (see :func:`capped_average_precision` for the variant that scores
    it 1). 0.0 when nothing is relevant.
    """
    total = _count_relevant(relevant)
    return _precision_sum(ranking, relevant, k) / total if total else 0.0


def capped_average_precision(
    ranking: Sequence[str], relevant: Mapping[str, float], k: int = 100
) -> float:
    """Average precision at ``k`` that divides by ``min(relevant, k)``, not by ``relevant``.

    Not trec_eval's ``map_cut`` (that is :func:`average_precision`, the ``"MAP@100"`` of
    :data:`METRICS`): here a perfect top ``k`` scores 1 even when more than ``k`` documents
    are relevant, so values are higher than the standard MAP@k whenever a query has more than
    ``k`` relevant documents. Not part of the reports; for comparison with figures computed
    that way. 0.0 when nothing is relevant.
    """
    total = _count_relevant(relevant)
    return _precision_sum(ranking, relevant, k) / min(total, k) if total else 0.0


def ranking_metrics(ranking: Sequence[str], relevant: Mapping[str, float]) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one ranking."""
    return {
        "nDCG@10": ndcg(ranking, relevant, 10),
        "Recall@100": recall(ranking, relevant, 100),
        "P@10": precision(ranking, relevant, 10),
        "MAP@100": average_precision(ranking, relevant, 100),
    }


# -- paired statistics -----------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """Per-query paired differences of one metric: a method minus the baseline.

    Attributes
    ----------
    n : int
        Queries compared.
    mean_difference : float
        Mean of the per-query differences.
    standard_error : float
        ``std(differences, ddof=1) / sqrt(n)``; NaN for fewer than two queries.
    wins, losses, ties : int
        Queries where the method scores higher, lower, or the same (within
        :data:`TIE_TOLERANCE`).
    """

    n: int
    mean_difference: float
    standard_error: float
    wins: int
    losses: int
    ties: int

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-serialisable values (NaN becomes ``None``)."""
        return {
            "n": self.n,
            "mean_difference": _finite_or_none(self.mean_difference),
            "standard_error": _finite_or_none(self.standard_error),
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
        }


def paired_comparison(values: Sequence[float], baseline: Sequence[float]) -> Comparison:
    """Compare per-query ``values`` with the ``baseline``'s, query by query.

    Parameters
    ----------
    values, baseline : sequence of float
        One value per query, in the same query order.

    Returns
    -------
    Comparison
    """
    method = np.asarray(values, dtype=np.float64)
    reference = np.asarray(baseline, dtype=np.float64)
    if method.shape != reference.shape or method.ndim != 1:
        raise ValueError(
            f"paired values need the same queries: got {method.shape} and {reference.shape}"
        )
    differences = method - reference
    n = len(differences)
    mean = float(differences.mean()) if n else math.nan
    error = float(differences.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Comparison(
        n=n,
        mean_difference=mean,
        standard_error=error,
        wins=int(np.count_nonzero(differences > TIE_TOLERANCE)),
        losses=int(np.count_nonzero(differences < -TIE_TOLERANCE)),
        ties=int(np.count_nonzero(np.abs(differences) <= TIE_TOLERANCE)),
    )


# -- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MethodResult:
    """One method's results over the evaluated queries.

    Attributes
    ----------
    name : str
        The method's name.
    options : dict
        The keyword arguments it passed to :meth:`ExemplarIndex.search`.
    scores : dict of str to ndarray
        Per-query values of each metric, aligned with :attr:`Report.query_ids`.
    latency_ms : ndarray
        Per-query time of the ``search`` call, in milliseconds.
    vs_baseline : dict of str to Comparison
        Paired comparison with the baseline per metric; empty for the baseline itself.
    """

    name: str
    options: dict[str, Any]
    scores: dict[str, NDArray[np.float64]]
    latency_ms: NDArray[np.float64]
    vs_baseline: dict[str, Comparison] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        """The mean of each metric over the queries."""
        return {
            metric: float(values.mean()) if len(values) else math.nan
            for metric, values in self.scores.items()
        }

    @property
    def median_ms(self) -> float:
        """Median per-query search latency, in milliseconds."""
        return float(np.median(self.latency_ms)) if len(self.latency_ms) else math.nan

    @property
    def mean_ms(self) -> float:
        """Mean per-query search latency, in milliseconds."""
        return float(self.latency_ms.mean()) if len(self.latency_ms) else math.nan


@dataclass(frozen=True, eq=False)
class Report:
    """The outcome of :func:`evaluate`.

    Attributes
    ----------
    dataset : str
        The dataset's name.
    kind : {"text", "example"}
        Text queries or query by example.
    protocol : {"query", "feedback"}
        The query alone, or with relevance-feedback examples.
    split : {"all", "tune", "test"}
        Which queries.
    k : int
        Documents ranked per query.
    baseline : str or None
        The method the others are compared with.
    query_ids : list of str
        The evaluated queries, in order.
    skipped : list of str
        Queries of the split left out: no relevant document to judge (under ``"feedback"``,
        none left once the positive examples are taken).
    methods : dict of str to MethodResult
        Results per method, in the order given.
    n_positives, n_negatives : int
        Feedback examples per query (0 under ``"query"``).
    seed : int
        Seed of the feedback examples.
    """

    dataset: str
    kind: str
    protocol: str
    split: str
    k: int
    baseline: str | None
    query_ids: list[str]
    skipped: list[str]
    methods: dict[str, MethodResult]
    n_positives: int = 0
    n_negatives: int = 0
    seed: int = DEFAULT_SEED

    def describe(self) -> str:
        """One line saying what was measured."""
        kind = "text queries" if self.kind == "text" else "query by example"
        protocol = (
            f"relevance feedback ({self.n_positives} positives + {self.n_negatives} negatives)"
            if self.protocol == "feedback"
            else "the query alone"
        )
        skipped = f"{len(self.skipped)} skipped with no relevant document to judge"
        return (
            f"{self.dataset}: {kind}, {protocol}, split {self.split}: "
            f"{len(self.query_ids)} queries ({skipped}), top {self.k}"
        )

    def to_markdown(self) -> str:
        """A Markdown table: each metric's mean, the paired difference with the baseline and
        its standard error, wins/losses, and the search latency per query."""
        header = ["method", *METRICS, "ms/query (median / mean)"]
        lines = [
            f"**{self.describe()}**",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for result in self.methods.values():
            cells = [_escape(result.name)]
            for metric in METRICS:
                value = _number(result.mean[metric])
                if metric in result.vs_baseline:
                    diff = result.vs_baseline[metric]
                    value += (
                        f" ({_signed(diff.mean_difference)} ± {_number(diff.standard_error)}, "
                        f"{diff.wins}/{diff.losses})"
                    )
                cells.append(value)
            cells.append(f"{_ms(result.median_ms)} / {_ms(result.mean_ms)}")
            lines.append("| " + " | ".join(cells) + " |")
        if self.baseline is not None and len(self.methods) > 1:
            lines += [
                "",
                f"In brackets: the mean per-query difference with {self.baseline} ± its standard "
                "error, then the queries won/lost.",
            ]
        return "\n".join(lines)

    def to_json(self, *, per_query: bool = False) -> dict[str, Any]:
        """Plain, JSON-serialisable dicts and lists (NaN becomes ``None``).

        Parameters
        ----------
        per_query : bool, default=False
            Include every query's metric values and latency, in :attr:`query_ids` order.
        """
        methods: dict[str, Any] = {}
        for name, result in self.methods.items():
            entry: dict[str, Any] = {
                "options": _plain(result.options),
                "mean": {metric: _finite_or_none(value) for metric, value in result.mean.items()},
                "latency_ms": {
                    "median": _finite_or_none(result.median_ms),
                    "mean": _finite_or_none(result.mean_ms),
                },
            }
            if result.vs_baseline:
                entry["vs_baseline"] = {
                    metric: comparison.to_json()
                    for metric, comparison in result.vs_baseline.items()
                }
            if per_query:
                entry["per_query"] = {
                    **{metric: values.tolist() for metric, values in result.scores.items()},
                    "latency_ms": result.latency_ms.tolist(),
                }
            methods[name] = entry
        payload: dict[str, Any] = {
            "dataset": self.dataset,
            "kind": self.kind,
            "protocol": self.protocol,
            "split": self.split,
            "k": self.k,
            "baseline": self.baseline,
            "queries": len(self.query_ids),
            "skipped": len(self.skipped),
            "metrics": list(METRICS),
            "methods": methods,
        }
        if self.protocol == "feedback":
            payload.update(n_positives=self.n_positives, n_negatives=self.n_negatives)
            payload["seed"] = self.seed
        if per_query:
            payload["query_ids"] = list(self.query_ids)
            payload["skipped_ids"] = list(self.skipped)
        return payload


@dataclass(frozen=True)
class _Task:
    vector: NDArray[np.float32]
    relevant: dict[str, float]
    positives: list[str]
    negatives: list[str]
    excluded: frozenset[str]


def evaluate(
    dataset: Dataset,
    methods: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    baseline: str | None = "knn",
    k: int = 100,
    split: str = "all",
    protocol: str = "query",
    n_positives: int = 3,
    n_negatives: int = 3,
    seed: int = DEFAULT_SEED,
    max_queries: int | None = None,
    show_progress: bool | None = None,
) -> Report:
    """Rank ``dataset``'s queries with every method and measure :data:`METRICS`.

    Parameters
    ----------
    dataset : Dataset
        From :func:`load_dataset`, :func:`load_beir` or :func:`load_labelled`.
    methods : mapping of str to mapping, optional
        Method name -> keyword arguments of :meth:`ExemplarIndex.search` (anything but
        ``query`` and ``k``, and under ``"feedback"`` also not ``positives``/``negatives``),
        or ``{"baseline": strategy}`` alone for Qdrant's recommend strategy ``strategy``
        (``"average_vector"``, ``"best_score"`` or ``"sum_scores"``, see
        :func:`exemplar_svm.baselines.recommend_scores`): the query and the positives are its
        positives, the negatives its negatives, ties go to the lower corpus row.
        Default: :data:`DEFAULT_METHODS`, or :data:`FEEDBACK_METHODS` for the feedback
        protocol.
    baseline : str or None, default="knn"
        The method every other is compared with, query by query; it must be in ``methods``.
        ``None`` compares nothing.
    k : int, default=100
        Documents ranked per query (the metrics look at the top 10 and 100).
    split : {"all", "tune", "test"}, default="all"
        Every query or one stable half of them (see :func:`query_split`): choose settings on
        ``"tune"``, report on ``"test"``.
    protocol : {"query", "feedback"}, default="query"
        ``"query"`` searches with the query alone. ``"feedback"`` adds, per query,
        ``n_positives`` relevant documents as ``positives`` and ``n_negatives`` non-relevant
        ones as ``negatives`` (for a labelled corpus: same label / other labels), drawn with a
        generator seeded by ``seed`` and the query id, so every method sees the same examples.
        The examples are dropped from the ranking and from the judgements; queries with at most
        ``n_positives`` relevant documents are skipped.
    n_positives, n_negatives : int, default=3
        Feedback examples per query.
    seed : int, default=0
        Seed of the feedback examples.
    max_queries : int, optional
        Evaluate only the first ``max_queries`` queries of the split that have something to
        judge: a quick look, not a figure to report.
    show_progress : bool or None
        Show a progress bar; ``None`` shows one for long runs when standard error is a terminal.

    Returns
    -------
    Report

    Notes
    -----
    For query by example the query document stays in the corpus (a negative to the SVM) and is
    dropped from its own ranking. Every method is run once on the first query before timing, so
    one-off costs (such as the corpus statistics of the SVM solver) do not count as latency;
    the methods take turns on each query, so load on the machine affects them alike.
    """
    if methods is None:
        methods = FEEDBACK_METHODS if protocol == "feedback" else DEFAULT_METHODS
    chosen = {name: dict(options) for name, options in methods.items()}
    _check_methods(chosen, baseline, protocol)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive whole number, got {k!r}")
    for count, name in ((n_positives, "n_positives"), (n_negatives, "n_negatives")):
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {count!r}")
    if max_queries is not None and (
        isinstance(max_queries, bool) or not isinstance(max_queries, int) or max_queries < 1
    ):
        raise ValueError(
            f"max_queries must be a positive whole number or None, got {max_queries!r}"
        )
    feedback = protocol == "feedback"
    tasks, query_ids, skipped = _plan(
        dataset, select_split(dataset.queries, split), feedback, n_positives, n_negatives, seed
    )
    if max_queries is not None:
        tasks, query_ids = tasks[:max_queries], query_ids[:max_queries]
    if not tasks:
        raise ValueError(
            f"no query of {dataset.name} (split {split!r}) has a relevant document to judge"
        )
    index = ExemplarIndex(dataset.vectors, dataset.ids)
    for name, options in chosen.items():  # warm-up, and a clear error for a bad method
        try:
            _search(index, tasks[0], k, options)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"method {name!r} ({json.dumps(_plain(options))}): {exc}") from exc

    scores = {name: np.empty((len(METRICS), len(tasks))) for name in chosen}
    latency = {name: np.empty(len(tasks)) for name in chosen}
    total = len(tasks) * len(chosen)
    bar = None
    if progress_on(show_progress, total):
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"Evaluating {dataset.name}", unit="search")
    try:
        for column, task in enumerate(tasks):
            for name, options in chosen.items():
                start = time.perf_counter()
                ranking = _search(index, task, k, options)
                latency[name][column] = (time.perf_counter() - start) * 1000
                values = ranking_metrics(ranking, task.relevant)
                scores[name][:, column] = [values[metric] for metric in METRICS]
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    results: dict[str, MethodResult] = {}
    for name, options in chosen.items():
        comparisons = {}
        if baseline is not None and name != baseline:
            comparisons = {
                metric: paired_comparison(scores[name][row], scores[baseline][row])
                for row, metric in enumerate(METRICS)
            }
        results[name] = MethodResult(
            name=name,
            options=options,
            scores={metric: scores[name][row] for row, metric in enumerate(METRICS)},
            latency_ms=latency[name],
            vs_baseline=comparisons,
        )
    return Report(
        dataset=dataset.name,
        kind=dataset.kind,
        protocol=protocol,
        split=split,
        k=k,
        baseline=baseline,
        query_ids=query_ids,
        skipped=skipped,
        methods=results,
        n_positives=n_positives if feedback else 0,
        n_negatives=n_negatives if feedback else 0,
        seed=seed,
    )


def tune_prf(
    dataset: Dataset,
    *,
    split: str = "tune",
    metric: str = "nDCG@10",
    grid: Sequence[tuple[int, float]] = PRF_GRID,
) -> tuple[int, float]:
    """The dense-PRF setting ``(m, beta)`` of ``grid`` with the best mean ``metric`` on ``split``.

    This is the strongest cheap baseline a careful user would build for their corpus: tune
    it on the ``"tune"`` half, report it (with :func:`prf_method`) on the ``"test"`` half. Ties
    go to the earlier setting of the grid.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if not grid:
        raise ValueError("the PRF grid is empty")
    methods = {f"{m},{beta}": prf_method(m, beta) for m, beta in grid}
    report = evaluate(dataset, methods, baseline=None, split=split, show_progress=False)
    means = [report.methods[name].mean[metric] for name in methods]
    best = int(np.argmax(np.asarray(means) + TIE_TOLERANCE * -np.arange(len(means))))
    return grid[best]


def _check_methods(methods: dict[str, dict[str, Any]], baseline: str | None, protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if not methods:
        raise ValueError("no methods to evaluate")
    if baseline is not None and baseline not in methods:
        raise ValueError(
            f"the baseline {baseline!r} is not among the methods ({', '.join(methods)}); add it, "
            'e.g. {"knn": {"mode": "knn"}}, or pass baseline=None'
        )
    for name, options in methods.items():
        reserved = (_RESERVED | (_EXAMPLE_KEYS if protocol == "feedback" else set())) & set(options)
        if reserved:
            raise ValueError(
                f"method {name!r} sets {', '.join(sorted(reserved))}, which the evaluation "
                "chooses itself"
            )
        if _BASELINE in options:
            strategy = options[_BASELINE]
            if not isinstance(strategy, str) or strategy not in RECOMMEND_STRATEGIES:
                raise ValueError(
                    f"method {name!r}: unknown baseline {strategy!r}; choose one of "
                    f"{', '.join(RECOMMEND_STRATEGIES)} (Qdrant's recommend strategies)"
                )
            others = sorted(set(options) - {_BASELINE})
            if others:
                raise ValueError(
                    f"method {name!r}: a baseline takes no search options, but it also sets "
                    f"{', '.join(others)}; give it {{{_BASELINE!r}: {strategy!r}}} alone"
                )


def _plan(
    dataset: Dataset,
    queries: list[Query],
    feedback: bool,
    n_positives: int,
    n_negatives: int,
    seed: int,
) -> tuple[list[_Task], list[str], list[str]]:
    """What to search per query, with its judgements; and the queries skipped."""
    rows = {doc: row for row, doc in enumerate(dataset.ids)}
    tasks: list[_Task] = []
    query_ids: list[str] = []
    skipped: list[str] = []
    for query in queries:
        relevant = {
            doc: gain for doc, gain in query.relevant.items() if gain > 0 and doc != query.document
        }
        positives: list[str] = []
        negatives: list[str] = []
        if feedback:
            rng = np.random.default_rng([seed, _stable_int(query.id)])
            pool = sorted((doc for doc in relevant if doc in rows), key=rows.__getitem__)
            if len(pool) <= n_positives:
                skipped.append(query.id)
                continue
            picked = rng.choice(len(pool), n_positives, replace=False)
            positives = [pool[int(i)] for i in picked]
            others = np.ones(len(dataset.ids), dtype=bool)
            others[[rows[doc] for doc in pool]] = False
            if query.document is not None and query.document in rows:
                others[rows[query.document]] = False
            candidates = np.flatnonzero(others)
            if len(candidates) < n_negatives:
                raise ValueError(
                    f"query {query.id!r}: only {len(candidates)} non-relevant documents for "
                    f"{n_negatives} negatives"
                )
            picked = rng.choice(candidates, n_negatives, replace=False)
            negatives = [dataset.ids[int(row)] for row in picked]
            relevant = {doc: gain for doc, gain in relevant.items() if doc not in positives}
        if not any(gain > 0 for gain in relevant.values()):
            skipped.append(query.id)
            continue
        excluded = {*positives, *negatives}
        if query.document is not None:
            excluded.add(query.document)
        tasks.append(_Task(query.vector, relevant, positives, negatives, frozenset(excluded)))
        query_ids.append(query.id)
    return tasks, query_ids, skipped


def _search(index: ExemplarIndex, task: _Task, k: int, options: dict[str, Any]) -> list[str]:
    """The top ``k`` ids for one task, its query document and examples left out."""
    if _BASELINE in options:
        query = np.asarray(task.vector, dtype=np.float64)
        query = query / max(float(np.linalg.norm(query)), np.finfo(np.float64).tiny)
        scores = recommend_scores(
            index.vectors,
            np.vstack([query[np.newaxis], index.fetch(task.positives)]),
            index.fetch(task.negatives),
            options[_BASELINE],
        )
        everything = np.ones(len(scores), dtype=bool)
        ids = index.ids
        rows = top_k(scores, everything, k + len(task.excluded))
        return [ids[row] for row in rows if ids[row] not in task.excluded][:k]
    if task.positives or task.negatives:
        options = {**options, "positives": task.positives, "negatives": task.negatives}
    hits = index.search(task.vector, k + len(task.excluded), **options)
    return [hit.id for hit in hits if hit.id not in task.excluded][:k]


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


# -- formatting ------------------------------------------------------------------------------


def summary_markdown(reports: Sequence[Report]) -> str:
    """One Markdown table for several reports: a row per dataset and metric, a column per method.

    Each cell holds the mean and, for methods other than the baseline, the mean paired
    difference with it ± its standard error; a last row per dataset gives the median search
    latency per query.
    """
    names: list[str] = []
    for report in reports:
        names += [name for name in report.methods if name not in names]
    header = ["set", "metric", *names]
    lines = ["| " + " | ".join(_escape(cell) for cell in header) + " |", "|" + "---|" * len(header)]
    for report in reports:
        label = report.dataset
        if report.protocol == "feedback":
            label += f" (feedback {report.n_positives}+/{report.n_negatives}-)"
        if report.split != "all":
            label += f" ({report.split} half)"
        for metric in METRICS:
            cells = [label, metric]
            for name in names:
                result = report.methods.get(name)
                if result is None:
                    cells.append("n/a")
                    continue
                cell = _number(result.mean[metric])
                diff = result.vs_baseline.get(metric)
                if diff is not None:
                    cell += f" ({_signed(diff.mean_difference)} ± {_number(diff.standard_error)})"
                cells.append(cell)
            lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
        cells = [label, "ms/query"]
        for name in names:
            result = report.methods.get(name)
            cells.append("n/a" if result is None else _ms(result.median_ms))
        lines.append("| " + " | ".join(_escape(cell) for cell in cells) + " |")
    baselines = sorted({report.baseline for report in reports if report.baseline is not None})
    if baselines:
        lines += [
            "",
            f"In brackets: the mean per-query difference with {', '.join(baselines)} ± its "
            "standard error. ms/query: median search time.",
        ]
    return "\n".join(lines)


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.3f}"


def _signed(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.3f}"


def _ms(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _plain(value: Any) -> Any:
    """``value`` as plain JSON types (arrays become lists, anything unknown its repr)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float):
        return _finite_or_none(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return repr(value)
