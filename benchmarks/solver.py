"""Exemplar-SVM search vs brute-force kNN vs scikit-learn's LinearSVC, measured side by side.

    python benchmarks/solver.py              # the full table (about 2 minutes on 2 cores)
    python benchmarks/solver.py --quick      # smaller sizes, a minute
    python benchmarks/solver.py --threads 1  # every BLAS call on one thread (kNN's too)

Every figure is a ratio measured in the same run, so a busy machine shifts them less:

- latency of one search (fit, score the whole corpus, top 10) for kNN, scikit-learn
  (``LinearSVC(C=0.1, class_weight="balanced", tol=1e-6, max_iter=10000)``, the notebook that
  everyone copies) and ``ExemplarIndex.search(mode="svm")``; medians over the queries;
- exactness: the largest relative objective difference to scikit-learn's solution and the share
  of queries whose top 10 is the same;
- peak extra memory of one search (tracemalloc) as a share of the corpus matrix;
- how many passes over the corpus matrix one search makes (kNN makes one);
- growth: the log-log slope of one search's time against n;
- batches: per-query time of ``search_batch`` against one query at a time;
- the index's one-off precomputation (corpus statistics);
- approximate rankings, each with its latency (ratio to kNN) and how many of the exact SVM's top
  10 it finds: ``mode="lda"`` (the exemplar LDA), and, for comparison only (it is not a mode),
  the SVM trained against a fixed sample of negatives (each standing for its share of the
  corpus), then scoring the whole corpus.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.svm import LinearSVC

from exemplar_svm import ExemplarIndex, LinearModel
from exemplar_svm._solver import CorpusStats, solve
from exemplar_svm.svm import objective

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
C = 0.1
# The problem scikit-learn solves: the exemplar SVM alone, no feedback documents.
SVM = {"mode": "svm", "C": C, "feedback": 0}
LDA = {"mode": "lda", "feedback": 0}
# Negatives sampled for the comparison with subsampled training.
SAMPLES = (1024, 4096)


def clustered(n: int, d: int, mean_cosine: float, seed: int = 0, clusters: int = 50) -> np.ndarray:
    """Unit vectors in clusters around one shared direction, like real embeddings.

    ``mean_cosine`` is the mean pairwise cosine it aims at (OpenAI's embeddings: about 0.7;
    all-MiniLM-L6-v2 on a topical corpus: about 0.2).
    """
    rng = np.random.default_rng(seed)
    shared = rng.normal(size=d)
    shared /= np.linalg.norm(shared)
    centres = rng.normal(size=(clusters, d))
    sizes = rng.zipf(1.6, size=clusters).astype(float)  # a few large topics, many small ones
    members = rng.choice(clusters, size=n, p=sizes / sizes.sum())
    topic = centres[members] + 1.2 * rng.normal(size=(n, d))
    topic /= np.linalg.norm(topic, axis=1, keepdims=True)
    rows = np.sqrt(mean_cosine) * shared + np.sqrt(1 - mean_cosine) * topic
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def timed(function: Callable[[], Any], repeat: int = 1) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def knn(corpus: np.ndarray, query: np.ndarray, k: int = 10) -> np.ndarray:
    scores = corpus @ query
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def sklearn_svm(corpus: np.ndarray, query: np.ndarray, k: int = 10) -> tuple[np.ndarray, Any]:
    X = np.vstack([query[np.newaxis], corpus])
    y = np.r_[1, np.zeros(len(corpus))]
    svc = LinearSVC(C=C, class_weight="balanced", tol=1e-6, max_iter=10000, random_state=0)
    svc.fit(X, y)
    scores = svc.decision_function(corpus)
    top = np.argpartition(-scores, k)[:k]
    model = LinearModel(coef=svc.coef_.ravel(), intercept=float(svc.intercept_[0]))
    return top[np.argsort(-scores[top])], model


def peak_memory(function: Callable[[], Any]) -> int:
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    function()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def scenario(name: str, corpus: np.ndarray, queries: np.ndarray, with_sklearn: bool) -> dict:
    start = time.perf_counter()
    index = ExemplarIndex(corpus)
    index.search(queries[0], k=10, **SVM)  # the first search computes the corpus statistics
    precompute = time.perf_counter() - start
    vectors = index.vectors
    samples = {m: negative_sample(vectors, m) for m in SAMPLES if m < len(vectors) // 2}
    rows: dict[str, list[float]] = {
        "knn": [],
        "ours": [],
        "sklearn": [],
        "gap": [],
        "same": [],
        "passes": [],
        "lda": [],
        "lda_top": [],
        **{f"sampled{m}": [] for m in SAMPLES},
        **{f"sampled{m}_top": [] for m in SAMPLES},
    }
    for query in queries:
        query = query / np.linalg.norm(query)
        t_knn, _ = timed(lambda q=query: knn(vectors, q), repeat=7)
        t_ours, hits = timed(lambda q=query: index.search(q, k=10, **SVM), repeat=5)
        rows["knn"].append(t_knn)
        rows["ours"].append(t_ours)
        ours_model, passes = _our_model(index, query)
        rows["passes"].append(passes)
        exact = {int(h.id) for h in hits}
        t_lda, lda_hits = timed(lambda q=query: index.search(q, k=10, **LDA), repeat=5)
        rows["lda"].append(t_lda / t_knn)
        rows["lda_top"].append(len(exact & {int(h.id) for h in lda_hits}) / 10)
        for m, sample in samples.items():
            t_sampled, top = timed(lambda q=query, s=sample: sampled(vectors, q, s), repeat=3)
            rows[f"sampled{m}"].append(t_sampled / t_knn)
            rows[f"sampled{m}_top"].append(len(exact & set(top.tolist())) / 10)
        if with_sklearn:
            t_ref, (ref_top, ref_model) = timed(lambda q=query: sklearn_svm(vectors, q))
            rows["sklearn"].append(t_ref)
            ref_obj = objective(ref_model, query, vectors, C=C)
            rows["gap"].append(abs(objective(ours_model, query, vectors, C=C) - ref_obj) / ref_obj)
            # Tie-aware: documents the reference scores equally (duplicates) may swap places.
            ref_scores = ref_model.decision_function(vectors)
            ours_top = [int(h.id) for h in hits]
            rows["same"].append(
                float(np.allclose(ref_scores[ours_top], ref_scores[ref_top], rtol=0, atol=1e-6))
            )
    memory = peak_memory(lambda: index.search(queries[0], k=10, **SVM)) / vectors.nbytes
    result = {
        "name": name,
        "n": len(corpus),
        "d": corpus.shape[1],
        "knn_ms": 1e3 * statistics.median(rows["knn"]),
        "ours_ms": 1e3 * statistics.median(rows["ours"]),
        "ratio_knn": statistics.median(
            o / k for o, k in zip(rows["ours"], rows["knn"], strict=True)
        ),
        "memory": memory,
        "precompute_s": precompute,
        "passes": statistics.median(rows["passes"]),
        **{
            key: statistics.median(values) if "top" not in key else statistics.mean(values)
            for key, values in rows.items()
            if key.startswith(("lda", "sampled")) and values
        },
    }
    if with_sklearn:
        result["sklearn_ms"] = 1e3 * statistics.median(rows["sklearn"])
        result["speedup"] = statistics.median(
            s / o for s, o in zip(rows["sklearn"], rows["ours"], strict=True)
        )
        result["gap"] = max(rows["gap"])
        result["same"] = statistics.mean(rows["same"])
    return result


def negative_sample(corpus: np.ndarray, size: int) -> tuple[np.ndarray, CorpusStats]:
    """A fixed sample of the corpus's rows, with its statistics (as an index would keep them)."""
    rows = np.sort(np.random.default_rng(0).choice(len(corpus), size, replace=False))
    sample = np.ascontiguousarray(corpus[rows])
    stats = CorpusStats.of(sample)
    stats.axes(sample)
    stats.whitener(sample)
    return sample, stats


