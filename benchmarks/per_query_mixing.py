"""Per-query mixing: can a signal known at query time pick, for each query, a better ranking?

For every query of the shared sets this script takes the kNN scores (what any mode computes
first) and derives the signals a per-query rule could use: the best document's cosine, its
z-score over the corpus, how many documents stand 4 standard deviations above the mean, and
the z-score gap between the 1st and the 10th document. A rule is "if the signal is above (or
below) t, rank with the alternative instead of the default"; the alternatives are kNN, the
hybrid and PRF with another weight. Every rule (signal x threshold at the tune halves'
5%..95% quantiles x direction x alternative) is scored by its mean nDCG@10 gain over the
default across the sets on the tune halves; the best one is then reported on the test halves,
beside the oracle (the better of the two rankings for every query, which no rule can beat).

Run from the project's root (the datasets are read from ``../shared/datasets``)::

    python benchmarks/per_query_mixing.py
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from exemplar_svm.evaluation import evaluate, load_dataset, query_split

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SETS = ("cranfield", "bbc-news", "msmarco-dl19-subset")
METHODS: dict[str, dict[str, Any]] = {
    "default": {},
    "knn": {"mode": "knn"},
    "prf beta=1": {"mode": "prf", "prf_weight": 1.0},
    "prf beta=4": {"mode": "prf", "prf_weight": 4.0},
    "hybrid": {"mode": "hybrid"},
}
SIGNALS = ("top cosine", "top z", "count z>=4", "z gap 1-10")


def signals(vectors: np.ndarray, query: np.ndarray) -> dict[str, float]:
    scores = vectors @ (query / np.linalg.norm(query))
    nearest = np.sort(scores)[::-1][:50]
    nearest = nearest[nearest < 0.99]  # a copy of the query (query by example) says nothing
    z = (nearest - scores.mean()) / scores.std()
    return {
        "top cosine": float(nearest[0]),
        "top z": float(z[0]),
        "count z>=4": float(np.count_nonzero(z >= 4)),
        "z gap 1-10": float(z[0] - z[min(9, len(z) - 1)]),
    }


def main() -> None:
    per_set = []
    for name in SETS:
        dataset = load_dataset(DATASETS / name)
        report = evaluate(dataset, METHODS, baseline=None, split="all", show_progress=False)
        vectors = dataset.vectors.astype(np.float64)
        by_id = {query.id: query for query in dataset.queries}
        ids = report.query_ids
        values = {m: report.methods[m].scores["nDCG@10"] for m in METHODS}
        found = [signals(vectors, by_id[q].vector) for q in ids]
        signal = {s: np.array([each[s] for each in found]) for s in SIGNALS}
        split = np.array([query_split(q) for q in ids])
        gain = values["default"] - values["knn"]
        print(f"{name}: correlation of each signal with the default's per-query gain over kNN")
        print("   " + "  ".join(f"{s} {np.corrcoef(signal[s], gain)[0, 1]:+.3f}" for s in SIGNALS))
        per_set.append((values, signal, split))

    def rule_gain(half: str, s: str, t: float, direction: int, alternative: str) -> list[float]:
        gains = []
        for values, signal, split in per_set:
            use = (direction * (signal[s] - t) > 0) & (split == half)
            chosen = np.where(use, values[alternative], values["default"])
            gains.append(float((chosen - values["default"])[split == half].mean()))
        return gains

    best: tuple[float, str, float, int, str] | None = None
    for s in SIGNALS:
        tune = np.concatenate([signal[s][split == "tune"] for _, signal, split in per_set])
        for t in np.quantile(tune, np.linspace(0.05, 0.95, 19)):
            for direction in (1, -1):
                for alternative in METHODS:
                    if alternative == "default":
                        continue
                    mean = float(np.mean(rule_gain("tune", s, t, direction, alternative)))
                    if best is None or mean > best[0]:
                        best = (mean, s, float(t), direction, alternative)
    assert best is not None
    mean, s, t, direction, alternative = best
    side = ">" if direction > 0 else "<"
    rule = f"{alternative} where {s} {side} {t:.3f}, else the default"
    print(f"\nBest rule on the tune halves: {rule}")
    for half in ("tune", "test"):
        gains = rule_gain(half, s, t, direction, alternative)
        print(f"  {half}: nDCG@10 gain over the default " + "  ".join(f"{g:+.4f}" for g in gains))
    print("\nOracle (the better of the default and one alternative per query), test halves:")
    for alternative in METHODS:
        if alternative == "default":
            continue
        gains = []
        for values, _, split in per_set:
            half = split == "test"
            best_of = np.maximum(values[alternative], values["default"])[half]
            gains.append(float((best_of - values["default"][half]).mean()))
        print(f"  default or {alternative:10s} " + "  ".join(f"{g:+.4f}" for g in gains))


if __name__ == "__main__":
    main()
