"""The exact exemplar-SVM solver: cutting planes over a working set, Newton-CG inside.

The problem is liblinear's L2-regularised squared hinge with a regularised bias::

    min_{w, b}  1/2 (|w|^2 + b^2) + sum_i k_i * max(0, 1 - y_i (w @ x_i + b))^2

Only the rows with ``y_i (w @ x_i + b) < 1`` (the support vectors) shape the optimum, and for
an exemplar SVM they are a small part of the corpus. So the solver

1. ranks the corpus once by a seed direction (the whitened or plain mean difference between
   positives and negatives, i.e. the exemplar LDA) and fits scale and bias along it exactly;
2. solves the problem restricted to a working set of the rows most likely to be support
   vectors, plus one aggregate row (the mean of all other rows, weighted by their count) that
   keeps the restricted solution from drifting;
3. scores the whole corpus with the result: if no row outside the working set violates the
   margin, the aggregate is inactive too, so the restricted optimum is the global one (the KKT
   conditions hold for every row) and those scores are the final ones; otherwise the violators
   join the working set and the solve restarts warm.

The restricted problem is solved by Newton's method with conjugate gradients and an exact line
search (the objective is piecewise quadratic). The corpus is read in float32 and never copied
whole: the working set is gathered only while it is at most a quarter of the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

F32 = np.float32
F64 = np.float64

# Newton stops when the gradient has shrunk this much; float32 products cannot go much further.
_GRADIENT_TOL = 1e-6
# While the working set is still growing, a rough solution finds the violators as well.
_LOOSE_TOL = 1e-2
_MAX_NEWTON = 200
_MAX_ROUNDS = 30
# A row counts as a violator a little before the margin, so float32 rounding cannot hide one.
_VIOLATION_SLACK = 1e-4
# Gather rows only while they stay within this fraction of the corpus (the memory budget).
_GATHER_FRACTION = 0.18
# Rows the fit along the seed direction looks at (the top of the seed ranking).
_SEED_FIT_ROWS = 8192


@dataclass
class SolveInfo:
    """How a solve went: for benchmarks and tests."""

    rounds: int = 0
    newton_steps: int = 0
    cg_steps: int = 0
    passes: int = 0
    working_set: int = 0
    support_vectors: int = 0


@dataclass
class _Rows:
    """Rows of the restricted problem: a float32 block of corpus rows and a float64 block."""

    big: NDArray[np.float32]  # corpus rows (gathered, or the whole corpus with zero costs)
    gathered: bool  # big is a copy (counts against the memory budget)
    big_y: NDArray[F64]
    big_k: NDArray[F64]
    small: NDArray[F64]  # positives, extra negatives and the aggregate row
    small_y: NDArray[F64]
    small_k: NDArray[F64]

    def outputs(self, w: NDArray[F64], b: float) -> tuple[NDArray[F64], NDArray[F64]]:
        big = (self.big @ w.astype(F32)).astype(F64) + b
        return big, self.small @ w + b

    def back(self, r_big: NDArray[F64], r_small: NDArray[F64]) -> NDArray[F64]:
        """Sum of the rows weighted by ``r`` (the transpose product)."""
        back: NDArray[F64] = (self.big.T @ r_big.astype(F32)).astype(F64) + self.small.T @ r_small
        return back


def solve(
    positives: NDArray[F64],
    corpus: NDArray[np.float32],
    corpus_weights: NDArray[F64],
    extra: NDArray[F64],
    extra_weights: NDArray[F64],
    C: float,
    *,
    stats: CorpusStats | None = None,
    positive_weights: NDArray[F64] | None = None,
    center: NDArray[F64] | None = None,
) -> tuple[NDArray[F64], float, NDArray[F64], SolveInfo]:
    """Exact solution for positives against weighted corpus rows and extra negatives.

    Parameters
    ----------
    positives : (p, d) float64
    corpus : (n, d) float32, C-contiguous; read, never written or copied whole
    corpus_weights : (n,)
        Weight of each corpus row as a negative; 0 leaves the row out of the problem.
    extra, extra_weights : (e, d) float64 and (e,)
        Negatives that are not corpus rows.
    C : float
    stats : CorpusStats, optional
        The corpus's statistics, kept by an index: with them the seed direction is whitened
        (the exemplar LDA), which finds the support vectors in fewer rounds.
    positive_weights : (p,), optional
        Relative weight of each positive (all 1 by default).
    center : (d,), optional
        Regularise ``w`` towards ``center`` instead of 0: the objective's first term becomes
        ``1/2 (|w - center|^2 + b^2)`` (a prior such as the text query's direction).

    Returns
    -------
    coef, intercept, scores of every corpus row (float64), and how the solve went.
    """
    info = SolveInfo()
    n = len(corpus)
    p = len(positives)
    if positive_weights is None:
        positive_weights = np.ones(p)
    if center is None:
        center = np.zeros(corpus.shape[1])
    weight_total = float(corpus_weights.sum() + extra_weights.sum())
    positive_total = float(positive_weights.sum())
    total = positive_total + weight_total
    unit_cost = C * total / (2.0 * weight_total)
    positive_cost = C * total / (2.0 * positive_total) * positive_weights
    corpus_sum = corpus.sum(axis=0, dtype=F64) if stats is None else stats.total
    excluded = corpus_weights == 0
    special = ~excluded & (corpus_weights != 1)  # named negatives: always in the working set
    excluded_sum = corpus[excluded].sum(axis=0, dtype=F64)  # rows named as positives: few

    negative_mean = (
        corpus_sum
        - excluded_sum
        + (corpus_weights[special] - 1) @ corpus[special]
        + extra_weights @ extra
    ) / weight_total
    seed = positive_weights @ positives / positive_total - negative_mean
    if stats is not None:
        seed = stats.whiten(corpus, seed)
    # One pass scores the corpus along the seed (and the center, when there is one).
    has_center = bool(center.any())
    if has_center:
        both = (corpus @ np.stack([seed, center], axis=1).astype(F32)).astype(F64)
        seed_scores, offsets = both[:, 0], both[:, 1]
    else:
        seed_scores, offsets = (corpus @ seed.astype(F32)).astype(F64), np.zeros(n)
    info.passes += 1
    # The fit along the seed only seeds the working set. Without a center, the rows that can
    # be active lie at the top of the seed ranking, so it looks at those only.
    fit_rows = np.flatnonzero(~excluded)
    if not has_center and len(fit_rows) > _SEED_FIT_ROWS:
        top = np.argpartition(-seed_scores[fit_rows], _SEED_FIT_ROWS - 1)[:_SEED_FIT_ROWS]
        fit_rows = fit_rows[top]
    scale, bias = _fit_along(
        float(seed @ seed),
        np.concatenate([positives @ seed, seed_scores[fit_rows], extra @ seed]),
        np.concatenate([positives @ center, offsets[fit_rows], extra @ center]),
        np.concatenate([np.ones(p), -np.ones(len(fit_rows) + len(extra))]),
        np.concatenate(
            [positive_cost, unit_cost * corpus_weights[fit_rows], unit_cost * extra_weights]
        ),
    )
    # Twice the rows active along the seed direction: the support vectors are mostly among them.
    fitted = offsets + scale * seed_scores + bias
    active = int(np.count_nonzero(fitted[~excluded] > -1))
    in_set = special.copy()
    eligible = np.flatnonzero(~excluded & ~special)
    size = min(len(eligible), max(64, 2 * active))
    if size:
        ranked = fitted[eligible]
        in_set[eligible[np.argpartition(-ranked, size - 1)[:size]]] = True

    w = center + scale * seed
    b = bias
    # Solve loosely while the working set still changes; once it holds every violator, solve
    # tightly on it and verify once more.
    tolerance = _LOOSE_TOL
    reference: list[float] = []  # the first gradient norm: tolerances are relative to it
    rows: _Rows | None = None
    for info.rounds in range(1, _MAX_ROUNDS + 1):
        if rows is None:
            rows = _restricted_rows(
                positives,
                positive_cost,
                corpus,
                corpus_weights,
                unit_cost,
                in_set,
                excluded,
                corpus_sum - excluded_sum,
                extra,
                extra_weights,
            )
        w, b = _newton(rows, w, b, center, info, n, tolerance, reference)
        scores = (corpus @ w.astype(F32)).astype(F64) + b
        info.passes += 1
        violators = ~in_set & ~excluded & (scores > -1 - _VIOLATION_SLACK)
        if not violators.any():
            if tolerance == _GRADIENT_TOL:
                break
            tolerance = _GRADIENT_TOL
            continue
        if info.rounds >= _MAX_ROUNDS - 2:
            violators = ~in_set & ~excluded  # the last rounds solve the whole problem
            tolerance = _GRADIENT_TOL
        else:
            # A rough solution can put many rows over the margin that the exact one keeps
            # clear: take the worst, at most as many as the set holds, and check again.
            found = np.flatnonzero(violators)
            cap = max(int(in_set.sum()), 256)
            if len(found) > cap:
                violators[found[np.argpartition(-scores[found], cap - 1)[cap:]]] = False
        in_set |= violators
        rows = None  # free the gathered rows before the next round gathers its own
    info.working_set = int(in_set.sum())
    info.support_vectors = int(np.count_nonzero(~excluded & (scores > -1)))
    return w, float(b), scores, info


def _restricted_rows(
    positives: NDArray[F64],
    positive_cost: NDArray[F64],
    corpus: NDArray[np.float32],
    corpus_weights: NDArray[F64],
    unit_cost: float,
    in_set: NDArray[np.bool_],
    excluded: NDArray[np.bool_],
    eligible_sum: NDArray[F64],
    extra: NDArray[F64],
    extra_weights: NDArray[F64],
) -> _Rows:
    n = len(corpus)
    members = np.flatnonzero(in_set)
    gathered = len(members) <= _GATHER_FRACTION * n
    if gathered:
        big = corpus[members]
        big_k = unit_cost * corpus_weights[members]
        inside_sum = big.sum(axis=0, dtype=F64)
    else:  # too many to copy: use the corpus in place, rows outside the set cost nothing
        big = corpus
        big_k = np.where(in_set, unit_cost * corpus_weights, 0.0)
        inside_sum = (corpus.T @ in_set.astype(F32)).astype(F64)
    small = [positives, extra]
    small_y = [np.ones(len(positives)), -np.ones(len(extra))]
    small_k = [positive_cost, unit_cost * extra_weights]
    outside = int(np.count_nonzero(~in_set & ~excluded))
    if outside:
        small.append(((eligible_sum - inside_sum) / outside)[np.newaxis])
        small_y.append(-np.ones(1))
        small_k.append(np.full(1, unit_cost * outside))
    return _Rows(
        big=big,
        gathered=gathered,
        big_y=-np.ones(len(big)),
        big_k=big_k,
        small=np.vstack(small),
        small_y=np.concatenate(small_y),
        small_k=np.concatenate(small_k),
    )


def _newton(
    rows: _Rows,
    w: NDArray[F64],
    b: float,
    center: NDArray[F64],
    info: SolveInfo,
    n: int,
    tolerance: float,
    reference: list[float],
) -> tuple[NDArray[F64], float]:
    """Minimise the restricted objective from ``(w, b)`` until the gradient is below
    ``tolerance`` times the first gradient of the solve (kept in ``reference``)."""
    y = np.concatenate([rows.big_y, rows.small_y])
    k = np.concatenate([rows.big_k, rows.small_k])
    split = len(rows.big)
    out = np.concatenate(rows.outputs(w, b))
    for _ in range(_MAX_NEWTON):
        active = (y * out < 1) & (k > 0)
        r = np.where(active, k * (out - y), 0.0)
        grad_w = w - center + 2 * rows.back(r[:split], r[split:])
        grad_b = b + 2 * float(r.sum())
        norm = float(np.sqrt(grad_w @ grad_w + grad_b * grad_b))
        if not reference:
            reference.append(max(norm, np.finfo(F64).tiny))
        first = reference[0]
        if norm <= tolerance * first:
            break
        step_w, step_b = _newton_direction(rows, active, k, grad_w, grad_b, norm / first, info, n)
        delta = np.concatenate(rows.outputs(step_w, 0.0)) + step_b
        slope0 = float((w - center) @ step_w + b * step_b)
        t = _line_search(out, delta, y, k, slope0, float(step_w @ step_w + step_b**2))
        w = w + t * step_w
        b = b + t * step_b
        out = out + t * delta
        info.newton_steps += 1
        if abs(t) * np.sqrt(step_w @ step_w + step_b**2) <= 1e-7 * np.sqrt(w @ w + b * b):
            break
    return w, b


def _newton_direction(
    rows: _Rows,
    active: NDArray[np.bool_],
    k: NDArray[F64],
    grad_w: NDArray[F64],
    grad_b: float,
    relative: float,
    info: SolveInfo,
    n: int,
) -> tuple[NDArray[F64], float]:
    """Solve ``H p = -g`` by conjugate gradients, ``H = I + 2 sum_active k_i x_i x_i^T``."""
    split = len(rows.big)
    big_active = active[:split]
    count = int(big_active.sum())
    budget = _GATHER_FRACTION * n - (split if rows.gathered else 0)
    if count <= budget and count < split:
        block = rows.big[big_active]
        block_k = k[:split][big_active]
    else:
        block = rows.big
        block_k = np.where(big_active, k[:split], 0.0)
    small = rows.small
    small_k = np.where(active[split:], k[split:], 0.0)

    def hessian(vw: NDArray[F64], vb: float) -> tuple[NDArray[F64], float]:
        big_t = block_k * ((block @ vw.astype(F32)).astype(F64) + vb)
        small_t = small_k * (small @ vw + vb)
        back = (block.T @ big_t.astype(F32)).astype(F64) + small.T @ small_t
        return vw + 2 * back, vb + 2 * float(big_t.sum() + small_t.sum())

    # Inexact Newton: solve loosely far from the optimum, tightly near it.
    target = min(0.5, np.sqrt(relative)) * np.sqrt(grad_w @ grad_w + grad_b**2)
    pw = np.zeros_like(grad_w)
    pb = 0.0
    rw, rb = -grad_w, -grad_b
    dw, db = rw.copy(), rb
    rr = rw @ rw + rb * rb
    for _ in range(2 * (len(grad_w) + 1)):
        hw, hb = hessian(dw, db)
        info.cg_steps += 1
        alpha = rr / (dw @ hw + db * hb)
        pw += alpha * dw
        pb += alpha * db
        rw -= alpha * hw
        rb -= alpha * hb
        rr_next = rw @ rw + rb * rb
        if np.sqrt(rr_next) <= target:
            break
        dw = rw + (rr_next / rr) * dw
        db = rb + (rr_next / rr) * db
        rr = rr_next
    return pw, float(pb)


def _line_search(
    out: NDArray[F64],
    delta: NDArray[F64],
    y: NDArray[F64],
    k: NDArray[F64],
    wp: float,
    pp: float,
) -> float:
    """Exact minimiser of the piecewise-quadratic objective along the step.

    The derivative is increasing; it is negative at 0 (a descent direction), so the root is
    bracketed and found by Newton steps kept inside the bracket (bisection when they leave it).
    """

    def slope(t: float) -> tuple[float, float]:
        moved = out + t * delta
        act = (y * moved < 1) & (k > 0)
        first = wp + t * pp + 2 * float(np.sum(k[act] * (moved[act] - y[act]) * delta[act]))
        second = pp + 2 * float(np.sum(k[act] * delta[act] ** 2))
        return first, second

    low, high = 0.0, 1.0
    value, curvature = slope(high)
    while value < 0:
        low, high = high, 2 * high
        value, curvature = slope(high)
    t = high
    for _ in range(60):
        candidate = t - value / curvature
        t = candidate if low < candidate < high else (low + high) / 2
        value, curvature = slope(t)
        if abs(value) <= 1e-12 * (abs(wp) + pp * abs(t)) or high - low <= 1e-12 * high:
            break
        if value < 0:
            low = t
        else:
            high = t
    return t


def _fit_along(
    norm2: float,
    scores: NDArray[F64],
    offsets: NDArray[F64],
    y: NDArray[F64],
    k: NDArray[F64],
) -> tuple[float, float]:
    """Exact best ``(scale, bias)`` for ``w = center + scale * seed``: a 2-parameter problem.

    ``scores`` are the rows' products with the seed, ``offsets`` with the center.
    """
    a = b = 0.0
    if norm2 == 0:
        return a, b
    for _ in range(100):
        out = offsets + a * scores + b
        act = y * out < 1
        r = k[act] * (out[act] - y[act])
        s = scores[act]
        ka = k[act]
        grad = np.array([a * norm2 + 2 * r @ s, b + 2 * r.sum()])
        hess = np.array([[norm2 + 2 * ka @ (s * s), 2 * ka @ s], [2 * ka @ s, 1 + 2 * ka.sum()]])
        step = np.linalg.solve(hess, grad)
        a, b = a - float(step[0]), b - float(step[1])
        if np.abs(step).max() <= 1e-12 * (1 + abs(a) + abs(b)):
            break
    return a, b


def as_corpus(array: NDArray[Any]) -> NDArray[np.float32]:
    """The float32, C-contiguous matrix the solver reads (a copy only when needed)."""
    return np.ascontiguousarray(array, dtype=F32)


# Ridge added to the corpus covariance before whitening, for unit-length rows (trace ~ 1): it
# keeps the seed direction stable when the corpus is small or lies in a subspace.
_WHITENING_RIDGE = 1e-2


class CorpusStats:
    """Per-index statistics the solver seeds with: the column sum and the second moment.

    The second moment ``X^T X`` (d x d) is computed on first use, updated when rows are added,
    and gives the whitening (exemplar-LDA) seed ``(cov + ridge I)^-1 (mean_pos - mean_neg)``.
    """

    def __init__(self, total: NDArray[F64], count: int, gram: NDArray[F64] | None = None) -> None:
        self.total = total
        self.count = count
        self.gram = gram
        self.seconds = 0.0  # time spent computing the second moment
        self._inverse: NDArray[F64] | None = None

    @classmethod
    def of(cls, corpus: NDArray[np.float32]) -> CorpusStats:
        return cls(corpus.sum(axis=0, dtype=F64), len(corpus))

    def extended(self, corpus: NDArray[np.float32], new: NDArray[np.float32]) -> CorpusStats:
        """Statistics of ``corpus`` (the old rows) plus ``new``, updated, not recomputed."""
        gram = None
        if self.gram is not None:
            new64 = new.astype(F64)
            gram = self.gram + new64.T @ new64
        stats = CorpusStats(self.total + new.sum(axis=0, dtype=F64), self.count + len(new), gram)
        stats.seconds = self.seconds
        return stats

    def second_moment(self, corpus: NDArray[np.float32]) -> NDArray[F64]:
        if self.gram is None:
            import time

            start = time.perf_counter()
            gram = np.zeros((corpus.shape[1], corpus.shape[1]))
            for first in range(0, len(corpus), 4096):  # float64 accuracy, bounded memory
                block = corpus[first : first + 4096].astype(F64)
                gram += block.T @ block
            self.gram = gram
            self.seconds += time.perf_counter() - start
        return self.gram

    def whitener(self, corpus: NDArray[np.float32]) -> NDArray[F64]:
        """Inverse of the ridge-regularised covariance (computed once; well conditioned)."""
        if self._inverse is None:
            mean = self.total / self.count
            cov = self.second_moment(corpus) / self.count - np.outer(mean, mean)
            cov[np.diag_indices_from(cov)] += _WHITENING_RIDGE
            self._inverse = np.asarray(np.linalg.inv(cov), dtype=F64)
        return self._inverse

    def whiten(self, corpus: NDArray[np.float32], direction: NDArray[F64]) -> NDArray[F64]:
        whitened: NDArray[F64] = self.whitener(corpus) @ direction
        return whitened