def sampled(
    corpus: np.ndarray, query: np.ndarray, sample: tuple[np.ndarray, CorpusStats], k: int = 10
) -> np.ndarray:
    """Top k of the exact SVM trained against a sample of negatives (each standing for its share
    of the corpus, so the problem keeps its balance), then scoring the corpus."""
    rows, stats = sample
    n, d = corpus.shape
    coef, intercept, _, _ = solve(
        query[np.newaxis].astype(np.float64),
        rows,
        np.full(len(rows), n / len(rows)),
        np.empty((0, d)),
        np.empty(0),
        C,
        stats=stats,
        tolerance=1e-4,  # the sampled problem only approximates the full one
    )
    scores = corpus @ coef.astype(np.float32) + intercept
    top = np.argpartition(-scores, k)[:k]
    return top[np.argsort(-scores[top])]


def _our_model(index: ExemplarIndex, query: np.ndarray) -> tuple[LinearModel, int]:
    """The model a search trains (the same solver call) and the corpus passes it made."""
    corpus = index.vectors
    coef, intercept, _, info = solve(
        query[np.newaxis].astype(np.float64),
        corpus,
        np.ones(len(corpus)),
        np.empty((0, corpus.shape[1])),
        np.empty(0),
        C,
        stats=index._corpus.stats,
    )
    return LinearModel(coef, intercept), info.passes


