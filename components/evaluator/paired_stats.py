"""Paired statistics for the promotion gate: candidate vs serving (baseline) model on the same examples.

Pure math (numpy/scipy), no TensorFlow. Input is a `PairedTable` of per-example correctness
counts; output is a `Comparison` (accuracies, Wilson intervals, the accuracy difference with a
Newcombe interval, an exact McNemar p) and `decide()`'s list of reasons not to promote.

Why Newcombe's method 10 for the difference (Newcombe 1998, "Improved confidence intervals for
the difference between binomial proportions based on paired data", Stat Med 17:2635-2650): both
models are scored on the same examples, so an unpaired interval is far too wide. The hybrid
score interval keeps near-nominal coverage for small counts and for zero discordant pairs, where
the Wald interval collapses to a zero-width [0, 0] and overstates certainty; and it is
deterministic, unlike a bootstrap, so a rerun gives the same blessing.

Edge cases, all fail closed:
- n == 0 overall: difference and interval are NaN -> "cannot be computed" reason, never promoted.
- A slice with n == 0 -> a "slice <name> has no examples" reason.
- Zero discordant pairs: difference 0 with a finite interval around 0 (Wilson widths do not
  vanish). Superiority with min_gain >= 0 is refused (never "better" by accident);
  non-inferiority is accepted when the lower bound > -margin.
- McNemar with b + c == 0 gives p = 1.0 (no evidence either way).
- Holm: a NaN p sorts last and never rejects; ties keep input order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.formats.blessing import PROMOTION_POLICIES
from pipeline.formats.evaluation import OVERALL_SLICE

POLICIES = PROMOTION_POLICIES
_COUNTS = ("both_correct", "candidate_only", "baseline_only", "both_wrong")
Interval = tuple[float, float]
_NAN_PAIR: Interval = (math.nan, math.nan)


@dataclass(frozen=True)
class PairedTable:
    """Counts over the same examples: candidate/baseline each right or wrong (ints >= 0)."""

    both_correct: int
    candidate_only: int
    baseline_only: int
    both_wrong: int

    def __post_init__(self):
        for name in _COUNTS:
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))

    @property
    def n(self) -> int:
        return self.both_correct + self.candidate_only + self.baseline_only + self.both_wrong

    @property
    def candidate_accuracy(self) -> float:
        return (self.both_correct + self.candidate_only) / self.n if self.n else math.nan

    @property
    def baseline_accuracy(self) -> float:
        return (self.both_correct + self.baseline_only) / self.n if self.n else math.nan

    @property
    def difference(self) -> float:
        """Candidate minus baseline accuracy; NaN when n == 0."""
        return (self.candidate_only - self.baseline_only) / self.n if self.n else math.nan

    @classmethod
    def from_correctness(cls, candidate_correct, baseline_correct) -> PairedTable:
        """Table from two equal-length 1-D boolean sequences (True = that model got the example right)."""
        cand = np.asarray(candidate_correct, dtype=bool).ravel()
        base = np.asarray(baseline_correct, dtype=bool).ravel()
        if cand.shape != base.shape:
            raise ValueError(f"candidate_correct has length {cand.size} but baseline_correct has {base.size}")
        return cls(
            int(np.sum(cand & base)),
            int(np.sum(cand & ~base)),
            int(np.sum(~cand & base)),
            int(np.sum(~cand & ~base)),
        )


def _check_alpha(alpha: float, upper: float = 1.0) -> None:
    if not (isinstance(alpha, (int, float)) and 0.0 < alpha < upper):
        raise ValueError(f"alpha must be in (0, {upper:g}), got {alpha!r}")


def wilson_interval(successes: int, n: int, alpha: float) -> Interval:
    """Wilson score interval (two-sided, level 1 - alpha) for successes/n; (nan, nan) when n == 0."""
    _check_alpha(alpha)
    if not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return _NAN_PAIR
    z = stats.norm.ppf(1.0 - alpha / 2.0)
    p, z2 = successes / n, z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact_p(candidate_only: int, baseline_only: int, mid_p: bool = False) -> float:
    """Two-sided exact McNemar p: binomial test of b out of b + c at p = 0.5; 1.0 when b + c == 0."""
    b, c = int(candidate_only), int(baseline_only)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got {b}, {c}")
    m, k = b + c, min(b, c)
    if m == 0:
        return 1.0
    tail = stats.binom.cdf(k, m, 0.5)
    if mid_p:
        tail -= 0.5 * stats.binom.pmf(k, m, 0.5)
    return float(min(1.0, 2.0 * tail))


def newcombe_difference_interval(table: PairedTable, alpha: float) -> Interval:
    """Newcombe method 10 interval for candidate minus baseline accuracy; (nan, nan) if n == 0."""
    n = table.n
    if n == 0:
        _check_alpha(alpha)
        return _NAN_PAIR
    a, b, c, d = (float(getattr(table, f)) for f in _COUNTS)
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson_interval(table.both_correct + table.candidate_only, n, alpha)
    l2, u2 = wilson_interval(table.both_correct + table.baseline_only, n, alpha)
    denom = (a + b) * (c + d) * (a + c) * (b + d)
    # Newcombe's phi: 0 when a margin is empty (undefined there), and a positive ad - bc is
    # shrunk by n/2. Without the shrink, zero discordant pairs give phi = 1 and a [0, 0] interval
    # whenever both Wilson widths are equal (e.g. 2,0,0,2): false certainty.
    cross = a * d - b * c
    cross = cross - n / 2 if cross > n / 2 else min(cross, 0.0)
    phi = cross / math.sqrt(denom) if denom > 0 else 0.0
    # max(0, .) guards tiny negative rounding when phi is ~1 and the two widths are equal.
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    eps = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    theta = p1 - p2
    return max(-1.0, theta - delta), min(1.0, theta + eps)


@dataclass(frozen=True)
class Comparison:
    """One slice's paired comparison; `alpha` is the level the intervals were actually built at."""

    slice: str
    n: int
    candidate_only: int
    baseline_only: int
    candidate_accuracy: float
    baseline_accuracy: float
    candidate_ci: Interval
    baseline_ci: Interval
    difference: float
    difference_ci: Interval
    p_value: float
    alpha: float
    # One-sided p of "worse than the serving model by more than the slice limit" (label slices).
    regression_p_value: float | None = None

    def to_json(self) -> dict:
        """Plain dict: intervals as lists, NaN as None; p-values to 6 significant digits (a tiny
        p stays visible), other floats to 6 decimals."""

        def clean(name, x):
            if isinstance(x, tuple):
                return [clean(name, v) for v in x]
            if isinstance(x, float):
                if not math.isfinite(x):
                    return None
                return float(f"{x:.6g}") if name.endswith("p_value") else round(float(x), 6)
            return x

        return {name: clean(name, getattr(self, name)) for name in self.__dataclass_fields__}


