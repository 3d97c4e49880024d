"""What ``exemplar-svm search`` prints: a ranking, or two side by side, with what the scores
mean."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exemplar_svm.corpus import Record
from exemplar_svm.index import Hit

#: What each mode's column is called.
NAMES = {
    "knn": "kNN",
    "svm": "exemplar SVM",
    "prf": "dense PRF",
    "hybrid": "hybrid (SVM + dense PRF)",
    "lda": "exemplar LDA",
}
#: Short names, for a document's rank in the other column.
SHORT = {"knn": "kNN", "svm": "SVM", "prf": "PRF", "hybrid": "hybrid", "lda": "LDA"}

# Lines of text shown per document side by side: enough to tell documents apart.
TEXT_LINES = 3
# Plain ASCII throughout: a console or a file in a legacy encoding must not fail on a symbol.
ELLIPSIS = "..."


@dataclass(frozen=True)
class Ranking:
    """One column: a mode's top hits and the ranks of the documents further down.

    Parameters
    ----------
    mode : str
        The mode asked for (``"auto"`` included).
    concrete : str
        The mode that ran (``"auto"`` resolved).
    hits : list of Hit
        The top ``k``.
    ranks : dict of str to int
        Rank (from 1) of every document of a deeper ranking, to show where the other column's
        documents are.
    """

    mode: str
    concrete: str
    hits: list[Hit]
    ranks: dict[str, int]

    @property
    def label(self) -> str:
        name = NAMES[self.concrete]
        return f"default (auto): {name}" if self.mode == "auto" else name

    @property
    def short(self) -> str:
        return SHORT[self.concrete]


def scale(concrete: str, options: Mapping[str, Any]) -> str:
    """One sentence on what a mode's scores measure and how to read them."""
    nearest = " and its nearest documents" if options.get("feedback", 0) > 0 else ""
    if concrete == "knn":
        return "cosine similarity to the query, from -1 to 1 (1 = the same direction)"
    if concrete == "prf":
        return (
            "cosine similarity to the query moved towards its nearest documents "
            "(pseudo-relevance feedback), from -1 to 1"
        )
    if concrete == "svm":
        return (
            f"decision value of a linear SVM trained with the query{nearest} as positives and "
            "the other documents as negatives: above 0 is the query's side; only the order "
            "counts"
        )
    if concrete == "hybrid":
        weight = float(options.get("hybrid_weight", 0.7))
        return (
            f"{weight:g} x the SVM's z-score + {1 - weight:g} x dense PRF's, in standard "
            "deviations from the mean document (0 = average)"
        )
    return (
        "projection on the whitened difference between the query's mean and the corpus's "
        "(the exemplar LDA, a fast stand-in for the SVM); only the order counts"
    )


def examples_note(
    options: Mapping[str, Any], modes: Sequence[str], *, positives: bool, negatives: bool
) -> list[str]:
    """How the --positive and --negative examples enter each column."""
    notes: list[str] = []
    learned = [mode for mode in modes if mode in ("svm", "hybrid", "lda")]
    if positives:
        note = "--positive: the examples join the query: kNN and PRF start from their mean"
        if learned:
            note += ", the SVM trains on them as positives"
        notes.append(note + ".")
    if negatives:
        demote = float(options.get("demote", 0.0))
        rocchio = float(options.get("rocchio", 0.0))
        if demote:
            note = (
                f"--negative: a document more similar to a counter-example than to the query "
                f"loses {demote:g} x the difference, in the score's units"
            )
        else:
            note = "--negative: no demotion (demote=0)"
        if "knn" in modes:
            note += (
                f"; kNN also moves the query away from them (Rocchio, {rocchio:g} x their mean)"
                if rocchio
                else "; kNN uses them for that only (its query is not moved: rocchio=0)"
            )
        if learned:
            weight = float(options.get("negative_weight", 0.0))
            note += f"; the SVM also trains on each as a negative worth {weight:g} documents"
        notes.append(note + ".")
    if positives or negatives:
        notes.append("Corpus documents named as examples are left out of the results.")
    return notes


def display_text(record: Record) -> str:
    """A document on one line: ``Title: text`` when it has a title, whitespace collapsed."""
    text = record.text
    title = record.metadata.get("title")
    if isinstance(title, str) and title and text.startswith(title + "\n"):
        text = f"{title}: {text[len(title) + 1 :]}"
    return " ".join(text.split())


def cut(text: str, width: int, lines: int) -> list[str]:
    """``text`` wrapped to ``width``, at most ``lines`` lines, the last one cut with '...'."""
    wrapped = textwrap.wrap(text, width=max(width, 10)) or [""]
    if len(wrapped) <= lines:
        return wrapped
    kept = wrapped[:lines]
    last = textwrap.shorten(
        " ".join(wrapped[lines - 1 :]), width=max(width, 10), placeholder=ELLIPSIS
    )
    return [*kept[:-1], last]