def shared_sets(count: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    sets = []
    for name in ("cranfield", "bbc-news", "msmarco-dl19-subset"):
        folder = DATASETS / name / "embeddings" / "all-MiniLM-L6-v2"
        if not (folder / "corpus.npy").is_file():
            continue
        corpus = np.load(folder / "corpus.npy", allow_pickle=False)
        if (folder / "queries.npy").is_file():
            queries = np.load(folder / "queries.npy", allow_pickle=False)[:count]
        else:  # query by example: documents as queries (they stay in the corpus here)
            queries = corpus[np.random.default_rng(0).choice(len(corpus), count, replace=False)]
        sets.append((name, corpus, queries))
    return sets


def growth(sizes: list[int], d: int, with_sklearn_up_to: int) -> dict[str, float]:
    times: dict[str, list[tuple[int, float]]] = {"knn": [], "ours": [], "sklearn": []}
    for n in sizes:
        corpus = clustered(n + 3, d, 0.5, seed=n)
        index = ExemplarIndex(corpus[3:])
        index.search(corpus[0], k=10, **SVM)
        vectors = index.vectors
        per = {"knn": [], "ours": [], "sklearn": []}
        for query in corpus[:3]:
            per["knn"].append(timed(lambda v=vectors, q=query: knn(v, q), repeat=5)[0])
            per["ours"].append(
                timed(lambda i=index, q=query: i.search(q, k=10, **SVM), repeat=2)[0]
            )
            if n <= with_sklearn_up_to:
                per["sklearn"].append(timed(lambda v=vectors, q=query: sklearn_svm(v, q))[0])
        for key, values in per.items():
            if values:
                times[key].append((n, statistics.median(values)))
        print(
            f"  n={n:>7,}: "
            + ", ".join(
                f"{key} {1e3 * statistics.median(v):.1f} ms" for key, v in per.items() if v
            ),
            flush=True,
        )
    return {
        key: float(np.polyfit(np.log([n for n, _ in pts]), np.log([t for _, t in pts]), 1)[0])
        for key, pts in times.items()
        if len(pts) >= 2
    }


def batches(corpus: np.ndarray, queries: np.ndarray) -> float | None:
    index = ExemplarIndex(corpus)
    if not hasattr(index, "search_batch"):
        return None
    index.search(queries[0], k=10, **SVM)
    one, _ = timed(lambda: [index.search(q, k=10, **SVM) for q in queries], repeat=2)
    many, _ = timed(lambda: index.search_batch(queries, k=10, **SVM), repeat=2)
    return many / one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--queries", type=int, default=5, help="queries per scenario")
    parser.add_argument(
        "--threads", type=int, help="BLAS threads for everything (default: the library's)"
    )
    args = parser.parse_args()
    if args.threads:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=args.threads, user_api="blas"):
            run(args)
    else:
        run(args)


