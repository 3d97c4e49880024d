"""Variants of the exact solver and of the default's SVM side, measured against today's choice.

    python benchmarks/solver_variants.py   # one BLAS thread; about 5 minutes

On the realistic generators (``generators.py``: MiniLM-like 100k x 384, OpenAI-like 10k x 1536),
12 queries not in the corpus (6 held out, 6 shifted), every figure a median ratio to brute-force
kNN in the same run:

- the textbook SVM (``mode="svm", C=0.1, feedback=0``) with more principal axes starting every
  subspace (``_AXES``: 8 today) and more gradient directions kept at once
  (``_GRADIENT_DIRECTIONS``: 4 today), with the mean number of rounds and directions;
- the default given 3 positives (the hybrid: the SVM at ``C=0.003`` with the PRF documents as
  weak positives), solved to a coarser tolerance than the exact 1e-6, with the share of the
  exact top 10 and top 100 it keeps;
- the same hybrid with its SVM trained on the nearest ``head`` documents (by the positives'
  centroid) plus ``rest`` sampled from the others (each weighted to stand for its share), then
  scoring the corpus in one pass: the approximation a vector store's path makes.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generators import MINILM, OPENAI, fit

import exemplar_svm._solver as solver
import exemplar_svm.index as index_module
from exemplar_svm import ExemplarIndex
from exemplar_svm._blas import _controller

TEXTBOOK = {"mode": "svm", "C": 0.1, "feedback": 0}
QUERIES = 6  # of each kind
_solve_many = solver.solve_many


@contextmanager
def solving(change: Callable[[Sequence[Mapping[str, Any]]], list[Any]] | None) -> Iterator[None]:
    """Searches solve with ``change`` instead of the library's ``solve_many``."""
    index_module.solve_many = change or _solve_many  # type: ignore[assignment]
    try:
        yield
    finally:
        index_module.solve_many = _solve_many  # type: ignore[assignment]


@contextmanager
def constant(name: str, value: int) -> Iterator[None]:
    old = getattr(solver, name)
    setattr(solver, name, value)
    try:
        yield
    finally:
        setattr(solver, name, old)


def tolerance(value: float) -> Callable[[Sequence[Mapping[str, Any]]], list[Any]]:
    return lambda problems: _solve_many([{**p, "tolerance": value} for p in problems])


def sampled(head: int, rest: int) -> Callable[[Sequence[Mapping[str, Any]]], list[Any]]:
    def solve(problems: Sequence[Mapping[str, Any]]) -> list[Any]:
        out = []
        for problem in problems:
            corpus, weights = problem["corpus"], problem["corpus_weights"]
            centre = problem["positives"].mean(axis=0).astype(np.float32)
            near = np.sort(np.argpartition(-(corpus @ centre), head)[:head])
            others = np.setdiff1d(np.flatnonzero(weights > 0), near)
            picked = np.sort(np.random.default_rng(0).choice(others, rest, replace=False))
            rows = np.concatenate([near, picked])
            costs = weights[rows].copy()
            costs[head:] *= len(others) / rest
            small = {
                **problem,
                "corpus": np.ascontiguousarray(corpus[rows]),
                "corpus_weights": costs,
                "stats": None,
                "tolerance": 1e-4,
            }
            w, b, _, info = _solve_many([small])[0]
            out.append((w, b, (corpus @ w.astype(np.float32)).astype(np.float64) + b, info))
        return out

    return solve


def measure(
    index: ExemplarIndex, queries: np.ndarray, options: list[dict[str, Any]], k: int = 10
) -> tuple[float, list[list[str]], list[solver.SolveInfo]]:
    """Median time / kNN's, the hits, and each search's solve info."""
    infos: list[solver.SolveInfo] = []
    current = index_module.solve_many

    def recording(problems: Sequence[Mapping[str, Any]]) -> list[Any]:
        solutions = current(problems)
        infos.extend(solution[3] for solution in solutions)
        return solutions

    index_module.solve_many = recording  # type: ignore[assignment]
    times, knn, hits = [], [], []
    try:
        for query, extra in zip(queries, options, strict=True):
            start = time.perf_counter()
            index.vectors @ query
            knn.append(time.perf_counter() - start)
            start = time.perf_counter()
            found = index.search(query, k, **extra)
            times.append(time.perf_counter() - start)
            hits.append([hit.id for hit in found])
    finally:
        index_module.solve_many = current  # type: ignore[assignment]
    return statistics.median(times) / statistics.median(knn), hits, infos


def overlap(hits: list[list[str]], reference: list[list[str]], k: int) -> float:
    pairs = zip(hits, reference, strict=True)
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in pairs]))


def main() -> None:
    with _controller().limit(limits=1, user_api="blas"):
        for shape, n in ((MINILM, 100_000), (OPENAI, 10_000)):
            generator = fit(shape)
            corpus = generator.corpus(n)
            queries = np.vstack([generator.held_out(QUERIES), generator.shifted(QUERIES)])
            name = f"{shape.name}, {n // 1000}k x {shape.dim}"
            textbook = [TEXTBOOK] * len(queries)
            print(f"\n{name}: textbook SVM")
            for constant_name, values in (
                ("_AXES", (8, 32, 64)),
                ("_GRADIENT_DIRECTIONS", (4, 16)),
            ):
                for value in values:
                    with constant(constant_name, value):
                        index = ExemplarIndex(corpus)  # the axes are the index's
                        index.search(queries[0], 10, **TEXTBOOK)
                        ratio, _, infos = measure(index, queries, textbook)
                    rounds = np.mean([info.rounds for info in infos])
                    directions = np.mean([info.directions for info in infos])
                    print(
                        f"  {constant_name}={value}: {ratio:.1f}x kNN, {rounds:.2f} rounds, "
                        f"{directions:.1f} directions"
                    )
            index = ExemplarIndex(corpus)
            positives = [
                {"positives": [index.ids[row] for row in np.argsort(-(corpus @ q))[[1, 4, 9]]]}
                for q in queries
            ]
            index.search(queries[0], 10, **positives[0])
            exact_ratio, exact, _ = measure(index, queries, positives, k=100)
            print(f"{name}: the default with 3 positives; exact: {exact_ratio:.1f}x kNN")
            variants: list[tuple[str, Any]] = [
                (f"tolerance {value:g}", tolerance(value)) for value in (1e-4, 1e-3, 1e-2)
            ]
            variants += [
                (f"sampled, {head} nearest + {rest} others", sampled(head, rest))
                for head, rest in ((2048, 2048), (4096, 4096), (8192, 8192))
                if head + rest < n
            ]
            for label, change in variants:
                with solving(change):
                    ratio, hits, _ = measure(index, queries, positives, k=100)
                print(
                    f"  {label}: {ratio:.1f}x kNN, keeps {overlap(hits, exact, 10):.3f} of the "
                    f"exact top 10 and {overlap(hits, exact, 100):.3f} of the top 100"
                )


if __name__ == "__main__":
    main()
