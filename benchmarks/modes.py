"""What each search mode costs, as a ratio to brute-force kNN measured side by side.

    python benchmarks/modes.py              # one BLAS thread
    python benchmarks/modes.py --threads 2

For each corpus: brute-force kNN over the same float32 matrix (one product and a top 10), then
``ExemplarIndex.search`` in each mode at the library's defaults, one query at a time; medians
and the worst over held-out queries (the real query embeddings of msmarco-dl19-subset, not in
any corpus), every mode timed on the same query in turn so that load on the machine hits them
alike. The corpora: the three shared sets' precomputed all-MiniLM-L6-v2 embeddings, and 100k
rows resampled from msmarco-dl19-subset's passages with small noise (each row a real passage
embedding moved by a random 0.1-norm step, then normalised), so the spectrum stays that of real
embeddings.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from exemplar_svm import ExemplarIndex
from exemplar_svm._blas import _controller
from exemplar_svm.index import top_k

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
EMBEDDINGS = "embeddings/all-MiniLM-L6-v2"
MODES = ("knn", "prf", "hybrid", "svm")
QUERIES = 15


def corpora() -> dict[str, np.ndarray]:
    found = {}
    for name in ("cranfield", "bbc-news", "msmarco-dl19-subset"):
        path = DATASETS / name / EMBEDDINGS / "corpus.npy"
        if path.is_file():
            found[name] = np.load(path, allow_pickle=False)
    base = found.get("msmarco-dl19-subset")
    if base is not None:
        rng = np.random.default_rng(0)
        rows = base[rng.integers(0, len(base), 100_000)].astype(np.float64)
        steps = rng.normal(size=rows.shape)
        steps *= 0.1 / np.linalg.norm(steps, axis=1, keepdims=True)
        moved = rows + steps
        found["msmarco resampled, 100k"] = (
            moved / np.linalg.norm(moved, axis=1, keepdims=True)
        ).astype(np.float32)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default: 1)")
    args = parser.parse_args()
    queries = np.load(DATASETS / "msmarco-dl19-subset" / EMBEDDINGS / "queries.npy")[:QUERIES]
    print(f"BLAS threads: {args.threads}; {len(queries)} held-out queries per corpus\n")
    print(
        "| corpus | n x d | kNN ms | "
        + " | ".join(f"{mode} / kNN (median, worst)" for mode in MODES[1:])
        + " |"
    )
    print("|---|---|---|" + "---|" * (len(MODES) - 1))
    with _controller().limit(limits=args.threads, user_api="blas"):
        for name, vectors in corpora().items():
            index = ExemplarIndex(vectors)
            everything = np.ones(len(vectors), dtype=bool)
            for mode in MODES[1:]:
                index.search(queries[0], 10, mode=mode)  # one-off corpus statistics
            times: dict[str, list[float]] = {mode: [] for mode in MODES}
            for query in queries:
                for mode in MODES:
                    start = time.perf_counter()
                    if mode == "knn":  # the brute force a user would write
                        top_k(
                            (index.vectors @ query.astype(np.float32)).astype(np.float64),
                            everything,
                            10,
                        )
                    else:
                        index.search(query, 10, mode=mode)
                    times[mode].append(time.perf_counter() - start)
            ratios = {
                mode: [t / k for t, k in zip(times[mode], times["knn"], strict=True)]
                for mode in MODES[1:]
            }
            cells = [
                f"{statistics.median(ratios[mode]):.1f}x, {max(ratios[mode]):.1f}x"
                for mode in MODES[1:]
            ]
            knn_ms = statistics.median(times["knn"]) * 1000
            print(
                f"| {name} | {vectors.shape[0]} x {vectors.shape[1]} | {knn_ms:.2f} | "
                + " | ".join(cells)
                + " |"
            )


if __name__ == "__main__":
    main()
