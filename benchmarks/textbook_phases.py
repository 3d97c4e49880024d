"""Where the textbook SVM's time goes at 100k x 384 (MiniLM-like).

    python benchmarks/textbook_phases.py   # one BLAS thread; about a minute

The textbook SVM (``mode="svm", C=0.1, feedback=0``) is measured on held-out and shifted queries
of the MiniLM-like generator (``generators.py``), one query at a time, beside brute-force kNN in
the same run (the product and ``argpartition``: lighter than ``speed.py``'s kNN, whose top 10 is
sorted, so the ratios here are higher). It prints:

- each phase's time per query (median over the queries, in ms and as a ratio to kNN's median):
  the passes over the corpus, the restricted solve (its small subspace problems, and the
  gradient's and the new directions' products with the gathered rows), the starting fit, the
  gathering of the working set, the verifications by a bound (instead of a pass) and the
  scoring of the rows that could reach the top k, and the rest
  (the search's plan, the top k, bookkeeping);
- the solve's rounds, passes, gradient directions, Newton steps, working set, support vectors
  and the rows the bounded verifications had to score (gathered) out of 100k.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from floor import Timer
from generators import MINILM, fit

import exemplar_svm._solver as solver
import exemplar_svm.index as index_module
from exemplar_svm import ExemplarIndex

N, QUERIES, K = 100_000, 7, 10
TEXTBOOK = {"mode": "svm", "C": 0.1, "feedback": 0}
PHASES = {
    "corpus_products": "passes over the corpus",
    "_minimise": "restricted solve",
    "_subspace_min": "  of it: small subspace problems",
    "back": "  of it: gradient products",
    "forward": "  of it: new directions' products",
    "_fit_start": "starting fit",
    "_restricted_rows": "gathering the working set",
    "_bounded_scores": "verification by a bound",
    "_top_scored": "scoring what could reach the top k",
}


def main() -> None:
    threadpool_limits(1)
    generator = fit(MINILM)
    corpus = generator.corpus(N).astype(np.float32)
    queries = np.vstack([generator.held_out(QUERIES), generator.shifted(QUERIES)])
    index = ExemplarIndex(corpus)
    index.search(queries[0], K, **TEXTBOOK)  # the index's statistics, computed once

    timer = Timer()
    for name in PHASES:
        if name not in ("forward", "back"):
            timer.wrap(solver, name)
    for name in ["forward", "back"]:
        timer.wrap(solver._Rows, name)
    solutions: list[Any] = []
    solve_many = index_module.solve_many

    def kept(problems: Any) -> Any:
        found = solve_many(problems)
        solutions.extend(found)
        return found

    index_module.solve_many = kept

    per_query: dict[str, list[float]] = defaultdict(list)
    knn_ms, counts = [], defaultdict(list)
    for query in queries:
        start = time.perf_counter()
        np.argpartition(-(corpus @ query.astype(np.float32)), K)[:K]
        knn_ms.append(1e3 * (time.perf_counter() - start))
        timer.seconds.clear()
        solutions.clear()
        start = time.perf_counter()
        index.search(query, K, **TEXTBOOK)
        total = 1e3 * (time.perf_counter() - start)
        per_query["total"].append(total)
        for name in PHASES:
            per_query[name].append(1e3 * timer.total(name))
        outside = ["corpus_products", "_minimise", "_fit_start", "_restricted_rows"]
        outside += ["_bounded_scores", "_top_scored"]
        per_query["rest"].append(total - sum(1e3 * timer.total(name) for name in outside))
        info = solutions[0][3]
        fields = ["rounds", "passes", "directions", "newton_steps", "working_set"]
        for field in [*fields, "support_vectors", "bounded"]:
            counts[field].append(getattr(info, field))

    knn = statistics.median(knn_ms)
    print(f"MiniLM-like, {N // 1000}k x {MINILM.dim}, {len(queries)} queries, one BLAS thread")
    print(f"kNN: {knn:.1f} ms (median)\n")
    print("| phase | ms per query (median) | / kNN |")
    print("|---|---|---|")
    for name, label in [("total", "textbook SVM, all of it"), *PHASES.items(), ("rest", "rest")]:
        value = statistics.median(per_query[name])
        print(f"| {label} | {value:.1f} | {value / knn:.2f}x |")
    print()
    for field, values in counts.items():
        print(f"{field}: median {statistics.median(values)}, range {min(values)}-{max(values)}")


if __name__ == "__main__":
    main()
