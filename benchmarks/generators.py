"""Synthetic corpora shaped like real sentence embeddings, for the speed benchmarks.

Real embeddings are far from isotropic: all-MiniLM-L6-v2 on the shared sets has a participation
ratio (sum of the covariance's eigenvalues squared over the sum of their squares) of 42 to 72
of its 384 dimensions, its top 50 axes hold 62-72% of the variance, the rows share a mean
direction (mean pairwise cosine 0.03 to 0.29), and they come in topics: a document's 10 nearest
neighbours stand 2.8 to 5.9 standard deviations above its mean cosine. A solver's speed
depends on exactly these: the spectrum sets the Hessian's conditioning, the shared direction
its stiffest axis, and the topics how many documents crowd the query's margin. So the
generator draws

- topics: a mixture of cluster centres (log-normal sizes), with a Gaussian around each, both
  with the covariance ``Q diag(lambda) Q^T``, ``lambda_i = (i + 10) ** -alpha`` over a random
  basis ``Q``; the centres take ``topic_share`` of the variance;
- a shared mean ``m * u`` along a random unit vector ``u``;

normalises every row, and fits ``alpha``, ``m`` and ``topic_share`` to a target participation
ratio, mean cosine and neighbourhood (``fit``). ``stats`` computes these figures and the
variance shares of the top axes for generated and real sets alike
(``python benchmarks/generators.py`` prints them side by side).

Queries: ``held_out`` draws new rows from the same distribution (never in the corpus);
``shifted`` moves the mean by ``shift`` along another direction before normalising, as an
asymmetric query/passage model does (on msmarco-dl19-subset the real queries' mean is 0.19
away from the passages'; on cranfield 0.26).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
EMBEDDINGS = "embeddings/all-MiniLM-L6-v2"
REAL_SETS = ("cranfield", "bbc-news", "msmarco-dl19-subset")
_OFFSET = 10.0
_SAMPLE = 4000
# The neighbourhood statistic depends on n, so it is fitted at the size of the set it copies.
_NEIGHBOURHOOD_ROWS = 2225
_NEIGHBOURHOOD_QUERIES = 500


@dataclass(frozen=True)
class Shape:
    """What a generator is fitted to."""

    name: str
    dim: int
    participation: float  # of the covariance of the normalised rows
    mean_cosine: float
    neighbourhood: float  # the median z-score of a row's 10 nearest neighbours, at n = 2225
    topics: int = 1000
    dominant: float = 0.0  # the share of rows in one topic (0: log-normal sizes only)


#: Fitted to all-MiniLM-L6-v2 on bbc-news, the middle of the shared sets' range.
MINILM = Shape("MiniLM-like", 384, participation=65.0, mean_cosine=0.11, neighbourhood=3.85)
#: OpenAI's 1536-d embeddings: a mean cosine of about 0.7 is what users report. No spectrum is
#: published, so it keeps MiniLM's participation as a share of the dimension, and its topics.
OPENAI = Shape("OpenAI-like", 1536, participation=65.0 * 4, mean_cosine=0.7, neighbourhood=3.85)


class Generator:
    """A fitted generator: draw corpus rows and queries from it."""

    def __init__(
        self, shape: Shape, alpha: float, mean_norm: float, topic_share: float, seed: int = 0
    ) -> None:
        self.shape, self.alpha, self.mean_norm = shape, alpha, mean_norm
        self.topic_share, self.seed = topic_share, seed
        rng = np.random.default_rng(seed)
        d = shape.dim
        self.basis = np.linalg.qr(rng.normal(size=(d, d)))[0]
        self.scale = _scale(d, alpha)
        self.directions = np.linalg.qr(rng.normal(size=(d, 2)))[0]
        self.centres = rng.normal(size=(shape.topics, d)) * self.scale
        sizes = rng.lognormal(sigma=1.0, size=shape.topics)
        sizes /= sizes.sum()
        if shape.dominant:
            sizes *= (1 - shape.dominant) / (1 - sizes[0])
            sizes[0] = shape.dominant
        self.sizes = sizes / sizes.sum()

    def rows(self, n: int, stream: int, shift: float = 0.0) -> np.ndarray:
        """``n`` unit rows (float32); ``stream`` picks independent draws."""
        rng = np.random.default_rng([self.seed, stream])
        share = self.topic_share
        out = np.empty((n, self.shape.dim), dtype=np.float32)
        mean = self.mean_norm * self.directions[:, 0] + shift * self.directions[:, 1]
        for start in range(0, n, 65536):
            count = min(65536, n - start)
            topic = rng.choice(len(self.sizes), size=count, p=self.sizes)
            local = rng.normal(size=(count, self.shape.dim)) * self.scale
            latent = np.sqrt(share) * self.centres[topic] + np.sqrt(1 - share) * local
            block = latent @ self.basis.T + mean
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start : start + count] = block
        return out

    def corpus(self, n: int) -> np.ndarray:
        return self.rows(n, stream=0)

    def with_dominant_topic(self, share: float) -> Generator:
        """The same generator, with one topic holding ``share`` of the rows."""
        shape = replace(self.shape, name=f"{self.shape.name}, one topic holds {share:.0%}")
        shape = replace(shape, dominant=share)
        return Generator(shape, self.alpha, self.mean_norm, self.topic_share, self.seed)

    def held_out(self, n: int) -> np.ndarray:
        return self.rows(n, stream=1)

    def shifted(self, n: int, shift: float = 0.2) -> np.ndarray:
        # ``shift`` is on the unit scale: rows are about sqrt(1 + m^2) long before normalising.
        return self.rows(n, stream=2, shift=shift * float(np.sqrt(1.0 + self.mean_norm**2)))


def _scale(d: int, alpha: float) -> np.ndarray:
    scale = np.sqrt((np.arange(1, d + 1) + _OFFSET) ** -alpha)
    return scale / np.sqrt((scale**2).sum())  # unit total variance before normalising


def _participation(d: int, alpha: float) -> float:
    eigen = _scale(d, alpha) ** 2
    return float(eigen.sum() ** 2 / (eigen**2).sum())


def neighbourhood(rows: np.ndarray, seed: int = 0) -> float:
    """The median, over sampled rows, of the mean z-score of their 10 nearest other rows."""
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(rows), min(len(rows), _NEIGHBOURHOOD_QUERIES), replace=False)
    scores = rows[picked].astype(np.float64) @ rows.T.astype(np.float64)
    scores[np.arange(len(picked)), picked] = np.nan
    mean, spread = np.nanmean(scores, axis=1), np.nanstd(scores, axis=1)
    top = -np.sort(-np.nan_to_num(scores, nan=-np.inf), axis=1)[:, :10].mean(axis=1)
    return float(np.median((top - mean) / spread))


def stats(rows: np.ndarray, seed: int = 0) -> dict[str, float]:
    """d, n, mean pairwise cosine, participation ratio and top-10/top-50 variance shares."""
    rng = np.random.default_rng(seed)
    sample = rows[rng.choice(len(rows), min(len(rows), _SAMPLE), replace=False)].astype(np.float64)
    gram = sample @ sample.T
    m = len(sample)
    mean_cosine = (gram.sum() - np.trace(gram)) / (m * (m - 1))
    eigen = np.sort(np.linalg.eigvalsh(np.cov(sample.T)))[::-1]
    return {
        "n": float(len(rows)),
        "d": float(rows.shape[1]),
        "mean cosine": float(mean_cosine),
        "participation": float(eigen.sum() ** 2 / (eigen**2).sum()),
        "top 10": float(eigen[:10].sum() / eigen.sum()),
        "top 50": float(eigen[:50].sum() / eigen.sum()),
    }


def _alpha(d: int, participation: float) -> float:
    low, high = 0.0, 8.0
    for _ in range(50):
        alpha = (low + high) / 2
        low, high = (alpha, high) if _participation(d, alpha) > participation else (low, alpha)
    return alpha


@lru_cache(maxsize=8)
def fit(shape: Shape, seed: int = 0) -> Generator:
    """The generator whose rows have ``shape``'s participation ratio, mean cosine and
    neighbourhood.

    The first two have closed forms before normalisation (the spectrum's ratio; ``m^2 / (m^2 +
    1)`` for a unit total variance); normalising lowers the ratio a little, which corrections
    on a sample make up. The topic share is found by bisection on the neighbourhood of a
    sample as large as the set it copies. Deterministic: the same shape gives the same rows.
    """
    mean_norm = float(np.sqrt(shape.mean_cosine / (1 - shape.mean_cosine)))
    target, share = shape.participation, 0.5
    for _ in range(2):  # the topic share and the spectrum interact a little
        low, high = 0.0, 0.95
        alpha = _alpha(shape.dim, target)
        for _ in range(12):
            share = (low + high) / 2
            sample = Generator(shape, alpha, mean_norm, share, seed).rows(_NEIGHBOURHOOD_ROWS, 8)
            low, high = (
                (share, high) if neighbourhood(sample) < shape.neighbourhood else (low, share)
            )
        for _ in range(3):  # normalising lowers the ratio a little: aim higher by what it lost
            alpha = _alpha(shape.dim, target)
            sample = Generator(shape, alpha, mean_norm, share, seed).rows(_SAMPLE, 9)
            target *= shape.participation / stats(sample)["participation"]
    return Generator(shape, _alpha(shape.dim, target), mean_norm, share, seed)


def real_sets() -> dict[str, np.ndarray]:
    found = {}
    for name in REAL_SETS:
        path = DATASETS / name / EMBEDDINGS / "corpus.npy"
        if path.is_file():
            found[name] = np.load(path, allow_pickle=False)
    return found


def table(sets: dict[str, np.ndarray]) -> str:
    lines = [
        "| set | d | n | mean cosine | participation ratio | top 10 axes | top 50 axes "
        "| 10-NN z (n = 2225) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rng = np.random.default_rng(0)
    for name, rows in sets.items():
        s = stats(rows)
        small = rows[rng.choice(len(rows), min(len(rows), _NEIGHBOURHOOD_ROWS), replace=False)]
        lines.append(
            f"| {name} | {s['d']:.0f} | {s['n']:.0f} | {s['mean cosine']:.3f} | "
            f"{s['participation']:.1f} | {s['top 10']:.2f} | {s['top 50']:.2f} | "
            f"{neighbourhood(small):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    sets = real_sets()
    for shape in (MINILM, OPENAI):
        generator = fit(shape)
        print(
            f"{shape.name}: alpha={generator.alpha:.3f}, mean length={generator.mean_norm:.3f}, "
            f"topic share={generator.topic_share:.3f}"
        )
        sets[f"{shape.name} corpus"] = generator.corpus(20_000)
        sets[f"{shape.name} held-out queries"] = generator.held_out(2_000)
        sets[f"{shape.name} shifted queries"] = generator.shifted(2_000)
    print(table(sets))


if __name__ == "__main__":
    main()