def compare(
    slice_name: str, table: PairedTable, alpha: float, regression_p_value: float | None = None
) -> Comparison:
    """All statistics for one table at level 1 - alpha."""
    _check_alpha(alpha)
    return Comparison(
        regression_p_value=regression_p_value,
        slice=slice_name,
        n=table.n,
        candidate_only=table.candidate_only,
        baseline_only=table.baseline_only,
        candidate_accuracy=table.candidate_accuracy,
        baseline_accuracy=table.baseline_accuracy,
        candidate_ci=wilson_interval(table.both_correct + table.candidate_only, table.n, alpha),
        baseline_ci=wilson_interval(table.both_correct + table.baseline_only, table.n, alpha),
        difference=table.difference,
        difference_ci=newcombe_difference_interval(table, alpha),
        p_value=mcnemar_exact_p(table.candidate_only, table.baseline_only),
        alpha=float(alpha),
    )


def _holm_order(p_values: Sequence[float]) -> list[int]:
    p = [float(v) for v in p_values]
    return sorted(range(len(p)), key=lambda i: (math.isnan(p[i]), p[i] if not math.isnan(p[i]) else 0.0))


def holm_adjusted_alphas(p_values: Sequence[float], alpha: float) -> list[float]:
    """Per-comparison alpha Holm assigns (k-th smallest p gets alpha/(m-k+1)), in input order."""
    _check_alpha(alpha)
    m, out = len(p_values), [0.0] * len(p_values)
    for k, i in enumerate(_holm_order(p_values)):
        out[i] = alpha / (m - k)
    return out


