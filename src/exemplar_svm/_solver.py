"""The exact exemplar-SVM solver: cutting planes over a working set, subspace Newton inside.

The problem is liblinear's L2-regularised squared hinge with a regularised bias::

    min_{w, b}  1/2 (|w|^2 + b^2) + sum_i k_i * max(0, 1 - y_i (w @ x_i + b))^2

Only the rows with ``y_i (w @ x_i + b) < 1`` (the support vectors) shape the optimum. So the
solver

1. scores the corpus once along a seed direction (the whitened or plain mean difference between
   positives and negatives, i.e. the exemplar LDA) and solves the problem exactly over the seed,
   the bias and the corpus's leading principal axes, whose outputs an index keeps precomputed
   (so this needs no further pass), on the seed's top rows: how many rows are active there
   sizes the working set;
2. solves the problem restricted to a working set of the rows most likely to be support
   vectors (the top of the seed's ranking, as many as fit the memory budget), plus one aggregate row
   (the mean of all other rows, weighted by their count) that keeps the restricted solution
   from drifting. When the likely support vectors would not fit the budget (at a small C a
   third of the corpus can be support vectors) the restricted problem is the whole problem,
   solved on the corpus in place;
3. scores the whole corpus with the result: if no row outside the working set violates the
   margin, the aggregate is inactive too, so the restricted optimum is the global one (the KKT
   conditions hold for every row) and those scores are the final ones; otherwise the violators
   join the working set (members well inside the margin making room when the budget is full;
   this cannot make the result wrong, as every round verifies all rows) and the solve restarts
   warm. The first round is solved roughly (the next one starts from it and solves exactly).

A caller that wants only the top k candidates (a search) lets later verifications skip the pass:
the move since the last pass splits into a part along directions whose outputs on every row are
known (that solution, the seed, the principal axes) and a rest, which changes a row's score by
at most its length times the row's length outside the principal axes. Only the rows that bound
leaves near the margin or near the k-th best score are scored, gathered; the others are proven
to be neither violators nor hits, and score ``-inf``.

The restricted problem is solved over a growing subspace. Every direction in it comes with its
outputs on every row, so the exact minimum over the whole subspace is a small (m-dimensional)
piecewise-quadratic problem that needs no pass over the rows. Then one pass computes the exact
gradient there, which is the next direction, and a second pass its outputs. On a quadratic this
is conjugate gradients; here it also absorbs every change of the active set (Newton-CG starts
over after each one), so it needs about as many passes as Newton-CG needs for its first Newton
step. The subspace starts with the seed, the bias and a few leading directions of the corpus
(the top principal axes, whose outputs an index keeps precomputed): they hold the few stiff
directions of the Hessian (the rows' shared direction and their clusters), so that the
gradient steps only have to deal with its well-conditioned bulk.

The stopping test is on the exact gradient ``g``: since the Hessian is at least the identity,
the solution is within ``|g|`` of the optimum, and every score within ``|g| |[x, 1]|``. The
solver stops once that is below ``SCORE_TOLERANCE`` for a row of typical length.

The corpus is read in float32 and never copied whole: the working set is gathered only while it
fits the memory budget, and a float32 sum of many rows (the gradient) is taken with centred
weights, whose partial sums stay small. Float32 products see float32 numbers exactly: the
directions are rounded to float32 before their outputs are computed, and a point's outputs are
exact sums of those (rounding the point itself would shift every output along the rows' shared
direction, an error the Hessian magnifies a thousandfold).
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from exemplar_svm._blas import blas_threads

F32 = np.float32
F64 = np.float64

# Scores end within about this much of the optimum's (see the module's docstring).
SCORE_TOLERANCE = 1e-6
_MAX_NEWTON = 100
_MAX_ROUNDS = 30
# Gradient directions one restricted solve may add (far more than it takes), and how many the
# subspace keeps at once (the oldest make way: their outputs are n numbers each).
_MAX_DIRECTIONS = 60
_GRADIENT_DIRECTIONS = 4
# The solver stops once the gradient has stayed within this many tolerances for three directions:
# float32 sums put its floor there (a converging solve would have gone below the tolerance).
_NEAR = 2.0
# A first round that a verification pass will follow anyway is solved to this tolerance only:
# the next round starts from its solution and solves exactly.
_ROUGH = 1e-3
# A row counts as a violator a little before the margin, so float32 rounding cannot hide one.
_VIOLATION_SLACK = 1e-4
# Peak extra memory of a solve stays within a quarter of the corpus matrix: the float64 arrays
# over every corpus row (about this many at once) and the gathered working set take this share,
# temporaries the rest.
MEMORY_SHARE = 0.22
_ROW_ARRAYS = 12
# Up to this many corpus entries a pass costs next to nothing, so it runs in float64 (on a copy):
# a degenerate problem (all rows alike, w = 0 optimal) is then solved to float64 accuracy, and a
# batch's products equal a single search's. On larger corpora float32 products hold the scores
# to about 1e-7.
_WIDE_ENTRIES = 1 << 16
# Rows the starting fit looks at (the top of the seed ranking, where the support vectors are):
# with twice as many, the working sets picked and the rounds needed were the same on clustered
# data (up to 200k rows) and on the shared datasets.
_SEED_FIT_ROWS = 4096
# The first working set: the seed's top rows, half again as many as the starting fit finds
# active, and at least this many. Its solve costs about in proportion to its rows, and the
# support vectors it misses join at the verification: at 100k x 384, with C from 0.01 to 1,
# 1.5 times was faster than 1 or 2.5 times.
_SET_FACTOR = 1.5
_SET_FLOOR = 1024
# Rows it samples from the rest of a large corpus, to stand for them.
_REST_SAMPLE = 2048
# Float64 products with the float32 corpus go in blocks of 1/32 of it (a block's float64 copy is
# temporary).
_BLOCK_SHARE = 32
# A pass that sums rows in place reads only the rows inside the margin, a block of this many at
# a time, when they are fewer than this share of the corpus: gathering a row costs about half
# again what streaming it does on one thread, and three times as much when BLAS streams on two.
_SPARSE_BACK = (0.5, 0.25)  # on one BLAS thread, on more
_SPARSE_BLOCK = 128
# Newton steps of the starting fit: it only ranks the rows to pick the working set, and after
# this many its ranking no longer changes on clustered or real data (it converges in about 6).
_FIT_STEPS = 4
# Principal axes of the corpus that start every subspace (with their outputs precomputed): more
# than 8 saved no gradient step on clustered data.
_AXES = 8
# Directions of several positives that join the axes (each keeps n outputs, 8 bytes a row, and
# its copies in the subspace): the leading axes of their span beyond this many.
_POSITIVE_AXES = 4
# From this many vectors on, one matrix product over the corpus beats a matrix-vector product
# each (OpenBLAS's sgemm is slow for 2 or 3 columns).
_SHARED_PASS = 4


@dataclass
class SolveInfo:
    """How a solve went: for benchmarks and tests."""

    rounds: int = 0
    directions: int = 0  # gradient directions, one pass for their outputs each
    newton_steps: int = 0  # steps of the small subspace problems (no pass over the rows)
    passes: int = 0  # passes over the whole corpus
    working_set: int = 0
    support_vectors: int = 0
    bounded: int = 0  # rows that verifications by a bound had to score
    gradients: list[float] = field(default_factory=list)  # each exact gradient's norm, in order


# coef, intercept, every corpus row's score, and how the solve went.
Solution = tuple[NDArray[F64], float, NDArray[F64], SolveInfo]


@dataclass
class _Rows:
    """Rows of the restricted problem: corpus rows (``big``), then float64 ones (``small``).

    Vectors acting on the rows are augmented: their last entry pairs with the constant 1 (the
    bias).
    """

    big: NDArray[np.float32]  # gathered, or the whole corpus in place
    whole: bool  # big is the corpus itself (a pass over it is a corpus pass)
    wide: bool  # compute in float64 even though big is float32
    big_sum: NDArray[F64]  # the big rows' sum
    small: NDArray[F64]  # positives, extra negatives and the aggregate row
    y: NDArray[F64]  # labels of the big rows, then the small ones
    k: NDArray[F64]  # their costs (0: not part of the problem)
    chunk: int  # rows per block when the small problems copy their outputs

    def forward(self, v: NDArray[F64], info: SolveInfo) -> NDArray[F64]:
        """Outputs of ``v`` (float32 numbers but for the bias) on every row."""
        info.passes += self.whole
        d = self.big.shape[1]
        if self.wide:
            big = _wide_product(self.big, v[np.newaxis, :d])[:, 0]
        else:
            big = (self.big @ v[:d].astype(F32)).astype(F64)
        return np.concatenate([big, self.small @ v[:d]]) + v[d]

    def back(self, r: NDArray[F64], info: SolveInfo) -> NDArray[F64]:
        """``sum_i r_i [x_i, 1]``."""
        info.passes += self.whole
        split = len(self.big)
        back = np.empty(self.big.shape[1] + 1)
        active = np.flatnonzero(r[:split]) if self.whole and not self.wide else None
        if self.wide:
            back[:-1] = r[:split] @ self.big.astype(F64)
        elif active is not None and len(active) < _sparse_share() * split:
            # In place, only the rows inside the margin count: a small block of them at a time,
            # gathered, summed in float32 and added up in float64 (as accurate as the centred
            # sum below, and the other rows are never read).
            back[:-1] = 0.0
            block = max(8, min(_SPARSE_BLOCK, split // 64))  # a copy of 1/64 of the corpus at most
            for first in range(0, len(active), block):
                rows = active[first : first + block]
                back[:-1] += r[rows].astype(F32) @ np.take(self.big, rows, axis=0)
        else:
            # A float32 sum of many rows errs by about 1e-7 of its partial sums, which the rows'
            # shared direction makes large; with the weights centred (and their mean times the
            # rows' float64 sum added back) the partial sums stay small.
            mean = float(r[:split].mean())
            back[:-1] = ((r[:split] - mean).astype(F32) @ self.big).astype(F64)
            back[:-1] += mean * self.big_sum
        back[:-1] += r[split:] @ self.small
        back[-1] = r.sum()
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
    tolerance: float = SCORE_TOLERANCE,
    memory_share: float = MEMORY_SHARE,
    top: tuple[int, NDArray[np.bool_]] | None = None,
) -> Solution:
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
        (the exemplar LDA), which finds the support vectors in fewer rounds, and the subspace
        starts with the corpus's principal axes, which saves passes.
    positive_weights : (p,), optional
        Relative weight of each positive (all 1 by default).
    center : (d,), optional
        Regularise ``w`` towards ``center`` instead of 0: the objective's first term becomes
        ``1/2 (|w - center|^2 + b^2)`` (a prior such as the text query's direction).
    tolerance : float, default=1e-6
        Every score ends within about this much of the optimum's. A caller whose problem only
        approximates another (a sample of a collection) may ask for less.
    memory_share : float, default=0.22
        The share of the corpus matrix the working set and the arrays over every row may take
        (solves side by side share a quarter of it); the whole problem in place needs none, so
        over a small share the solve takes more passes, never more memory.
    top : (k, candidates), optional
        Only the ranking of the best ``k`` rows among ``candidates`` (a mask over the corpus) is
        wanted: then a verification after the first may bound the rows' scores instead of
        computing them (see :func:`_bounded_scores`). The solution is as exact as without it;
        the scores are exact for every row that could rank among the top ``k`` candidates and
        for every support vector, and ``-inf`` for the rows proven to rank below both.

    Returns
    -------
    coef, intercept, scores of every corpus row (float64), and how the solve went.
    """
    return solve_many([dict(locals())])[0]  # every argument, by name


