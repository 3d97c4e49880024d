"""Per-corpus calibration: choose an index's ranking settings from a handful of queries.

The best ranking setting differs between corpora (see docs/quality.md), so
:meth:`ExemplarIndex.calibrate <exemplar_svm.ExemplarIndex.calibrate>` searches a few queries
with every candidate of :data:`CANDIDATES`, scores the rankings with the evaluation module's
metrics and keeps the best candidate as the index's settings. The queries are either labelled
(query vectors and the ids of their relevant documents) or *synthetic*, built from the corpus's
own texts by :func:`synthetic_queries`: a document's title, or its first sentence, is the query
and the document is its only answer (known-item search; the document stays in the corpus).

Synthetic queries are a biased proxy: a known item shares words with its query, so they favour
settings that stay close to the query. On the three shared datasets they picked kNN-like
settings that ranked worse on held-out labelled queries than the library's default, where the
labelled tune half picked the default or better (``benchmarks/calibration.py``). Prefer
labelled queries, even a few dozen.

Examples
--------
>>> import numpy as np
>>> from exemplar_svm import ExemplarIndex
>>> from exemplar_svm.calibration import calibrate
>>> rng = np.random.default_rng(0)
>>> index = ExemplarIndex(rng.normal(size=(200, 16)))
>>> queries = index.vectors[:20] + 0.1 * rng.normal(size=(20, 16))
>>> result = calibrate(index, queries, [[str(row)] for row in range(20)])
>>> sorted(result.scores) == sorted(result.candidates)
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from exemplar_svm._checks import as_matrix
from exemplar_svm.embedders import Embedder
from exemplar_svm.evaluation import TIE_TOLERANCE, average_precision, ndcg
from exemplar_svm.index import ExemplarIndex, check_search_options, resolve_options

__all__ = [
    "CALIBRATION_METRICS",
    "CANDIDATES",
    "MIN_SYNTHETIC_QUERIES",
    "Calibration",
    "calibrate",
    "embed_queries",
    "sample_synthetic_queries",
    "synthetic_queries",
    "synthetic_relevance",
]

#: The named candidate settings :func:`calibrate` chooses from, in order: the first is the
#: library's default, and a tie goes to the earlier (cheaper) candidate. Each is a set of
#: :meth:`ExemplarIndex.search` options; options it leaves out take the library's defaults.
CANDIDATES: dict[str, dict[str, Any]] = {
    "default": {},
    "knn": {"mode": "knn"},
    "prf (classic)": {"mode": "prf", "feedback": 5, "feedback_threshold": 0, "prf_weight": 1.0},
    "prf, stronger": {"mode": "prf", "prf_weight": 4.0},
    "hybrid": {"mode": "hybrid"},
    "hybrid, svm-heavy": {"mode": "hybrid", "hybrid_weight": 0.7, "C": 0.01},
    "hybrid (plain kNN side)": {
        "mode": "hybrid",
        "prf_weight": 0.0,
        "feedback": 0,
        "C": 0.1,
        "hybrid_weight": 0.5,
    },
    "svm": {"mode": "svm", "C": 0.01},
}

#: The metrics every candidate is scored with; ``metric=`` picks the one that decides.
CALIBRATION_METRICS: tuple[str, ...] = ("nDCG@10", "MAP@100")

#: Fewer synthetic queries than this are refused: the choice would be noise.
MIN_SYNTHETIC_QUERIES = 5

#: Documents ranked per query (MAP@100 looks at all of them).
CALIBRATION_K = 100

Source = Literal["labelled", "synthetic"]
#: The relevant documents of one query: a list of ids (gain 1 each) or ids with their gains.
Relevant = Union[Sequence[str], Mapping[str, float]]  # noqa: UP007

# A sentence ends at ., ! or ? followed by white space, or at a blank line.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_MIN_SENTENCE_WORDS = 3


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured and chose.

    Attributes
    ----------
    chosen : str
        The name of the chosen candidate.
    settings : dict
        Its search options, as :attr:`ExemplarIndex.settings` takes them (``{}``: the
        library's defaults).
    source : {"labelled", "synthetic"}
        Whether the queries were labelled by the user or built from the corpus's texts.
    n_queries : int
        How many queries were judged (those with a relevant document).
    metric : str
        The metric that decided (one of :data:`CALIBRATION_METRICS`).
    scores : dict of str to dict of str to float
        Every candidate's mean of each metric of :data:`CALIBRATION_METRICS`.
    candidates : dict of str to dict
        The candidates, in the order they were tried.
    """

    chosen: str
    settings: dict[str, Any]
    source: Source
    n_queries: int
    metric: str
    scores: dict[str, dict[str, float]]
    candidates: dict[str, dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every field."""
        return {
            "chosen": self.chosen,
            "settings": dict(self.settings),
            "source": self.source,
            "n_queries": self.n_queries,
            "metric": self.metric,
            "scores": {name: dict(values) for name, values in self.scores.items()},
            "candidates": {name: dict(options) for name, options in self.candidates.items()},
        }

    def to_markdown(self) -> str:
        """The candidates' mean scores as a Markdown table, the chosen one in bold."""
        lines = [
            f"Calibration on {self.n_queries} {self.source} queries, by mean {self.metric}: "
            f"**{self.chosen}** {json.dumps(self.settings)}",
            "",
            "| candidate | settings | " + " | ".join(CALIBRATION_METRICS) + " |",
            "|---|---|" + "---:|" * len(CALIBRATION_METRICS),
        ]
        for name, options in self.candidates.items():
            label = f"**{name}**" if name == self.chosen else name
            values = " | ".join(
                f"{self.scores[name][metric]:.3f}" for metric in CALIBRATION_METRICS
            )
            settings = json.dumps(options).replace("|", "\\|")
            lines.append(f"| {label} | `{settings}` | {values} |")
        return "\n".join(lines)


def calibrate(
    index: ExemplarIndex,
    queries: ArrayLike,
    relevant: Sequence[Relevant],
    *,
    candidates: Mapping[str, Mapping[str, Any]] = CANDIDATES,
    metric: str = "nDCG@10",
    exclude: Sequence[Collection[str]] | None = None,
    source: Source = "labelled",
) -> Calibration:
    """Search every query with every candidate and return the best candidate by ``metric``.

    Each query is searched with each candidate's options (the options it leaves out at the
    library's defaults, whatever the index's current settings), ``k=100``; the rankings are
    scored with :func:`exemplar_svm.evaluation.ndcg` (nDCG@10) and
    :func:`exemplar_svm.evaluation.average_precision` (MAP@100). The candidate with the best
    mean ``metric`` wins; a tie (within 1e-9) goes to the earlier candidate. The index is not
    changed: :meth:`ExemplarIndex.calibrate` stores the choice.

    Parameters
    ----------
    index : ExemplarIndex
        The corpus.
    queries : array-like of shape (m, d)
        One query vector per row.
    relevant : sequence of (sequence of str or mapping of str to float)
        Per query, the ids of its relevant documents (gain 1 each), or ids with their gains
        (gains of 0 or less are judged non-relevant). Queries without a relevant document are
        left out.
    candidates : mapping of str to mapping, default=CANDIDATES
        Named candidate settings, in order of preference for ties.
    metric : {"nDCG@10", "MAP@100"}, default="nDCG@10"
        The metric that decides.
    exclude : sequence of collections of str, optional
        Per query, ids left out of its ranking and its judgements (for query by example: the
        query document itself).
    source : {"labelled", "synthetic"}, default="labelled"
        Where the queries came from, recorded in the result.

    Returns
    -------
    Calibration

    Raises
    ------
    ValueError
        For no queries, a different number of queries and judgements, an id the index does
        not hold, no query with a relevant document, an unknown metric, or a bad candidate.
    """
    if metric not in CALIBRATION_METRICS:
        raise ValueError(
            f"unknown metric {metric!r}; choose one of {', '.join(CALIBRATION_METRICS)}"
        )
    if source not in get_args(Source):
        raise ValueError(f"unknown source {source!r}; choose 'labelled' or 'synthetic'")
    tried = _check_candidates(candidates)
    if isinstance(queries, Sized) and len(queries) == 0:
        raise ValueError("no queries to calibrate with; pass at least one query vector")
    matrix = as_matrix(queries, "queries", dim=index.dim)
    if isinstance(relevant, (str, Mapping)):
        raise TypeError("relevant must be one list of relevant ids (or {id: gain}) per query")
    judgements = [_judgement(item, row) for row, item in enumerate(relevant)]
    if len(judgements) != len(matrix):
        raise ValueError(
            f"got {len(matrix)} queries but {len(judgements)} lists of relevant ids; pass one "
            "list per query"
        )
    unknown = sorted({doc for judged in judgements for doc in judged if doc not in index})
    if unknown:
        shown = ", ".join(map(repr, unknown[:3])) + (", ..." if len(unknown) > 3 else "")
        raise ValueError(
            f"{len(unknown)} relevant id(s) are not in the index ({shown}); relevant ids must "
            "be ids of the index's documents"
        )
    excluded = [frozenset[str]()] * len(matrix)
    if exclude is not None:
        excluded = [frozenset(str(item) for item in items) for items in exclude]
        if len(excluded) != len(matrix):
            raise ValueError(f"got {len(excluded)} exclude entries for {len(matrix)} queries")
    rows = [
        row
        for row, judged in enumerate(judgements)
        if any(gain > 0 and doc not in excluded[row] for doc, gain in judged.items())
    ]
    if not rows:
        raise ValueError("no query has a relevant document to judge; pass relevant ids")
    targets = [
        {doc: gain for doc, gain in judgements[row].items() if doc not in excluded[row]}
        for row in rows
    ]
    extra = max(len(excluded[row]) for row in rows)
    batch = [matrix[row] for row in rows]

    scores: dict[str, dict[str, float]] = {}
    for name, options in tried.items():
        results = index.search_batch(batch, CALIBRATION_K + extra, **resolve_options(options))
        values = np.empty((len(rows), len(CALIBRATION_METRICS)))
        for column, (row, hits, judged) in enumerate(zip(rows, results, targets, strict=True)):
            ranking = [hit.id for hit in hits if hit.id not in excluded[row]][:CALIBRATION_K]
            values[column] = [ndcg(ranking, judged, 10), average_precision(ranking, judged, 100)]
        means = values.mean(axis=0)
        scores[name] = {
            metric_name: float(mean)
            for metric_name, mean in zip(CALIBRATION_METRICS, means, strict=True)
        }
    chosen = next(iter(tried))
    for name in tried:
        if scores[name][metric] > scores[chosen][metric] + TIE_TOLERANCE:
            chosen = name
    return Calibration(
        chosen=chosen,
        settings=dict(tried[chosen]),
        source=source,
        n_queries=len(rows),
        metric=metric,
        scores=scores,
        candidates={name: dict(options) for name, options in tried.items()},
    )


def synthetic_queries(
    texts: Sequence[str], titles: Sequence[str | None] | None = None
) -> list[tuple[int, str]]:
    """Known-item queries built from a corpus's texts: ``(row, query text)`` pairs, in row order.

    A document's query is its title when it has one (a non-empty string), else its first
    sentence (up to ``.``, ``!`` or ``?`` and white space, or a blank line) when the text has
    more than one sentence and the first has at least 3 words. Other documents are skipped:
    a document whose first sentence is its whole text would be its own query. The same texts
    always give the same queries.

    Parameters
    ----------
    texts : sequence of str
        One text per document, in index row order.
    titles : sequence of str or None, optional
        One title (or ``None``) per document.

    Returns
    -------
    list of (int, str)

    Examples
    --------
    >>> synthetic_queries(
    ...     ["Cats purr when content. They also knead.", "Too short.", "Dogs bark. Loudly."],
    ...     titles=[None, "A title", None],
    ... )
    [(0, 'Cats purr when content.'), (1, 'A title')]
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of texts, not one string")
    if titles is not None and len(titles) != len(texts):
        raise ValueError(
            f"got {len(titles)} titles for {len(texts)} texts; pass one each (or None)"
        )
    queries: list[tuple[int, str]] = []
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts[{row}] is a {type(text).__name__}, not a string")
        title = None if titles is None else titles[row]
        if isinstance(title, str) and title.strip():
            queries.append((row, " ".join(title.split())))
            continue
        parts = _SENTENCE_END.split(text.strip(), maxsplit=1)
        if len(parts) < 2 or not parts[1].strip():
            continue
        first = " ".join(parts[0].split())
        if len(first.split()) >= _MIN_SENTENCE_WORDS:
            queries.append((row, first))
    return queries


def synthetic_relevance(
    index: ExemplarIndex,
    texts: Sequence[str],
    embedder: Embedder,
    *,
    titles: Sequence[str | None] | None = None,
    max_queries: int = 200,
    seed: int = 0,
) -> tuple[NDArray[np.float32], list[dict[str, float]]]:
    """Synthetic queries for ``index`` (see :func:`synthetic_queries`), embedded, and their answers.

    At most ``max_queries`` of the usable documents are drawn with
    ``np.random.default_rng(seed)`` (in row order); each query's only relevant document is the
    one it came from, which stays in the corpus.

    Returns
    -------
    queries : ndarray of shape (m, d)
        Embedded with :func:`embed_queries`.
    relevant : list of dict
        ``{document id: 1.0}`` per query.

    Raises
    ------
    ValueError
        When ``texts`` is not one text per document, or fewer than
        :data:`MIN_SYNTHETIC_QUERIES` documents give a query.
    """
    if len(texts) != len(index):
        raise ValueError(
            f"got {len(texts)} texts for an index of {len(index)} documents; pass one text per "
            "document, in the index's row order"
        )
    chosen = sample_synthetic_queries(texts, titles, max_queries=max_queries, seed=seed)
    ids = index.ids
    vectors = embed_queries(embedder, [query for _, query in chosen])
    return vectors, [{ids[row]: 1.0} for row, _ in chosen]


def sample_synthetic_queries(
    texts: Sequence[str],
    titles: Sequence[str | None] | None = None,
    *,
    max_queries: int = 200,
    seed: int = 0,
) -> list[tuple[int, str]]:
    """At most ``max_queries`` of :func:`synthetic_queries`, drawn with
    ``np.random.default_rng(seed)``, in row order.

    Raises ``ValueError`` when fewer than :data:`MIN_SYNTHETIC_QUERIES` documents give a
    query, saying how to calibrate instead.
    """
    if isinstance(max_queries, bool) or not isinstance(max_queries, int):
        raise ValueError(f"max_queries must be a whole number, got {max_queries!r}")
    if max_queries < MIN_SYNTHETIC_QUERIES:
        raise ValueError(f"max_queries must be at least {MIN_SYNTHETIC_QUERIES}, got {max_queries}")
    usable = synthetic_queries(texts, titles)
    if len(usable) < MIN_SYNTHETIC_QUERIES:
        raise ValueError(
            f"only {len(usable)} of the {len(texts)} documents give a synthetic query (a title, "
            f"or a first sentence of at least {_MIN_SENTENCE_WORDS} words that is not the whole "
            f"text); at least {MIN_SYNTHETIC_QUERIES} are needed. Give the documents titles, "
            "or calibrate with labelled queries and their relevant documents instead"
        )
    picked = np.random.default_rng(seed).choice(
        len(usable), min(max_queries, len(usable)), replace=False
    )
    return [usable[int(number)] for number in np.sort(picked)]


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> NDArray[np.float32]:
    """Embed query texts with ``embed_query``, one row each (as a search embeds its query)."""
    if not texts:
        raise ValueError("no query texts to embed")
    return np.vstack([np.asarray(embedder.embed_query(text), dtype=np.float32) for text in texts])


def _judgement(item: Relevant, row: int) -> dict[str, float]:
    if isinstance(item, str):
        raise TypeError(f"relevant[{row}] is one string; pass a list of ids, e.g. [{item!r}]")
    if isinstance(item, Mapping):
        return {str(doc): float(gain) for doc, gain in item.items()}
    return {str(doc): 1.0 for doc in item}


def _check_candidates(
    candidates: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    if not candidates:
        raise ValueError("no candidate settings to choose from")
    checked: dict[str, dict[str, Any]] = {}
    for name, options in candidates.items():
        if not isinstance(options, Mapping):
            raise ValueError(f"candidate {name!r} must be a mapping of search options")
        try:
            checked[str(name)] = check_search_options(options)
        except ValueError as exc:
            raise ValueError(f"candidate {name!r}: {exc}") from None
    return checked