def holm_reject(p_values: Sequence[float], alpha: float) -> list[bool]:
    """Holm step-down rejections, in input order: stop at the first p above its threshold."""
    thresholds = holm_adjusted_alphas(p_values, alpha)
    out = [False] * len(p_values)
    for i in _holm_order(p_values):
        p = float(p_values[i])
        if math.isnan(p) or p > thresholds[i]:
            break
        out[i] = True
    return out


def regression_p_value(table: PairedTable, limit: float) -> float:
    """p of the test "the candidate is worse than the baseline by more than `limit`" (null:
    difference >= -limit), by inverting Newcombe's interval: the smallest alpha at which the
    interval's upper bound lies below -limit. 1.0 when no level gets it there; NaN when n == 0.

    The upper bound falls as alpha grows (a narrower interval), so bisection finds it; 60 steps
    on log10(alpha) in [-12, 0) give far more precision than any decision needs.
    """
    if table.n == 0:
        return math.nan
    below = lambda a: newcombe_difference_interval(table, a)[1] < -limit  # noqa: E731
    low, high = -12.0, math.log10(0.999999)
    if not below(10**high):
        return 1.0
    if below(10**low):
        return 10**low
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if below(10**middle) else (middle, high)
    return 10**high


def compare_slices(tables: Mapping[str, PairedTable], alpha: float, limit: float = 0.0) -> list[Comparison]:
    """Comparisons for each slice, in key order, each at the level Holm's step-down procedure
    assigns it when the slices are ranked by `regression_p_value(table, limit)`."""
    names = list(tables)
    p = [regression_p_value(tables[k], limit) for k in names]
    return [
        compare(k, tables[k], a, regression_p_value=pk)
        for k, a, pk in zip(names, holm_adjusted_alphas(p, alpha), p)
    ]


def _num(x: float, spec: str) -> str:
    return format(x, spec) if math.isfinite(x) else "nan"


def describe(comparison: Comparison) -> str:
    """'+0.0003 (95% CI -0.0011 to +0.0017, McNemar p = 0.66)'; the level is 1 - comparison.alpha."""
    level = f"{100 * (1 - comparison.alpha):.3f}".rstrip("0").rstrip(".")
    low, high = comparison.difference_ci
    return (
        f"{_num(comparison.difference, '+.4f')} ({level}% CI {_num(low, '+.4f')} to "
        f"{_num(high, '+.4f')}, McNemar p = {_num(comparison.p_value, '.2g')})"
    )


def _check_nonneg(name: str, value) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _finite(c: Comparison) -> bool:
    return all(math.isfinite(x) for x in (c.difference, *c.difference_ci))