def table(
    query: str,
    corpus: str,
    ranking: Ranking,
    scale_text: str,
    notes: Sequence[str],
    by_id: Mapping[str, Record],
    width: int,
) -> str:
    """One ranking: a line per document, its text cut to fit ``width``."""
    out = [f"query:  {query}", f"corpus: {corpus}", f"mode:   {ranking.label}", ""]
    id_width = max([len(hit.id) for hit in ranking.hits] + [2])
    out.append(f"{'#':>2}  {'score':>7}  {'cosine':>6}  {'id':<{id_width}}  text")
    for rank, hit in enumerate(ranking.hits, start=1):
        prefix = f"{rank:>2}  {hit.score:>7.3f}  {hit.similarity:>6.3f}  {hit.id:<{id_width}}  "
        text = cut(display_text(by_id[hit.id]), width - len(prefix), 1)[0]
        out.append(prefix + text)
    out.append("")
    out.extend(_wrap(f"score: {scale_text}.", width))
    out.extend(_wrap("cosine: cosine similarity to the query, from -1 to 1.", width))
    for note in notes:
        out.extend(_wrap(note, width))
    return "\n".join(out)


def side_by_side(
    query: str,
    corpus: str,
    left: Ranking,
    right: Ranking,
    scales: Sequence[str],
    notes: Sequence[str],
    by_id: Mapping[str, Record],
    width: int,
) -> str:
    """Two rankings of the same query, row by row, with where each document moved."""
    column = (width - 2) // 2
    out = [f"query:  {query}", f"corpus: {corpus}", ""]
    out.append(_pair(left.label, right.label, column))
    used: set[str] = set()
    for rank in range(max(len(left.hits), len(right.hits))):
        cells = [
            _cell(rank, ranking.hits, other, ranking is right, column, by_id, used)
            for ranking, other in ((left, right), (right, left))
        ]
        height = max(len(cell) for cell in cells)
        for row in range(height):
            parts = [cell[row] if row < len(cell) else "" for cell in cells]
            out.append(_pair(parts[0], parts[1], column))
    out.append("")
    for ranking, text in zip((left, right), scales, strict=True):
        out.extend(_wrap(f"{ranking.label} score: {text}.", width))
    for entry in _legend(used, left, right):
        out.extend(_wrap(entry, width))
    for note in notes:
        out.extend(_wrap(note, width))
    return "\n".join(out)


def _cell(
    rank: int,
    hits: Sequence[Hit],
    other: Ranking,
    moves: bool,
    width: int,
    by_id: Mapping[str, Record],
    used: set[str],
) -> list[str]:
    """A document's lines in one column; ``moves`` shows its rank change against ``other``
    (the kNN column), else only where it went when ``other`` leaves it out of its top."""
    if rank >= len(hits):
        return []
    hit = hits[rank]
    here = rank + 1
    there = other.ranks.get(hit.id)
    change = ""
    if there is None:  # below the other's whole ranking (its depth)
        used.add("new" if moves else "out")
        where = f"below #{len(other.ranks)}"
        change = f"new ({other.short} {where})" if moves else f"({other.short} {where})"
    elif there > len(other.hits):
        used.update({"+", "new"} if moves else {"out"})
        change = f"({other.short} #{there})"
        if moves:
            change = f"+{there - here} {change}"
    elif moves:
        used.add("=" if there == here else "+")
        change = "=" if there == here else f"{there - here:+d}"
    head = f"{rank + 1:>2}. {hit.score:>6.3f}  {hit.id}  {change}".rstrip()
    body = cut(display_text(by_id[hit.id]), width - 6, TEXT_LINES)
    return [head] + ["    " + line for line in body]


def _legend(used: set[str], left: Ranking, right: Ranking) -> list[str]:
    """What the marks mean, only for the marks shown."""
    lines = []
    if "+" in used:
        # '=' alone needs no legend; beside '+n' and '-n' it reads as "no change".
        same = " ('=' the same)" if "=" in used else ""
        lines.append(f"+n / -n: n places above / below the document's {left.short} rank{same}.")
    if "new" in used:
        lines.append(
            f"({left.short} #n): its {left.short} rank, outside {left.short}'s top "
            f"{len(left.hits)}."
        )
    if "out" in used:
        lines.append(
            f"({right.short} #n): its {right.short} rank, outside {right.short}'s top "
            f"{len(right.hits)}."
        )
    return lines


def _pair(left: str, right: str, column: int) -> str:
    if len(left) >= column:
        left = left[: column - len(ELLIPSIS) - 1] + ELLIPSIS
    return f"{left:<{column}}  {right}".rstrip()


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=width, subsequent_indent="  ")
