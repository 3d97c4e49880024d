"""Where one exact search's time goes at 10k x 1536 (clustered, mean cosine 0.7), against kNN.

    python benchmarks/floor.py   # one BLAS thread, then two; about a minute

There a third of the corpus are support vectors, more than the memory budget lets a search
gather, so the solver works on the corpus in place. Every figure is a ratio to brute-force kNN
measured in the same run (medians over the queries):

- the exact gradient after each step, how many steps bound every score by 1e-6 (the solver's
  stop) and how many would only certify the top 10 (the first step whose score bound is below
  half the smallest gap between the final top 11);
- one step's cost, as the solver takes it: the product of the new direction with every row plus
  the gradient's read of the rows inside the margin; and, for comparison, both fused in one
  blocked pass over the rows;
- the work outside the passes over the corpus (the starting fit and the small subspace
  problems);
- what those add up to: the first pass, the steps (the cheaper way), the last gradient check,
  and then that work.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from solver import C, clustered

import exemplar_svm._solver as solver
from exemplar_svm._solver import CorpusStats, solve

N, D, COSINE, QUERIES, K = 10_000, 1536, 0.7, 7, 10
_FUSED_BLOCK = 256


class Timer:
    """Seconds spent inside the wrapped functions, and how often they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = {}
        self.originals: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, name: str) -> None:
        function: Callable[..., Any] = getattr(owner, name)
        self.originals.append((owner, name, function))

        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds.setdefault(name, []).append(time.perf_counter() - start)

        setattr(owner, name, timed)

    def restore(self) -> None:
        for owner, name, function in self.originals:
            setattr(owner, name, function)

    def total(self, name: str) -> float:
        return sum(self.seconds.get(name, []))


def fused_pass(corpus: np.ndarray, v: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Both halves of a step in one pass: each block's outputs, then its rows inside the margin
    summed while the block is in cache."""
    back = np.zeros(corpus.shape[1])
    for first in range(0, len(corpus), _FUSED_BLOCK):
        block = corpus[first : first + _FUSED_BLOCK]
        out = block @ v
        inside = np.flatnonzero(weights[first : first + _FUSED_BLOCK])
        back += (weights[first + inside] * out[inside]) @ block[inside]
    return back


def exemplar_svm(query: np.ndarray, corpus: np.ndarray, stats: CorpusStats) -> solver.Solution:
    """The exact solve of a search with ``mode="svm"`` and no feedback documents."""
    n, d = corpus.shape
    return solve(
        query[np.newaxis].astype(np.float64),
        corpus,
        np.ones(n),
        np.empty((0, d)),
        np.empty(0),
        C,
        stats=stats,
    )


def median_time(function: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(threads: int, corpus: np.ndarray, queries: np.ndarray, stats: CorpusStats) -> None:
    rows: dict[str, list[float]] = {}

    def record(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for query in queries:
        vector = query.astype(np.float32)
        knn = median_time(lambda v=vector: np.argpartition(-(corpus @ v), K)[:K])
        timer = Timer()
        for owner, name in ((solver._Rows, "forward"), (solver._Rows, "back")):
            timer.wrap(owner, name)
        timer.wrap(solver, "corpus_products")
        start = time.perf_counter()
        _, _, scores, info = exemplar_svm(query, corpus, stats)
        total = time.perf_counter() - start
        timer.restore()
        gradients = info.gradients
        record("rate", float(np.exp(np.mean(np.diff(np.log(gradients[1:]))))))
        record("steps", float(info.directions))
        # Every score lies within |g| |[x, 1]| of the optimum's (rows of unit length).
        top = np.sort(scores)[::-1][: K + 1]
        gap = float(np.diff(-top).min())
        record("certified", float(next(j for j, g in enumerate(gradients) if 2 * g * 2**0.5 < gap)))
        forward, back = timer.seconds["forward"], timer.seconds["back"]
        step = statistics.median(forward) + statistics.median(back[:-1] or back)
        record("step", step / knn)
        inside = np.where(scores > -1, 1.0, 0.0).astype(np.float32)
        fused = median_time(lambda v=vector, w=inside: fused_pass(corpus, v, w))
        record("fused", fused / knn)
        passes = timer.total("forward") + timer.total("back") + timer.total("corpus_products")
        record("outside", (total - passes) / knn)
        record("last_check", back[-1] / knn)
        record("total", total / knn)
    m = {key: statistics.median(values) for key, values in rows.items()}
    first, outside, step, check = 1.0, m["outside"], m["step"], m["last_check"]
    print(f"\nBLAS threads: {threads}   (medians over {len(queries)} queries; x = times kNN)")
    print(f"  gradient shrinks {1 / m['rate']:.0f}-fold per step")
    print(
        f"  steps: {m['steps']:.0f} to bound every score by 1e-6, {m['certified']:.0f} to "
        "certify the top 10"
    )
    print(f"  one step in place: {step:.2f}x (fused in one blocked pass: {m['fused']:.2f}x)")
    print(f"  work outside the passes: {outside:.2f}x; last gradient check {check:.2f}x")
    for label, steps in (("1e-6 bound", m["steps"]), ("top 10 certified", m["certified"])):
        passes = first + steps * min(step, m["fused"]) + check
        print(
            f"  with the {label}: the passes alone {passes:.1f}x, with the work outside them "
            f"{passes + outside:.1f}x"
        )
    print(f"  measured search: {m['total']:.1f}x")


def main() -> None:
    data = clustered(N + QUERIES, D, COSINE, seed=1)
    queries = data[:QUERIES] / np.linalg.norm(data[:QUERIES], axis=1, keepdims=True)
    corpus = np.ascontiguousarray(data[QUERIES:], dtype=np.float32)
    stats = CorpusStats.of(corpus)
    stats.axes(corpus)
    stats.whitener(corpus)
    print(f"{N:,} x {D}, mean cosine {COSINE}, C={C}")
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="blas"):
            exemplar_svm(queries[0], corpus, stats)  # warm
            run(threads, corpus, queries, stats)


if __name__ == "__main__":
    main()
