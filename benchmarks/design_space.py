"""The search for the default: candidate rankings on the tune halves, the winner on the test halves.

Every candidate is a set of ``ExemplarIndex.search`` options. Each is measured on the ``tune``
half of every shared dataset's queries against the strongest cheap baseline a careful user
would build for that corpus: dense pseudo-relevance feedback with ``m`` and ``beta`` chosen on
the same tune half (``evaluation.tune_prf``). The candidate with the best mean nDCG@10 gain over
the sets becomes the default; the script then reports it, and the baseline, on the test halves.

Run from the project's root (the datasets are read from ``../shared/datasets``)::

    python benchmarks/design_space.py            # the query protocol
    python benchmarks/design_space.py --feedback  # 3 positives and 3 negatives per query
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from exemplar_svm.evaluation import evaluate, load_dataset, prf_method, tune_prf

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
SETS = ("cranfield", "bbc-news", "msmarco-dl19-subset")


def candidates(feedback: bool) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for threshold in (3.5, 4.0, 4.5):
        for beta in (1.0, 2.0, 3.0):
            found[f"prf z>={threshold} beta={beta:g}"] = {
                "mode": "prf",
                "feedback_threshold": threshold,
                "prf_weight": beta,
            }
    for C in (0.003, 0.01):
        for weight in (0.3, 0.5, 0.7) if feedback else (0.1, 0.2, 0.3):
            found[f"hybrid C={C:g} h={weight:g}"] = {
                "mode": "hybrid",
                "C": C,
                "hybrid_weight": weight,
            }
    found["svm C=0.003"] = {"mode": "svm", "C": 0.003}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feedback", action="store_true", help="the relevance-feedback protocol")
    args = parser.parse_args()
    protocol = "feedback" if args.feedback else "query"
    methods = candidates(args.feedback)
    gains: dict[str, list[np.ndarray]] = {name: [] for name in methods}
    baselines = {}
    for name in SETS:
        dataset = load_dataset(DATASETS / name)
        m, beta = tune_prf(dataset)
        baselines[name] = prf_method(m, beta)
        print(f"{name}: tuned dense PRF m={m}, beta={beta:g}")
        report = evaluate(
            dataset,
            {"baseline": baselines[name], **methods},
            baseline="baseline",
            split="tune",
            protocol=protocol,
            show_progress=False,
        )
        for method in methods:
            comparison = report.methods[method].vs_baseline
            gains[method].append(
                np.array([comparison[metric].mean_difference for metric in ("nDCG@10", "MAP@100")])
            )
    print("\nTune halves: gain over the tuned dense PRF (nDCG@10, MAP@100) per set")
    ranked = sorted(methods, key=lambda method: -np.mean([g[0] for g in gains[method]]))
    for method in ranked:
        per_set = "  ".join(f"{g[0]:+.4f}/{g[1]:+.4f}" for g in gains[method])
        mean = np.mean([g[0] for g in gains[method]])
        print(f"  {method:28s} mean nDCG {mean:+.4f}   {per_set}")
    best = ranked[0]
    print(f"\nTest halves: {best} against the tuned dense PRF")
    for name in SETS:
        dataset = load_dataset(DATASETS / name)
        report = evaluate(
            dataset,
            {"baseline": baselines[name], best: methods[best]},
            baseline="baseline",
            split="test",
            protocol=protocol,
            show_progress=False,
        )
        result = report.methods[best]
        cells = [
            f"{metric} {result.mean[metric]:.3f} "
            f"({result.vs_baseline[metric].mean_difference:+.4f})"
            for metric in ("nDCG@10", "MAP@100")
        ]
        print(f"  {name:22s} " + "   ".join(cells))


if __name__ == "__main__":
    main()
