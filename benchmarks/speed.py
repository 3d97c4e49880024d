"""Search latency on corpora shaped like real embeddings, as ratios to brute-force kNN.

    python benchmarks/speed.py                  # one BLAS thread; 10k x 1536 and 100k x 384
    python benchmarks/speed.py --threads 2
    python benchmarks/speed.py --million        # 1M x 384 only (1.5 GB in memory)

The corpora come from ``generators.py``: fitted to all-MiniLM-L6-v2's spectrum, mean cosine and
topic neighbourhoods on bbc-news, and at 1536 dimensions to OpenAI's reported mean cosine of 0.7
(``python benchmarks/generators.py`` prints the fit beside the shared sets). Each corpus gets
three kinds of query, none of them a corpus row unless said: ``held-out`` (the corpus's own
distribution), ``shifted`` (the mean moved by 0.2, as asymmetric query/passage models do) and
``duplicated`` (each query has 10 exact copies in the corpus). A corpus with one topic holding
half the rows, and the old flat-spectrum generator (``solver.py``'s), are measured too.

Methods, each timed on the same query in turn (so load on the machine hits them alike), one
query at a time, 10 hits:

- ``kNN``: brute force over the same float32 matrix (one product and a top 10);
- ``default``: ``ExemplarIndex.search(query)``, the library's default (``mode="auto"``, which is
  ``"prf"`` for a query alone);
- ``default + 3 positives``: the default given 3 positives (the query's 2nd, 5th and 10th
  nearest documents), where ``auto`` trains the SVM (``"hybrid"``);
- ``textbook SVM``: ``mode="svm", C=0.1, feedback=0``, the exact exemplar SVM of the notebook.

Each cell is the method's median time over the queries as a ratio to kNN's median, then, in
brackets, its slowest query as a multiple of its own median (the "no cliffs" figure).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generators import MINILM, OPENAI, fit, neighbourhood, stats
from solver import clustered

from exemplar_svm import ExemplarIndex
from exemplar_svm._blas import _controller
from exemplar_svm.index import top_k

QUERIES = 7  # of each kind
COPIES = 10
TEXTBOOK = {"mode": "svm", "C": 0.1, "feedback": 0}


def knn(vectors: np.ndarray, query: np.ndarray) -> Any:
    everything = np.ones(len(vectors), dtype=bool)
    return top_k((vectors @ query.astype(np.float32)).astype(np.float64), everything, 10)


def scenarios(million: bool) -> list[tuple[str, np.ndarray, dict[str, np.ndarray]]]:
    """(name, corpus, queries by kind) for every measured corpus."""
    found = []
    sizes = [(MINILM, 1_000_000)] if million else [(OPENAI, 10_000), (MINILM, 100_000)]
    for shape, n in sizes:
        generator = fit(shape)
        held = generator.held_out(2 * QUERIES)
        duplicated = held[QUERIES:]
        corpus = generator.corpus(n - COPIES * QUERIES)
        corpus = np.vstack([corpus, np.repeat(duplicated, COPIES, axis=0)])
        queries = {
            "held-out": held[:QUERIES],
            "shifted": generator.shifted(QUERIES),
            "duplicated": duplicated,
        }
        size = "1M" if n == 1_000_000 else f"{n // 1000}k"
        found.append((f"{shape.name}, {size} x {shape.dim}", corpus, queries))
    if million:
        return found
    generator = fit(MINILM).with_dominant_topic(0.5)
    found.append(
        (
            "MiniLM-like, one topic holds half, 100k x 384",
            generator.corpus(100_000),
            {"held-out": generator.held_out(QUERIES)},
        )
    )
    flat = clustered(100_000 + QUERIES, 384, 0.5)
    found.append(
        (
            "flat-spectrum generator (solver.py), 100k x 384",
            flat[QUERIES:],
            {"held-out": flat[:QUERIES]},
        )
    )
    return found


def methods(index: ExemplarIndex) -> dict[str, Callable[[np.ndarray], Any]]:
    vectors = index.vectors

    def with_positives(query: np.ndarray) -> Any:
        nearest = knn(vectors, query)
        positives = [index.ids[int(row)] for row in nearest[[1, 4, 9]]]
        return index.search(query, 10, positives=positives)

    return {
        "kNN": lambda query: knn(vectors, query),
        "default": lambda query: index.search(query, 10),
        "default + 3 positives": with_positives,
        "textbook SVM": lambda query: index.search(query, 10, **TEXTBOOK),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default: 1)")
    parser.add_argument("--million", action="store_true", help="1M x 384 instead")
    args = parser.parse_args()
    print(f"BLAS threads: {args.threads}; {QUERIES} queries of each kind\n")
    found = scenarios(args.million)
    print(
        "| corpus | n x d | mean cosine | participation ratio | top 50 axes | 10-NN z (2225 rows) |"
    )
    print("|---|---|---|---|---|---|")
    for name, corpus, _ in found:
        s = stats(corpus)
        print(
            f"| {name} | {len(corpus)} x {corpus.shape[1]} | {s['mean cosine']:.3f} | "
            f"{s['participation']:.1f} | {s['top 50']:.2f} | {neighbourhood(corpus[:2225]):.2f} |"
        )
    names = list(methods(ExemplarIndex(np.eye(2, dtype=np.float32))))
    print(
        "\n| corpus | queries | kNN ms | "
        + " | ".join(f"{m} / kNN (worst / median)" for m in names[1:])
        + " |"
    )
    print("|---|---|---|" + "---|" * (len(names) - 1))
    with _controller().limit(limits=args.threads, user_api="blas"):
        for name, corpus, queries in found:
            index = ExemplarIndex(corpus)
            run = methods(index)
            for method in run.values():  # the one-off corpus statistics
                method(queries["held-out"][0])
            times: dict[str, dict[str, list[float]]] = {}
            for kind, rows in queries.items():
                times[kind] = {m: [] for m in run}
                for query in rows:
                    for method, call in run.items():
                        start = time.perf_counter()
                        call(query)
                        times[kind][method].append(time.perf_counter() - start)
            every = {m: [t for kind in times for t in times[kind][m]] for m in run}
            for kind in [*times, "all"]:
                got = every if kind == "all" else times[kind]
                base = statistics.median(got["kNN"])
                cells = []
                for method in names[1:]:
                    median = statistics.median(got[method])
                    cells.append(f"{median / base:.1f}x ({max(got[method]) / median:.1f})")
                print(f"| {name} | {kind} | {base * 1000:.1f} | " + " | ".join(cells) + " |")
            del index


if __name__ == "__main__":
    main()