def solve_many(problems: Sequence[Mapping[str, Any]]) -> list[Solution]:
    """:func:`solve` for each of several problems over one corpus (each a mapping of its
    arguments): their passes over the corpus that do not depend on a solve's inner steps (the
    first one, and each round's verification) are shared, one matrix product for all."""
    if not problems:
        return []
    corpus = problems[0]["corpus"]
    if any(problem["corpus"] is not corpus for problem in problems):
        raise ValueError("solve_many takes problems over one corpus matrix")
    solvers = [_solving(**problem) for problem in problems]
    solutions: list[Solution | None] = [None] * len(problems)
    wanted = {number: next(solver) for number, solver in enumerate(solvers)}
    while wanted:
        numbers = list(wanted)
        products = corpus_products(corpus, np.vstack([wanted[number] for number in numbers]))
        ends = np.cumsum([len(wanted[number]) for number in numbers])
        # Each solver takes its products out of a box: it then holds the only reference, and
        # can free them before its last round.
        boxes = [
            [np.ascontiguousarray(products[:, end - len(wanted[number]) : end])]
            for number, end in zip(numbers, ends, strict=True)
        ]
        del products
        for number, box in zip(numbers, boxes, strict=True):
            try:
                wanted[number] = solvers[number].send(box)
            except StopIteration as done:
                solutions[number] = done.value
                del wanted[number]
    return [solution for solution in solutions if solution is not None]


