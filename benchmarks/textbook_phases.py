"""Where the textbook SVM's time goes at 100k x 384 (MiniLM-like), and what skipping most of its
last pass could save.

    python benchmarks/textbook_phases.py   # one BLAS thread; about a minute

The textbook SVM (``mode="svm", C=0.1, feedback=0``) is measured on held-out and shifted queries
of the MiniLM-like generator (``generators.py``), one query at a time, beside brute-force kNN in
the same run. It prints:

- each phase's time per query (median over the queries, in ms and as a ratio to kNN's median):
  the passes over the corpus, the restricted solve (its small subspace problems, and the
  gradient's and the new directions' products with the gathered rows), the starting fit, the
  gathering of the working set, and the rest (the search's plan, the top k, bookkeeping);
- the solve's rounds, gradient directions, Newton steps, working set and support vectors;
- for the queries that needed a second round: how far the second solution moved from the first
  (``|dw|``, with the change of the bias), and how many rows a bound on that move leaves
  undecided: a row's score moves by at most ``|dw| |x| + |db|``, so only the rows within that
  of the margin could have become violators, and only those within it of the 10th score could
  enter the top 10. Only those rows would need the last pass's exact product; the others' scores
  would be bounds, not the exact scores the solver returns.
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
}


def main() -> None:
    threadpool_limits(1)
    generator = fit(MINILM)
    corpus = generator.corpus(N).astype(np.float32)
    queries = np.vstack([generator.held_out(QUERIES), generator.shifted(QUERIES)])
    index = ExemplarIndex(corpus)
    norms = np.linalg.norm(corpus, axis=1)
    index.search(queries[0], K, **TEXTBOOK)  # the index's statistics, computed once

    timer = Timer()
    for name in ["corpus_products", "_minimise", "_subspace_min", "_fit_start", "_restricted_rows"]:
        timer.wrap(solver, name)
    for name in ["forward", "back"]:
        timer.wrap(solver._Rows, name)
    passes: list[tuple[np.ndarray, np.ndarray]] = []
    products = solver.corpus_products

    def recorded(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
        out = products(matrix, vectors)
        passes.append((vectors.copy(), out.copy()))
        return out

    solver.corpus_products = recorded  # inside the timed wrapper: its time still counts
    biases: list[float] = []  # each round's bias
    minimise = solver._minimise

    def with_bias(*args: Any, **kwargs: Any) -> Any:
        w, out = minimise(*args, **kwargs)
        biases.append(float(w[-1]))
        return w, out

    solver._minimise = with_bias
    solutions: list[Any] = []
    solve_many = index_module.solve_many

    def kept(problems: Any) -> Any:
        found = solve_many(problems)
        solutions.extend(found)
        return found

    index_module.solve_many = kept

    per_query: dict[str, list[float]] = defaultdict(list)
    knn_ms, counts, bands = [], defaultdict(list), []
    for query in queries:
        start = time.perf_counter()
        np.argpartition(-(corpus @ query.astype(np.float32)), K)[:K]
        knn_ms.append(1e3 * (time.perf_counter() - start))
        timer.seconds.clear()
        passes.clear()
        biases.clear()
        solutions.clear()
        start = time.perf_counter()
        index.search(query, K, **TEXTBOOK)
        total = 1e3 * (time.perf_counter() - start)
        per_query["total"].append(total)
        for name in PHASES:
            per_query[name].append(1e3 * timer.total(name))
        outside = ["corpus_products", "_minimise", "_fit_start", "_restricted_rows"]
        per_query["rest"].append(total - sum(1e3 * timer.total(name) for name in outside))
        info = solutions[0][3]
        for field in ["rounds", "directions", "newton_steps", "working_set", "support_vectors"]:
            counts[field].append(getattr(info, field))
        if len(passes) >= 3:  # the first pass, then one verification per round
            (w1, s1), (w2, _) = passes[-2], passes[-1]
            move = float(np.linalg.norm(w2 - w1))
            slack = move * norms + abs(biases[-1] - biases[-2])
            before = s1[:, 0] + biases[-2]
            tenth = np.sort(before)[-K]
            bands.append(
                (
                    move,
                    int(np.count_nonzero(before + slack > -1.0)),
                    int(np.count_nonzero(before + slack >= tenth - slack.max())),
                )
            )

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
    if bands:
        moves, violators, top = zip(*bands, strict=True)
        print(
            f"\nsecond rounds: {len(bands)} of {len(queries)};"
            f" |dw| {min(moves):.3f}-{max(moves):.3f};"
            f" rows that could have become violators {min(violators)}-{max(violators)},"
            f" could enter the top {K} {min(top)}-{max(top)} (of {N})"
        )


if __name__ == "__main__":
    main()
