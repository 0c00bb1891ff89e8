"""Distances between two histograms over the same bins (pure numpy, no I/O).

Inputs are raw counts (any non-negative numbers) over identical bins; both are normalised to
probability distributions first, so spans of different sizes compare fairly.

- `linf_distance`: max_i |p_i - q_i|, in [0, 1]. 0 for identical distributions, 1 when all
  mass sits in different bins (TFDV's L-infinity drift measure for categorical features).
- `js_divergence`: Jensen-Shannon divergence with base-2 logarithms, in [0, 1]. 0 for
  identical distributions, 1 for distributions with disjoint support.

A measurement exceeds its threshold only when strictly greater (`value > threshold`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

L_INFINITY = "l_infinity"
JENSEN_SHANNON = "jensen_shannon_divergence"


@dataclass(frozen=True)
class DriftMeasurement:
    """One drift figure: `metric` between this span's and the previous span's `feature`."""

    feature: str
    metric: str
    value: float
    threshold: float

    @property
    def exceeded(self) -> bool:
        return exceeds(self.value, self.threshold)

    def to_json(self) -> dict:
        return {**asdict(self), "exceeded": self.exceeded}


def normalize(counts) -> np.ndarray:
    """Returns `counts` as a float64 probability vector summing to 1.

    Raises ValueError when `counts` is not 1-D, holds a negative or non-finite entry, or sums
    to zero (an empty histogram has no distribution to compare).
    """
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"histogram must be 1-D, got shape {array.shape}")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError("histogram counts must be finite and non-negative")
    total = array.sum()
    if total <= 0:
        raise ValueError("histogram is empty (all counts are zero)")
    return array / total


def _pair(p_counts, q_counts) -> tuple:
    p, q = normalize(p_counts), normalize(q_counts)
    if p.shape != q.shape:
        raise ValueError(f"histograms have different numbers of bins: {p.size} and {q.size}")
    return p, q


def linf_distance(p_counts, q_counts) -> float:
    """L-infinity distance between the normalised histograms; ValueError as in `normalize`."""
    p, q = _pair(p_counts, q_counts)
    return float(np.max(np.abs(p - q)))


def _kl_base2(p: np.ndarray, m: np.ndarray) -> float:
    """KL(p || m) in bits; terms with p_i = 0 contribute 0 (m_i > 0 wherever p_i > 0)."""
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))


def js_divergence(p_counts, q_counts) -> float:
    """Jensen-Shannon divergence (base 2) of the normalised histograms, clipped to [0, 1]."""
    p, q = _pair(p_counts, q_counts)
    m = 0.5 * (p + q)
    value = 0.5 * _kl_base2(p, m) + 0.5 * _kl_base2(q, m)
    return float(min(max(value, 0.0), 1.0))  # rounding can step a hair outside [0, 1]


def exceeds(value: float, threshold: float) -> bool:
    """True when `value` is beyond `threshold` (strictly greater); NaN always exceeds."""
    return not value <= threshold
