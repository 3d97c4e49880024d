"""Per-corpus calibration on the shared datasets: do synthetic queries pick what labels pick?

    .venv/bin/python benchmarks/calibration.py   # a few minutes

For each shared dataset (cranfield, bbc-news, msmarco-dl19-subset, with their precomputed
all-MiniLM-L6-v2 embeddings):

1. **labelled**: :func:`exemplar_svm.calibration.calibrate` on the tune half's queries and
   judgements (for bbc-news, query by example, the tune half of the sampled query documents,
   each left out of its own ranking, as :func:`exemplar_svm.evaluation.evaluate` does);
2. **synthetic**: :meth:`ExemplarIndex.calibrate` with synthetic queries built from
   ``corpus.jsonl``'s texts (a title, else the first sentence; the document is the answer),
   embedded with the bundled all-MiniLM-L6-v2 (the model of the precomputed embeddings), at
   most 200 of them;

then every candidate is measured on the test half (queries neither route saw), so the table
shows each route's pick and what it gives there, next to the library's default and the best
candidate in hindsight (which no route can know).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from exemplar_svm import ExemplarIndex, SentenceTransformerEmbedder
from exemplar_svm.calibration import CANDIDATES, Calibration, calibrate
from exemplar_svm.corpus import read_jsonl
from exemplar_svm.evaluation import (
    Dataset,
    evaluate,
    has_embeddings,
    load_dataset,
    select_split,
)

ROOT = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("EXEMPLAR_SVM_DATASETS", ROOT.parent / "shared" / "datasets"))
NAMES = ("cranfield", "bbc-news", "msmarco-dl19-subset")
MAX_SYNTHETIC = 200
METRICS = ("nDCG@10", "MAP@100")


def labelled_calibration(dataset: Dataset, index: ExemplarIndex) -> Calibration:
    """Calibrate on the tune half's queries, each query document left out of its ranking."""
    queries = [
        query
        for query in select_split(dataset.queries, "tune")
        if any(gain > 0 and doc != query.document for doc, gain in query.relevant.items())
    ]
    return calibrate(
        index,
        np.vstack([query.vector for query in queries]),
        [query.relevant for query in queries],
        exclude=[[query.document] if query.document else [] for query in queries],
    )


def synthetic_calibration(
    folder: Path, index: ExemplarIndex, embedder: SentenceTransformerEmbedder
) -> Calibration:
    """Calibrate with synthetic queries from the corpus's texts (on a copy of the index)."""
    records = [record for _, record in read_jsonl(folder / "corpus.jsonl")]
    texts = [str(record.get("text", "")) for record in records]
    titles = [record.get("title") or None for record in records]
    copy = ExemplarIndex(index.vectors, index.ids)
    return copy.calibrate(texts=texts, titles=titles, embedder=embedder, max_queries=MAX_SYNTHETIC)


def main() -> int:
    # The bundled model needs no network; make sure nothing tries (it loads at the first embed).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    embedder = SentenceTransformerEmbedder(show_progress=False)
    rows: list[str] = []
    every: dict[str, dict[str, dict[str, float]]] = {}
    details: list[str] = []
    for name in NAMES:
        folder = DATASETS / name
        if not has_embeddings(folder):
            print(f"skipping {name}: no dataset with embeddings under {folder}", file=sys.stderr)
            continue
        start = time.perf_counter()
        dataset = load_dataset(folder)
        index = ExemplarIndex(dataset.vectors, dataset.ids)
        labelled = labelled_calibration(dataset, index)
        synthetic = synthetic_calibration(folder, index, embedder)
        report = evaluate(dataset, CANDIDATES, baseline=None, split="test", show_progress=False)
        test = {
            candidate: {metric: report.methods[candidate].mean[metric] for metric in METRICS}
            for candidate in CANDIDATES
        }
        every[name] = test
        hindsight = max(CANDIDATES, key=lambda candidate: test[candidate]["nDCG@10"])
        n_test = len(report.query_ids)
        agree = "yes" if synthetic.chosen == labelled.chosen else "no"
        for route, queries, picked in (
            ("library default", "-", "default"),
            ("labelled (tune half)", str(labelled.n_queries), labelled.chosen),
            (f"synthetic (agrees: {agree})", str(synthetic.n_queries), synthetic.chosen),
            ("best on the test half (hindsight)", "-", hindsight),
        ):
            values = " | ".join(f"{test[picked][metric]:.3f}" for metric in METRICS)
            rows.append(f"| {name} | {route} | {queries} | {picked} | {n_test} | {values} |")
        details.append(f"### {name}: labelled\n\n{labelled.to_markdown()}")
        details.append(f"### {name}: synthetic\n\n{synthetic.to_markdown()}")
        print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)

    if not rows:
        print("no shared dataset found; nothing measured", file=sys.stderr)
        return 1
    print("## What each route picks, and what it gives on the test half\n")
    print(
        "| set | route | calibration queries | picked | test queries | "
        + " | ".join(f"test {metric}" for metric in METRICS)
        + " |"
    )
    print("|---|---|---:|---|---:|" + "---:|" * len(METRICS))
    print("\n".join(rows))
    print("\n## Every candidate on the test half (nDCG@10 / MAP@100)\n")
    names = list(every)
    print("| candidate | settings | " + " | ".join(names) + " |")
    print("|---|---|" + "---:|" * len(names))
    for candidate, options in CANDIDATES.items():
        cells = " | ".join(
            f"{every[name][candidate]['nDCG@10']:.3f} / {every[name][candidate]['MAP@100']:.3f}"
            for name in names
        )
        print(f"| {candidate} | `{json.dumps(options)}` | {cells} |")
    print("\n## The calibrations (mean scores on the calibration queries)\n")
    print("\n\n".join(details))
    return 0


if __name__ == "__main__":
    sys.exit(main())