def check_settings(
    policy: str,
    alpha: float,
    min_gain: float,
    non_inferiority_margin: float,
    slice_max_regression: float | None,
) -> None:
    """Raises ValueError naming the first setting out of range."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    _check_alpha(alpha, 0.5)
    _check_nonneg("min_gain", min_gain)
    _check_nonneg("non_inferiority_margin", non_inferiority_margin)
    if slice_max_regression is not None:
        _check_nonneg("slice_max_regression", slice_max_regression)


def verdicts(
    comparison_overall: Comparison,
    slice_comparisons: Sequence[Comparison],
    policy: str,
    alpha: float,
    min_gain: float,
    non_inferiority_margin: float,
    slice_max_regression: float | None,
) -> tuple:
    """(reason the overall comparison refuses, or None; [(slice comparison, reason or None)]).

    `comparison_overall` must be built at `alpha`; `slice_comparisons` by `compare_slices` with
    the same alpha and limit. A slice is refused by Holm's step-down procedure over their
    regression p-values (ranked, the k-th smallest against alpha / (m - k + 1), stopping at the
    first that is not below), or when it has no example or a non-finite statistic.
    slice_max_regression None skips the slices. Raises ValueError for a setting out of range.
    """
    check_settings(policy, alpha, min_gain, non_inferiority_margin, slice_max_regression)
    # A comparison built at another level would silently change what the gate tests.
    if not math.isclose(comparison_overall.alpha, alpha, rel_tol=1e-9):
        raise ValueError(
            f"alpha {alpha} differs from the overall comparison's alpha {comparison_overall.alpha}"
        )
    overall = policy_reason(comparison_overall, policy, min_gain, non_inferiority_margin)
    if slice_max_regression is None:
        return overall, []
    for s in slice_comparisons:
        if s.alpha > alpha * (1 + 1e-9):
            raise ValueError(f"slice {s.slice} alpha {s.alpha} exceeds the family alpha {alpha}")
    p = [math.nan if s.regression_p_value is None else s.regression_p_value for s in slice_comparisons]
    refused = holm_reject(p, alpha)
    return overall, [
        (s, slice_regression_reason(s, slice_max_regression, r)) for s, r in zip(slice_comparisons, refused)
    ]


def decide(
    comparison_overall: Comparison,
    slice_comparisons: Sequence[Comparison],
    policy: str,
    alpha: float,
    min_gain: float,
    non_inferiority_margin: float,
    slice_max_regression: float | None,
) -> list[str]:
    """Reasons not to promote the candidate (empty list = promote); see `verdicts`."""
    overall, slices = verdicts(
        comparison_overall,
        slice_comparisons,
        policy,
        alpha,
        min_gain,
        non_inferiority_margin,
        slice_max_regression,
    )
    return [r for r in [overall] + [reason for _, reason in slices] if r]


def policy_reason(c: Comparison, policy: str, min_gain: float, non_inferiority_margin: float) -> str | None:
    """Why the overall comparison `c` does not allow promotion under `policy`; None when it does."""
    if c.n == 0:
        return "overall accuracy cannot be computed: no examples (n = 0)"
    if not _finite(c):
        return f"overall accuracy {describe(c)}: difference or its interval cannot be computed"
    if policy == "superiority" and not c.difference_ci[0] > min_gain:
        return (
            f"overall accuracy {describe(c)}: not better than the serving model by more "
            f"than min_gain {min_gain:.4f} under superiority"
        )
    if policy == "non_inferiority" and not c.difference_ci[0] > -non_inferiority_margin:
        return (
            f"overall accuracy {describe(c)}: may be worse than the serving model by more "
            f"than non_inferiority_margin {non_inferiority_margin:.4f} under non_inferiority"
        )
    if policy not in POLICIES:
        return f"unknown promotion policy {policy!r}: nothing is promoted"
    return None


def slice_regression_reason(s: Comparison, slice_max_regression: float, refused: bool) -> str | None:
    """Why slice comparison `s` fails the regression check; None when it passes.

    Fails when the slice has no examples, its statistics are not finite, or `refused` (Holm's
    procedure found the candidate worse by more than slice_max_regression on it).
    """
    if s.n == 0:
        return f"slice {s.slice} has no examples"
    if not _finite(s) or s.regression_p_value is None or not math.isfinite(s.regression_p_value):
        return f"slice {s.slice} accuracy {describe(s)}: difference cannot be computed"
    if refused:
        return (
            f"slice {s.slice} accuracy {describe(s)}: worse than the serving model by "
            f"more than slice_max_regression {slice_max_regression:.4f} (Holm step-down, "
            f"p = {s.regression_p_value:.2g})"
        )
    return None


def tables_by_slice(
    candidate_correct,
    baseline_correct,
    features: Mapping[str, Sequence[int]],
    required: Mapping[str, Sequence[int]] = None,
) -> dict[str, PairedTable]:
    """Paired tables for "overall" and every "<feature>=<value>" slice of the per-example rows.

    candidate_correct, baseline_correct: aligned boolean arrays, one row per test example.
    features: feature name -> aligned int array (e.g. "label", "ink_density_bucket").
    required: feature name -> values whose slice must appear even when it has no example (an
        empty slice then has n == 0 and fails closed), e.g. {"label": range(10)}.
    Raises ValueError naming the array whose length differs.
    """
    cand = np.asarray(candidate_correct, dtype=bool).ravel()
    base = np.asarray(baseline_correct, dtype=bool).ravel()
    tables = {OVERALL_SLICE: PairedTable.from_correctness(cand, base)}
    for name, values in features.items():
        values = np.asarray(values).ravel()
        if values.shape != cand.shape:
            raise ValueError(f"feature {name} has {values.size} rows, the outcomes {cand.size}")
        wanted = sorted(set(int(v) for v in values) | set((required or {}).get(name, ())))
        for value in wanted:
            rows = values == value
            tables[f"{name}={value}"] = PairedTable.from_correctness(cand[rows], base[rows])
    return tables
