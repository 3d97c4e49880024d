"""Peak extra memory of one search, as a share of the corpus matrix (docs/guarantees.md).

    python benchmarks/memory.py                 # 100k x 384, MiniLM-like rows
    python benchmarks/memory.py --rows 20000
    python benchmarks/memory.py --rows 10000 --shape openai   # 1536-d, OpenAI-like

Rows and held-out queries come from ``generators.py`` (fitted to all-MiniLM-L6-v2 on
bbc-news, or to what is reported of OpenAI's 1536-d embeddings). Each line is the largest
``tracemalloc`` peak over 5 queries, divided by the corpus matrix's size, for the default, the
textbook SVM (with its default feedback, and without) and the default with 1 to 64 positive
examples; then one ``search_batch`` of 16 queries for three of them (its peak, all threads).
"""

from __future__ import annotations

import argparse
import sys
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generators import MINILM, OPENAI, fit

from exemplar_svm import ExemplarIndex


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--shape", choices=["minilm", "openai"], default="minilm")
    args = parser.parse_args()
    generator = fit({"minilm": MINILM, "openai": OPENAI}[args.shape])
    corpus = generator.corpus(args.rows)
    index = ExemplarIndex(corpus)
    queries = generator.held_out(5)
    index.search(queries[0], 10, mode="svm")  # the index's one-time statistics, not a search's
    searches: dict[str, dict[str, Any]] = {
        "default (PRF)": {},
        "textbook SVM, feedback 0": {"mode": "svm", "C": 0.1, "feedback": 0},
        "SVM with default feedback": {"mode": "svm"},
    }
    for count in (1, 8, 32, 64):
        searches[f"default + {count} positives"] = {"positives": [str(i) for i in range(count)]}
    print(f"# {args.rows:,} x {corpus.shape[1]} ({corpus.nbytes / 2**20:.0f} MB)\n")
    print("| search | peak / corpus matrix |\n|---|---|")
    for label, options in searches.items():
        peaks = []
        for query in queries:
            tracemalloc.start()
            index.search(query, 10, **options)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        print(f"| {label} | {max(peaks) / corpus.nbytes:.2f} |")
    batch = generator.held_out(16)
    for label in ("textbook SVM, feedback 0", "SVM with default feedback", "default + 8 positives"):
        tracemalloc.start()
        index.search_batch(batch, 10, **searches[label])
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"| search_batch of 16, {label} | {peak / corpus.nbytes:.2f} |")


if __name__ == "__main__":
    main()