def run(args: argparse.Namespace) -> None:
    quick = args.quick
    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{len(__import__('os').sched_getaffinity(0))} cores, numpy {np.__version__}, "
        f"python {platform.python_version()}, BLAS threads: {args.threads or 'default'}\n"
    )

    synthetic = [
        ("clustered, cos 0.7", 2_000 if quick else 10_000, 1536, 0.7),
        ("clustered, cos 0.5", 10_000 if quick else 100_000, 384, 0.5),
    ]
    results = []
    for name, n, d, cosine in synthetic:
        data = clustered(n + args.queries, d, cosine, seed=1)
        results.append(scenario(name, data[args.queries :], data[: args.queries], True))
        print(f"  done: {name} n={n:,} d={d}", flush=True)
    for name, corpus, queries in shared_sets(args.queries):
        results.append(scenario(name, corpus, queries, True))
        print(f"  done: {name}", flush=True)

    print(
        "\n| data | n | d | kNN ms | ours ms | ours / kNN | corpus passes | sklearn ms "
        "| sklearn / ours | max objective gap | same top 10 | peak extra memory / corpus "
        "| precompute s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['name']} | {r['n']:,} | {r['d']} | {r['knn_ms']:.2f} | {r['ours_ms']:.1f} | "
            f"{r['ratio_knn']:.1f}x | {r['passes']:.0f} | "
            f"{r.get('sklearn_ms', float('nan')):.0f} | "
            f"{r.get('speedup', float('nan')):.0f}x | {r.get('gap', float('nan')):.1e} | "
            f"{r.get('same', float('nan')):.0%} | {r['memory']:.2f} | {r['precompute_s']:.2f} |"
        )

    print(
        "\napproximate rankings: latency / kNN's, and the share of the exact SVM's top 10 they "
        "find (mean)\n"
    )
    print(
        "| data | lda / kNN | lda top 10 | "
        + " | ".join(f"sampled {m:,} / kNN | sampled {m:,} top 10" for m in SAMPLES)
        + " |"
    )
    print("|---|---|---|" + "---|---|" * len(SAMPLES))
    for r in results:
        cells = [f"{r['lda']:.1f}x", f"{r['lda_top']:.0%}"]
        for m in SAMPLES:
            known = f"sampled{m}" in r
            cells.append(f"{r[f'sampled{m}']:.1f}x" if known else "-")
            cells.append(f"{r[f'sampled{m}_top']:.0%}" if known else "-")
        print(f"| {r['name']} | " + " | ".join(cells) + " |")

    print("\ngrowth of one search with n (d=384, mean cosine 0.5):")
    sizes = [1_000, 4_000, 16_000] if quick else [1_000, 4_000, 16_000, 64_000, 200_000]
    slopes = growth(sizes, 384, with_sklearn_up_to=16_000 if quick else 64_000)
    print("log-log slope (time ~ n^slope): " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))

    print()
    for n, d, cosine in [
        (5_000 if quick else 20_000, 384, 0.5),
        (2_000 if quick else 10_000, 1536, 0.7),
    ]:
        data = clustered(n + 32, d, cosine, seed=3)
        ratio = batches(data[32:], data[:32])
        if ratio is not None:
            print(f"batch of 32 queries, {n:,} x {d}: {ratio:.2f}x the time of 32 single searches")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