def _solving(
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
    tolerance: float = SCORE_TOLERANCE,
    memory_share: float = MEMORY_SHARE,
    top: tuple[int, NDArray[np.bool_]] | None = None,
) -> Generator[NDArray[F64], list[NDArray[F64]], Solution]:
    """:func:`solve`, yielding the vectors (m, d) whose products with the corpus (n, m) it
    needs sent back, in a one-element list (its first pass and every verification)."""
    info = SolveInfo()
    n, d = corpus.shape
    p = len(positives)
    if positive_weights is None:
        positive_weights = np.ones(p)
    if center is None:
        center = np.zeros(d)
    if stats is not None and stats.count != n:
        stats = None  # not this corpus's
    weight_total = float(corpus_weights.sum() + extra_weights.sum())
    positive_total = float(positive_weights.sum())
    total = positive_total + weight_total
    unit_cost = C * total / (2.0 * weight_total)
    positive_cost = C * total / (2.0 * positive_total) * positive_weights
    corpus_sum = corpus.sum(axis=0, dtype=F64) if stats is None else stats.total
    excluded = corpus_weights == 0
    special = ~excluded & (corpus_weights != 1)  # named negatives: always in the working set
    excluded_sum = corpus[excluded].sum(axis=0, dtype=F64)  # rows named as positives: few
    # One pass scores the corpus along the seed, the center (when there is one) and each of
    # several positives.
    first = first_directions(
        positives,
        corpus,
        corpus_weights,
        extra,
        extra_weights,
        stats,
        positive_weights,
        center,
        corpus_sum=corpus_sum,
    )
    seed = first[0]
    has_center = bool(center.any())
    products = (yield first).pop()
    info.passes += 1
    seed_scores = products[:, 0]
    offsets = products[:, 1] if has_center else np.zeros(n)
    # The starting fit only sizes (and with a center, picks) the working set: every round
    # verifies all rows. Without a center, the rows it can find active lie near the top of the
    # seed ranking, so on a large corpus it looks at those only.
    fit_rows = np.flatnonzero(~excluded)
    eligible = np.flatnonzero(~excluded & ~special)
    every_row = len(fit_rows)
    if not has_center and len(fit_rows) > _SEED_FIT_ROWS:
        highest = np.argpartition(-seed_scores[fit_rows], _SEED_FIT_ROWS - 1)[:_SEED_FIT_ROWS]
        fit_rows = fit_rows[np.sort(highest)]  # in order: the fit gathers their outputs
    # The best solution over the seed, the bias and the corpus's principal axes: their outputs
    # on every row are known, so this small problem needs no pass.
    # Each axis's outputs stay in the array that holds them (the index's, the first pass's): a
    # copy of them all would cost a twentieth of the corpus matrix.
    axes, projections = np.zeros((d, 0)), []
    if stats is not None:
        axes, projection = stats.axes(corpus)
        projections.append(projection)
    if p > 1:  # the positives are stiff directions too (their cost is large): they join the axes
        axes = np.column_stack([axes, first[1 + has_center :].T])
        projections.append(products[:, 1 + has_center :])
    axis_outputs = [block[:, j] for block in projections for j in range(block.shape[1])]
    # The rows the fit leaves out are represented by a fixed sample of them, weighted up to
    # stand for all of them: so the fit's scores are sensible on every row.
    costs = unit_cost * corpus_weights[fit_rows]
    top_rows, scale = len(fit_rows), 1.0
    if len(fit_rows) < every_row:
        left = ~excluded
        left[fit_rows] = False
        rest = np.flatnonzero(left)
        # Evenly spaced: a corpus stored topic by topic is sampled across all its topics.
        sample = rest[np.linspace(0, len(rest) - 1, min(_REST_SAMPLE, len(rest))).astype(np.intp)]
        rest_weight = corpus_weights.sum() - corpus_weights[fit_rows].sum()
        scale = float(rest_weight / corpus_weights[sample].sum())
        fit_rows = np.concatenate([fit_rows, sample])
        costs = np.concatenate([costs, scale * unit_cost * corpus_weights[sample]])
    fit = _fit_start(
        seed,
        axes,
        positives,
        extra,
        center,
        seed_scores,
        axis_outputs,
        offsets,
        fit_rows,
        np.concatenate([positive_cost, costs, unit_cost * extra_weights]),
        _chunk_rows(corpus),
        info,
        every_row=has_center,
    )
    if has_center:
        # The fit looked at every row: its scores rank them, and its solution starts the solve.
        w, scores = fit
        rank = scores
        active = int(np.count_nonzero(scores[eligible] > -1))
    else:
        # The fit only estimates how many rows are active (the sample standing for the rows it
        # left out). Its ranking of the rows was no better than the seed's (the support
        # vectors' worst rank in either was 10k-70k of 100k), and a solve started from the
        # center finds the fit's solution in its first subspace step anyway.
        on = fit[1] > -1
        active = int(np.count_nonzero(on[:top_rows]) + scale * np.count_nonzero(on[top_rows:]))
        w, scores, rank = np.append(center, 0.0), offsets, seed_scores
    in_set = special.copy()
    gather = _gather_limit(n, d, memory_share)
    limit = gather - int(special.sum())
    size = min(len(eligible), max(_SET_FLOOR, int(_SET_FACTOR * active)))
    if active < limit < size:  # (room for the likely support vectors, if not for twice as many)
        size = limit
    pool = eligible
    if not has_center and top_rows < every_row:  # the fit's rows are the seed's top ones
        highest = fit_rows[:top_rows]
        highest = highest[~special[highest]]
        if size <= len(highest):
            pool = highest
    if size:
        in_set[pool[np.argpartition(-rank[pool], size - 1)[:size]]] = True
    del fit, rank  # (a whole-problem round frees the first pass's products)

    # The gradient bound on the scores is for a row of the corpus's root-mean-square length.
    squares = stats.squares(corpus) if stats is not None else float(np.vdot(corpus, corpus))
    tolerance /= np.sqrt(1.0 + squares / n)
    center = np.append(center, 0.0)
    # Asked for the top k only, a verification after the first may bound each row's score by its
    # move since the last verification pass (see _bounded_scores), with the directions whose
    # outputs on every row are known.
    reference: tuple[NDArray[F64], NDArray[F64]] | None = None
    known = None
    if stats is not None and top is not None and corpus.size > _WIDE_ENTRIES:
        residuals, longest = stats.residuals(corpus)
        directions = np.column_stack([seed, axes])
        known = _Known(directions, [products[:, :1], *projections], residuals, longest)
    for info.rounds in range(1, _MAX_ROUNDS + 1):
        whole = info.rounds >= _MAX_ROUNDS - 1 or bool(in_set.sum() > gather)
        if whole:  # too many rows to gather (or too many rounds): solve the whole problem
            in_set = ~excluded
        rows, members = _restricted_rows(
            positives,
            positive_cost,
            corpus,
            corpus_weights,
            unit_cost,
            in_set,
            whole,
            corpus_sum,
            corpus_sum - excluded_sum,
            extra,
            extra_weights,
        )
        # The subspace starts with the seed, the bias and the corpus's principal axes (after the
        # first round, with the last solution too), whose outputs the corpus passes so far
        # computed.
        bias_only = np.zeros(d + 1)
        bias_only[d] = 1.0
        start = [(np.append(seed, 0.0), seed_scores[members]), (bias_only, np.ones(len(rows.big)))]
        start += [
            (np.append(axis, 0.0), out[members])
            for axis, out in zip(axes.T, axis_outputs, strict=True)
        ]
        if info.rounds > 1:
            base = scores[members] - w[d] - offsets[members]
            start.append((np.append(w[:d] - center[:d], 0.0), base))
        out = np.concatenate([scores[members], rows.small @ w[:d] + w[d]])
        if whole:  # the last round: the subspace keeps the only copy of the outputs it needs
            del products, seed_scores, offsets, projections, axis_outputs
            reference = known = None
        # (a first round with every row in its set needs no verification: it is solved exactly)
        rough = not whole and info.rounds == 1 and bool((~in_set & ~excluded).any())
        goal = max(tolerance, _ROUGH) if rough else tolerance
        w, out = _minimise(rows, w, center, start, out, goal, info)
        if whole:
            scores = out[:n]
            break
        # The verification. Float32 products see a float32 solution exactly; rounding it moves
        # the scores by about 1e-7.
        w[:d] = w[:d].astype(F32)
        bounded = None
        if reference is not None and known is not None:
            bounded = _bounded_scores(corpus, rows.big, members, in_set, w, reference, known, info)
        if bounded is None:
            scores = yield from _verification(w)
            info.passes += 1
            if known is not None:
                reference = (w.copy(), scores)
        else:
            scores, upper = bounded
        violators = ~in_set & ~excluded & (scores > -1 - _VIOLATION_SLACK)
        if not violators.any() and not rough:
            if (
                bounded is not None
                and top is not None
                and not _top_scored(corpus, scores, upper, w, top, info)
            ):
                scores = yield from _verification(w)  # too many rows could reach the top k
                info.passes += 1
            break
        # The violators of one round can be many that the next solution keeps clear: take the
        # worst, at most as many as the set holds, and check again.
        found = np.flatnonzero(violators)
        cap = max(int(in_set.sum()), 256)
        if len(found) > cap:
            violators[found[np.argpartition(-scores[found], cap - 1)[cap:]]] = False
        in_set |= violators
        # Over the memory budget, the members furthest inside the margin make room: leaving the
        # working set cannot make the result wrong (the next verification checks every row).
        excess = int(in_set.sum()) - gather
        if excess > 0:
            clear = np.flatnonzero(in_set & ~special & (scores < -1 - _VIOLATION_SLACK))
            if len(clear) >= excess:
                in_set[clear[np.argpartition(scores[clear], excess - 1)[:excess]]] = False
        del rows  # free the gathered rows before the next round gathers its own
    info.working_set = int(in_set.sum())
    info.support_vectors = int(np.count_nonzero(~excluded & (scores > -1)))
    return w[:d], float(w[d]), scores, info


def _verification(w: NDArray[F64]) -> Generator[NDArray[F64], list[NDArray[F64]], NDArray[F64]]:
    """Every row's score under ``w`` (augmented), from a pass over the corpus."""
    scores: NDArray[F64] = (yield w[np.newaxis, :-1]).pop()[:, 0] + w[-1]
    return scores


@dataclass
class _Known:
    """Directions (d, m) whose outputs on every corpus row are known (blocks of columns, in
    order), and how long each row is outside the span of some of them (an upper bound on its
    length outside their span)."""

    directions: NDArray[F64]
    outputs: list[NDArray[F64]]
    residuals: NDArray[F64]
    longest: float  # the longest row's length


def _bounded_scores(
    corpus: NDArray[np.float32],
    gathered: NDArray[np.float32],
    members: NDArray[np.intp],
    in_set: NDArray[np.bool_],
    w: NDArray[F64],
    reference: tuple[NDArray[F64], NDArray[F64]],
    known: _Known,
    info: SolveInfo,
) -> tuple[NDArray[F64], NDArray[F64]] | None:
    """Verify ``w`` (augmented) without a pass: the scores of the working set and of every row
    that could violate the margin, ``-inf`` for the others, and every row's upper bound on its
    score; None when too many rows would need scoring.

    ``reference`` is an earlier solution with every row's score. The move since then splits
    into its projection on the span of that solution and the known directions, whose outputs on
    every row give that part of each row's change exactly, and a rest orthogonal to the span,
    which changes a row's score by at most its length times the row's length outside the span.
    The bound adds the float32 products' worst rounding.
    """
    n, d = corpus.shape
    before, scores_before = reference
    basis = np.column_stack([before[:d], known.directions])
    move = w - before
    coef = np.linalg.lstsq(basis, move[:d], rcond=None)[0]
    rest = float(np.linalg.norm(move[:d] - basis @ coef))
    # A float32 product x @ v errs by at most d eps |x| |v|: on the new scores and on each of
    # the known outputs the bound is made of.
    lengths = np.linalg.norm(basis, axis=0)
    factors = np.linalg.norm(w[:d]) + abs(1 + coef[0]) * lengths[0] + np.abs(coef[1:]) @ lengths[1:]
    rounding = d * float(np.finfo(F32).eps) * known.longest * float(factors)
    upper = (1 + coef[0]) * scores_before
    upper += move[d] - coef[0] * before[d] + rounding
    first = 1
    for block in known.outputs:
        upper += block @ coef[first : first + block.shape[1]]
        first += block.shape[1]
    upper += rest * known.residuals
    need = np.flatnonzero(~in_set & (upper > -1 - _VIOLATION_SLACK))
    if len(need) > n // 4:
        return None
    scores = np.full(n, -np.inf)
    w32 = w[:d].astype(F32)
    scores[members] = (gathered @ w32).astype(F64) + w[d]
    _score_rows(corpus, scores, need, w, info)
    return scores, upper


def _score_rows(
    corpus: NDArray[np.float32],
    scores: NDArray[F64],
    rows: NDArray[np.intp],
    w: NDArray[F64],
    info: SolveInfo,
) -> None:
    """Fill in the scores of ``rows`` under ``w`` (augmented), gathering a block at a time."""
    w32 = w[:-1].astype(F32)
    block = _block_rows(len(corpus))
    for first in range(0, len(rows), block):
        part = rows[first : first + block]
        scores[part] = (np.take(corpus, part, axis=0) @ w32).astype(F64) + w[-1]
    info.bounded += len(rows)


def _top_scored(
    corpus: NDArray[np.float32],
    scores: NDArray[F64],
    upper: NDArray[F64],
    w: NDArray[F64],
    top: tuple[int, NDArray[np.bool_]],
    info: SolveInfo,
) -> bool:
    """Score every row whose bound ``upper`` reaches the k-th best scored candidate (so the top
    k candidates, and any row equal to one, are scored exactly); False when those would be too
    many to gather."""
    k, candidates = top
    scored = np.flatnonzero(candidates & np.isfinite(scores))
    kth = -np.inf
    if len(scored) >= k:
        kth = float(np.partition(scores[scored], len(scored) - k)[len(scored) - k])
    more = np.flatnonzero(np.isneginf(scores) & (upper >= kth))
    if len(more) > len(corpus) // 4:
        return False
    _score_rows(corpus, scores, more, w, info)
    return True


def _gather_limit(n: int, d: int, share: float) -> int:
    """How many corpus rows a working set may gather within ``share`` of the corpus matrix."""
    row = 4 * d
    spare = share * n * row - 8 * _ROW_ARRAYS * n
    # A gathered row brings its outputs on the subspace's directions and a few numbers of its own.
    outputs = 8 * (_AXES + _GRADIENT_DIRECTIONS + 8)
    per_row = row + outputs
    # Whatever the share, gathering what costs less than the subspace's outputs on every row (the
    # whole problem's) is allowed: at most an eighth of the rows.
    return max(int(spare / per_row), min(n // 8, outputs * n // per_row))


def _chunk_rows(corpus: NDArray[np.float32]) -> int:
    """Rows per block when a small problem copies its outputs (of up to 24 directions): a block
    stays within 1/64 of the corpus matrix."""
    return max(128, corpus.nbytes // (64 * 8 * 24))


def _block_rows(rows: int) -> int:
    return max(16, -(-rows // _BLOCK_SHARE))


def _sparse_share() -> float:
    """Below which share of the rows a pass over the corpus reads only those it needs."""
    return _SPARSE_BACK[0] if blas_threads() == 1 else _SPARSE_BACK[1]


def corpus_products(corpus: NDArray[np.float32], vectors: NDArray[F64]) -> NDArray[F64]:
    """``corpus @ vectors.T`` (n, m) for float64 ``vectors``: exact but for the float32 sums
    (each vector is split in a float32 part and a float32 remainder; float32 vectors, such as
    the seeds, have none). Many vectors share one pass over the corpus."""
    if corpus.size <= _WIDE_ENTRIES:
        return _wide_product(corpus, vectors)
    high = vectors.astype(F32)
    low = (vectors - high).astype(F32)
    parts = np.vstack([high, low[low.any(axis=1)]])
    if len(parts) < _SHARED_PASS:
        out = np.column_stack([(corpus @ part).astype(F64) for part in parts])
    else:
        out = (corpus @ parts.T).astype(F64)
    spare = np.flatnonzero(low.any(axis=1))
    out[:, spare] += out[:, len(vectors) :]
    return np.ascontiguousarray(out[:, : len(vectors)])


def _wide_product(rows: NDArray[np.float32], vectors: NDArray[F64]) -> NDArray[F64]:
    """``rows @ vectors.T`` in float64 (for a tiny matrix, whose float64 copy is small)."""
    product: NDArray[F64] = rows.astype(F64) @ vectors.T
    return product


def first_directions(
    positives: NDArray[F64],
    corpus: NDArray[np.float32],
    corpus_weights: NDArray[F64],
    extra: NDArray[F64],
    extra_weights: NDArray[F64],
    stats: CorpusStats | None = None,
    positive_weights: NDArray[F64] | None = None,
    center: NDArray[F64] | None = None,
    *,
    corpus_sum: NDArray[F64] | None = None,
) -> NDArray[F64]:
    """The directions :func:`solve` scores the corpus along in its first pass (same arguments):
    the seed, the center when there is one, and each positive when there are several.

    The seed is the whitened (or, without ``stats``, plain) difference between the positives'
    and the negatives' means: the exemplar LDA. ``corpus_sum``, the corpus's column sum, saves a
    pass when known.
    """
    if positive_weights is None:
        positive_weights = np.ones(len(positives))
    if stats is not None and stats.count != len(corpus):
        stats = None
    if corpus_sum is None:
        corpus_sum = corpus.sum(axis=0, dtype=F64) if stats is None else stats.total
    excluded = corpus_weights == 0
    special = ~excluded & (corpus_weights != 1)
    negative_mean = (
        corpus_sum
        - corpus[excluded].sum(axis=0, dtype=F64)
        + (corpus_weights[special] - 1) @ corpus[special]
        + extra_weights @ extra
    ) / float(corpus_weights.sum() + extra_weights.sum())
    seed = positive_weights @ positives / float(positive_weights.sum()) - negative_mean
    if stats is not None:
        seed = stats.whiten(corpus, seed)
    # Float32 products of float32 numbers are exact (the center, part of the problem, stays as
    # it is: its products are split in a float32 part and a remainder).
    rows = [seed[np.newaxis].astype(F32).astype(F64)]
    if center is not None and center.any():
        rows.append(center[np.newaxis])
    if len(positives) > 1:
        rows.append(_positive_directions(positives, positive_weights))
    return np.vstack(rows)


def _positive_directions(positives: NDArray[F64], weights: NDArray[F64]) -> NDArray[F64]:
    """The positives themselves, or for more than :data:`_POSITIVE_AXES` of them the leading
    axes of their span (weighted): directions whose outputs on every row the solver keeps, so
    their number, not the positives', sets its memory."""
    if len(positives) <= _POSITIVE_AXES:
        return positives.astype(F32).astype(F64)
    _, _, axes = np.linalg.svd(np.sqrt(weights)[:, np.newaxis] * positives, full_matrices=False)
    return axes[:_POSITIVE_AXES].astype(F32).astype(F64)


def _restricted_rows(
    positives: NDArray[F64],
    positive_cost: NDArray[F64],
    corpus: NDArray[np.float32],
    corpus_weights: NDArray[F64],
    unit_cost: float,
    in_set: NDArray[np.bool_],
    whole: bool,
    corpus_sum: NDArray[F64],
    eligible_sum: NDArray[F64],
    extra: NDArray[F64],
    extra_weights: NDArray[F64],
) -> tuple[_Rows, Any]:
    """The rows of the restricted problem, and which corpus rows they are (an index)."""
    small = [positives, extra]
    small_y = [np.ones(len(positives)), -np.ones(len(extra))]
    small_k = [positive_cost, unit_cost * extra_weights]
    members: Any
    if whole:  # excluded rows stay in place at zero cost
        members = slice(None)
        big = corpus
        big_k = unit_cost * corpus_weights
        big_sum = corpus_sum
    else:
        members = np.flatnonzero(in_set)
        big = np.take(corpus, members, axis=0)  # (several times faster than corpus[members])
        big_k = unit_cost * corpus_weights[members]
        big_sum = big.sum(axis=0, dtype=F64)
        outside = int(np.count_nonzero(~in_set & (corpus_weights > 0)))
        if outside:
            small.append(((eligible_sum - big_sum) / outside)[np.newaxis])
            small_y.append(-np.ones(1))
            small_k.append(np.full(1, unit_cost * outside))
    rows = _Rows(
        big=big,
        whole=whole,
        wide=corpus.size <= _WIDE_ENTRIES,
        big_sum=big_sum,
        small=np.vstack(small),
        y=np.concatenate([-np.ones(len(big)), *small_y]),
        k=np.concatenate([big_k, *small_k]),
        # A block of outputs (of up to 24 directions) stays within 1/64 of the corpus matrix.
        chunk=_chunk_rows(corpus),
    )
    return rows, members


def _minimise(
    rows: _Rows,
    w: NDArray[F64],
    center: NDArray[F64],
    start: list[tuple[NDArray[F64], NDArray[F64]]],
    out: NDArray[F64],
    tolerance: float,
    info: SolveInfo,
) -> tuple[NDArray[F64], NDArray[F64]]:
    """Minimise the restricted objective from ``w`` (augmented; ``out`` its outputs) over a
    subspace that starts with the directions ``start`` (each with its outputs on the big rows)
    and grows by the gradient, until the gradient is below ``tolerance``. Returns the solution
    and its outputs."""
    y, k = rows.y, rows.k
    space = _Subspace(len(w), len(y), len(start) + _GRADIENT_DIRECTIONS)
    curvature = _Curvature(y, k, rows.chunk)
    while start:  # emptied as it goes: its outputs may be views of the caller's last arrays
        direction, big = start.pop(0)
        space.add(direction, np.concatenate([big, rows.small @ direction[:-1] + direction[-1]]))
        del big
    space.keep()
    best, stalled, near = np.inf, 0, 0
    for _ in range(_MAX_DIRECTIONS + 1):
        # The exact minimum over w + span(dirs): the outputs of every direction are known.
        basis, known, gram = space.view()
        delta = _subspace_min(
            out, known, gram, basis.T @ (w - center), curvature, space.fresh(), info
        )
        w = w + basis @ delta
        out = out + known @ delta
        gradient = w - center + 2 * rows.back(_residual(out, y, k), info)
        norm = float(np.linalg.norm(gradient))
        info.gradients.append(norm)
        # Float32 sums cannot certify a gradient below their rounding, which on a corpus of unit
        # rows lies just above the tolerance: stop once it has not reached a new low for a
        # while, or has stayed near the tolerance for three directions (converging, it would
        # have dropped below it).
        stalled = 0 if norm < best else stalled + 1
        best = min(best, norm)
        near = near + 1 if norm <= _NEAR * tolerance else 0
        if norm <= tolerance or stalled >= 4 or near >= 3:
            break
        step = -gradient
        step[:-1] = step[:-1].astype(F32)  # float32 products see float32 numbers exactly
        space.add(step, rows.forward(step, info))
        info.directions += 1
    return w, out


class _Subspace:
    """Directions (unit length, not orthogonal) with their outputs on every row and their Gram
    matrix. The outputs are the largest arrays of a solve, so there is room for a fixed number
    of directions: once it is full, a new direction takes the place of the oldest gradient one
    (the starting directions stay)."""

    def __init__(self, size: int, rows: int, capacity: int) -> None:
        self.dirs = np.empty((size, capacity))
        self.outputs = np.empty((rows, capacity))
        self.gram = np.empty((capacity, capacity))
        self.size = 0
        self.kept = 0  # the starting directions
        self.turn = 0  # which gradient direction goes next when full
        self.changed: list[int] = []  # slots whose direction changed since fresh() was called

    def keep(self) -> None:
        self.kept = self.size

    def add(self, direction: NDArray[F64], outputs: NDArray[F64]) -> bool:
        """Add a direction unless it (nearly) lies in the span already; say whether it did."""
        length = float(np.linalg.norm(direction))
        capacity = self.dirs.shape[1]
        if length == 0 or self.kept == capacity:
            return False
        unit = direction / length
        if self.size < capacity:
            slot = self.size
            others: Any = slice(0, slot)
            gram = self.gram[:slot, :slot]
        else:
            slot = self.kept + self.turn
            others = np.delete(np.arange(capacity), slot)
            gram = self.gram[np.ix_(others, others)]
        overlap = self.dirs[:, others].T @ unit
        if slot and _in_span(gram, overlap):
            return False
        self.dirs[:, slot] = unit
        self.changed.append(slot)
        self.outputs[:, slot] = outputs
        self.outputs[:, slot] /= length
        self.gram[others, slot] = self.gram[slot, others] = overlap
        self.gram[slot, slot] = 1.0
        if self.size < capacity:
            self.size += 1
        else:
            self.turn = (self.turn + 1) % (capacity - self.kept)
        return True

    def fresh(self) -> list[int]:
        """The slots whose direction changed since the last call."""
        changed, self.changed = sorted(set(self.changed)), []
        return changed

    def view(self) -> tuple[NDArray[F64], NDArray[F64], NDArray[F64]]:
        m = self.size
        return self.dirs[:, :m], self.outputs[:, :m], self.gram[:m, :m]


def _residual(out: NDArray[F64], y: NDArray[F64], k: NDArray[F64]) -> NDArray[F64]:
    """``k_i (out_i - y_i)`` on the rows inside the margin, 0 elsewhere: half the loss slope."""
    return np.where((y * out < 1) & (k > 0), k * (out - y), 0.0)


class _Curvature:
    """The loss's Hessian over the subspace's directions, ``2 sum_i k_i o_i o_i^T`` over the
    rows active in a pattern ``on`` (``o_i``: row i's outputs on the directions).

    Summing it afresh costs a pass over the active rows' outputs each Newton step; once a solve
    is under way few rows switch between steps, so it is updated by those rows instead, and by
    the directions that changed (one product over the rows each).
    """

    def __init__(self, y: NDArray[F64], k: NDArray[F64], chunk: int) -> None:
        self.y, self.k, self.chunk = y, k, chunk
        self.roots = np.sqrt(2 * k)
        self.on: NDArray[np.bool_] | None = None
        self.hess = np.zeros((0, 0))

    def of(self, outputs: NDArray[F64], on: NDArray[np.bool_], fresh: list[int]) -> NDArray[F64]:
        """The Hessian for ``outputs`` (rows x m) and the pattern ``on``; ``fresh`` lists the
        directions whose outputs changed since the last call (all of them on the first)."""
        changed = np.flatnonzero(on != self.on) if self.on is not None else None
        if changed is None or 2 * len(changed) > np.count_nonzero(on):
            hess = self._summed(outputs, np.flatnonzero(on))
        else:
            m = outputs.shape[1]
            hess = np.zeros((m, m))
            old = min(len(self.hess), m)  # a new direction's row and column are fresh
            hess[:old, :old] = self.hess[:old, :old]
            hess += self._summed(outputs, changed[on[changed]])
            hess -= self._summed(outputs, changed[~on[changed]])
            weights = np.where(on, 2 * self.k, 0.0)
            for j in fresh:
                hess[:, j] = hess[j, :] = outputs.T @ (weights * outputs[:, j])
        self.on, self.hess = on, hess
        return hess

    def _summed(self, outputs: NDArray[F64], rows: NDArray[np.intp]) -> NDArray[F64]:
        """``2 sum_i k_i o_i o_i^T`` over ``rows``, a block at a time (the copies stay small)."""
        hess = np.zeros((outputs.shape[1], outputs.shape[1]))
        for first in range(0, len(rows), self.chunk):
            block = rows[first : first + self.chunk]
            part = outputs[block]
            part *= self.roots[block, np.newaxis]
            hess += part.T @ part
        return hess


def _subspace_min(
    out: NDArray[F64],
    outputs: NDArray[F64],
    gram: NDArray[F64],
    offset: NDArray[F64],
    curvature: _Curvature,
    fresh: list[int],
    info: SolveInfo,
    steps: int = _MAX_NEWTON,
) -> NDArray[F64]:
    """Exact minimiser over ``a`` of ``1/2 a^T gram a + offset @ a + sum_i k_i max(0, 1 - y_i
    u_i)^2`` with ``u = out + outputs @ a``: the objective over a subspace of directions whose
    Gram matrix is ``gram`` (``y`` and ``k`` are the curvature's)."""
    y, k = curvature.y, curvature.k
    a = np.zeros(len(offset))
    u = out
    live = k > 0
    on = (y * u < 1) & live
    for _ in range(steps):
        reg = gram @ a + offset
        grad = reg + outputs.T @ np.where(on, 2 * k * (u - y), 0.0)
        hess = gram + curvature.of(outputs, on, fresh)
        fresh = []
        step = -np.linalg.solve(hess, grad)
        move = outputs @ step
        info.newton_steps += 1
        after = (y * (u + move) < 1) & live
        if np.array_equal(after, on):
            # No hinge switches along the step, so the objective is the quadratic the Newton
            # step minimises: this is the exact minimum.
            return a + step
        t = _line_search(u, move, y, k, float(reg @ step), float(step @ gram @ step))
        a = a + t * step
        u = u + t * move
        on = (y * u < 1) & live
        if abs(t) * np.linalg.norm(step) <= 1e-13 * (1 + np.linalg.norm(a)):
            break
    return a


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
    A row's hinge is on over a half-line of steps, so only the rows on at either end of the
    bracket matter inside it.
    """
    # With y = +-1, a row's output moved by t is y (margin + t pull) and its slope term is
    # (margin + t pull - 1) pull: margins and pulls are all the rows need (few arrays: on a
    # whole corpus every one of them is a sizeable share of the memory budget).
    margin = y * out
    pull = y * delta

    def rows(high: float) -> tuple[NDArray[F64], ...]:
        moved = high * pull
        moved += margin
        on = np.flatnonzero((k > 0) & ((margin < 1) | (moved < 1)))
        del moved
        part_pull = pull[on]
        return margin[on], part_pull, k[on] * part_pull

    def slope(t: float) -> tuple[float, float]:
        gap = part_margin + t * part_pull
        gap -= 1.0
        np.minimum(gap, 0.0, out=gap)  # rows outside the margin: no slope
        first = wp + t * pp + 2 * float(part_kpull @ gap)
        act = gap < 0
        second = pp + 2 * float(part_kpull[act] @ part_pull[act])
        return first, second

    low, high = 0.0, 1.0
    part_margin, part_pull, part_kpull = rows(high)
    value, curvature = slope(high)
    while value < 0:
        low, high = high, 2 * high
        part_margin, part_pull, part_kpull = rows(high)
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


def _fit_start(
    seed: NDArray[F64],
    axes: NDArray[F64],
    positives: NDArray[F64],
    extra: NDArray[F64],
    center: NDArray[F64],
    seed_scores: NDArray[F64],
    axis_outputs: list[NDArray[F64]],
    offsets: NDArray[F64],
    fit_rows: NDArray[np.intp],
    costs: NDArray[F64],
    chunk: int,
    info: SolveInfo,
    every_row: bool = True,
) -> tuple[NDArray[F64], NDArray[F64]]:
    """The exact minimum over ``center + span(seed, axes) + bias``, looking at the positives,
    the extra negatives and the corpus rows ``fit_rows`` only.

    ``seed_scores``, ``axis_outputs`` (one per axis) and ``offsets`` are every corpus row's
    products with the seed, the axes and the center; ``costs`` are those of the positives, the
    fit rows and the extra negatives. Returns the solution (augmented with the bias) and every
    row's score (``every_row``), or the fit rows' only.
    """
    d = len(seed)
    directions = np.zeros((d + 1, axes.shape[1] + 2))
    directions[:d, 0] = seed
    directions[:d, 1:-1] = axes
    directions[d, -1] = 1.0
    p, rows = len(positives), len(fit_rows)
    small = np.vstack([positives, extra])
    small_outputs = small @ directions[:d] + directions[d]
    # The outputs of the directions (at unit length) on every row of this problem, built in place:
    # on a small corpus they are a sizeable share of the memory budget.
    outputs = np.empty((p + rows + len(extra), directions.shape[1]))
    outputs[:p] = small_outputs[:p]
    outputs[p + rows :] = small_outputs[p:]
    middle = outputs[p : p + rows]
    middle[:, 0] = seed_scores[fit_rows]
    for j, axis_output in enumerate(axis_outputs, 1):
        middle[:, j] = axis_output[fit_rows]
    middle[:, -1] = 1.0
    lengths = np.linalg.norm(directions, axis=0)
    kept = _independent(directions / np.where(lengths > 0, lengths, 1.0))
    outputs /= np.where(lengths > 0, lengths, 1.0)
    if len(kept) < directions.shape[1]:
        outputs = outputs[:, kept]
    units = directions[:, kept] / lengths[kept]
    y = np.concatenate([np.ones(p), -np.ones(len(outputs) - p)])
    base = np.concatenate([positives @ center, offsets[fit_rows], extra @ center])
    curvature = _Curvature(y, costs, chunk)
    delta = _subspace_min(
        base,
        outputs,
        units.T @ units,
        np.zeros(len(kept)),
        curvature,
        list(range(len(kept))),
        info,
        _FIT_STEPS,
    )
    # The same point in terms of the original directions (the problem used them at unit length).
    coefficients = np.zeros(directions.shape[1])
    coefficients[kept] = delta / lengths[kept]
    w = np.append(center, 0.0) + directions @ coefficients
    if not every_row:
        fitted: NDArray[F64] = (base + outputs @ delta)[p : p + rows]
        return w, fitted
    scores: NDArray[F64] = offsets + coefficients[0] * seed_scores + coefficients[-1]
    for coefficient, axis_output in zip(coefficients[1:-1], axis_outputs, strict=True):
        scores += coefficient * axis_output
    return w, scores


def _independent(units: NDArray[F64]) -> NDArray[np.intp]:
    """Which of the unit-length columns to keep so that none (nearly) lies in the span of the
    kept ones before it."""
    kept: list[int] = []
    for j in range(units.shape[1]):
        if not units[:, j].any():
            continue
        basis = units[:, kept]
        overlap = basis.T @ units[:, j]
        if kept and _in_span(basis.T @ basis, overlap):
            continue
        kept.append(j)
    return np.array(kept, dtype=np.intp)


def _in_span(gram: NDArray[F64], overlap: NDArray[F64]) -> bool:
    """Whether a unit vector (nearly) lies in the span of unit vectors with Gram matrix
    ``gram``, given its products ``overlap`` with them: the part outside, squared, is
    ``1 - overlap^T gram^-1 overlap``."""
    return 1 - float(overlap @ np.linalg.solve(gram, overlap)) <= 1e-10


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
    From it follow, on first use after a change, the whitener and the corpus's leading principal
    axes with every row's outputs on them (n x 8 numbers: the solver's subspace starts with
    them). Both are derived from the saved second moment, so a loaded index ranks exactly like
    the one that was saved.
    """

    def __init__(self, total: NDArray[F64], count: int, gram: NDArray[F64] | None = None) -> None:
        self.total = total
        self.count = count
        self.gram = gram
        self.seconds = 0.0  # time spent computing the second moment, whitener and axes
        self._inverse: NDArray[np.float32] | None = None
        self._axes: NDArray[F64] | None = None
        self._projection: NDArray[F64] | None = None
        self._residuals: NDArray[F64] | None = None
        self._longest = 0.0

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
            start = time.perf_counter()
            gram = np.zeros((corpus.shape[1], corpus.shape[1]))
            for first in range(0, len(corpus), 4096):  # float64 accuracy, bounded memory
                block = corpus[first : first + 4096].astype(F64)
                gram += block.T @ block
            self.gram = gram
            self.seconds += time.perf_counter() - start
        return self.gram

    def covariance(self, corpus: NDArray[np.float32]) -> NDArray[F64]:
        mean = self.total / self.count
        cov: NDArray[F64] = self.second_moment(corpus) / self.count - np.outer(mean, mean)
        return cov

    def whitener(self, corpus: NDArray[np.float32]) -> NDArray[np.float32]:
        """Inverse of the ridge-regularised covariance (computed once; well conditioned). Kept
        in float32: it only turns the seed (itself rounded to float32), and at d=1536 reading it
        in float64 cost a third of a pass over a 10k-row corpus."""
        if self._inverse is None:
            cov = self.covariance(corpus)
            start = time.perf_counter()
            cov[np.diag_indices_from(cov)] += _WHITENING_RIDGE
            self._inverse = np.linalg.inv(cov).astype(F32)
            self.seconds += time.perf_counter() - start
        return self._inverse

    def squares(self, corpus: NDArray[np.float32]) -> float:
        """The sum of the rows' squared lengths."""
        return float(np.trace(self.second_moment(corpus)))

    def axes(self, corpus: NDArray[np.float32]) -> tuple[NDArray[F64], NDArray[F64]]:
        """The corpus's leading principal axes (d, a) and every row's outputs on them (n, a),
        computed once: the solver's subspace starts with them."""
        if self._axes is None or self._projection is None:
            cov = self.covariance(corpus)
            start = time.perf_counter()
            self._axes = _leading_axes(cov, min(_AXES, max(1, len(cov) // 4)))
            self._projection = _project(corpus, self._axes)
            self.seconds += time.perf_counter() - start
        return self._axes, self._projection

    def residuals(self, corpus: NDArray[np.float32]) -> tuple[NDArray[F64], float]:
        """Every row's length outside the principal axes, and the longest row's length."""
        if self._residuals is None:
            _, projection = self.axes(corpus)
            start = time.perf_counter()
            lengths = np.empty(len(corpus))
            block = _block_rows(len(corpus))
            for first in range(0, len(corpus), block):
                part = corpus[first : first + block].astype(F64)
                lengths[first : first + block] = np.einsum("ij,ij->i", part, part)
            self._longest = float(np.sqrt(lengths.max(initial=0.0)))
            lengths -= np.einsum("ij,ij->i", projection, projection)
            # Rounding can leave a row inside the axes a tiny negative square: a margin keeps
            # the bound an upper one.
            self._residuals = np.sqrt(np.maximum(lengths, 0.0)) + 1e-6 * self._longest
            self.seconds += time.perf_counter() - start
        return self._residuals, self._longest

    def whiten(self, corpus: NDArray[np.float32], direction: NDArray[F64]) -> NDArray[F64]:
        whitened: NDArray[F64] = (self.whitener(corpus) @ direction.astype(F32)).astype(F64)
        return whitened


def _leading_axes(cov: NDArray[F64], count: int) -> NDArray[F64]:
    """Orthonormal axes spanning about the ``count`` leading eigenvectors of ``cov``, by
    subspace iteration (any axes would do; the leading ones save the most passes)."""
    basis = np.random.default_rng(0).normal(size=(len(cov), 2 * count))
    for _ in range(20):
        basis = np.linalg.qr(cov @ basis)[0]
    vectors = np.linalg.eigh(basis.T @ cov @ basis)[1]
    axes: NDArray[F64] = basis @ vectors[:, ::-1][:, :count]
    return axes


def _project(rows: NDArray[np.float32], axes: NDArray[F64]) -> NDArray[F64]:
    """``rows @ axes`` in float64, a block of rows at a time."""
    return np.vstack(
        [
            rows[start : start + _block_rows(len(rows))].astype(F64) @ axes
            for start in range(0, len(rows), _block_rows(len(rows)))
        ]
        or [np.zeros((0, axes.shape[1]))]
    )
