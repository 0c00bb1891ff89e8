"""Drift of the label and pixel-value distributions between two spans' statistics.

Reads the exact histograms StatisticsGen stores in the statistics (see
`pipeline.formats.statistics`) and measures:
  - label: L-infinity distance between the normalised label histograms (10 bins);
  - image: Jensen-Shannon divergence between the normalised pixel-value histograms (256 bins).
A comparison that cannot be made (a histogram missing or empty on either side, bins that do not
match) is a problem, not a pass: the gate fails closed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from components.example_validator.drift import (JENSEN_SHANNON, L_INFINITY, DriftMeasurement,
                                                js_divergence, linf_distance)
from pipeline.formats.statistics import LABEL_FEATURE, PIXEL_FEATURE, read_value_histogram

_Type = anomalies_pb2.AnomalyInfo.Type


@dataclass(frozen=True)
class DriftProblem:
    """A drift comparison that could not be made, as an anomaly reason."""

    feature: str
    reason_type: int  # AnomalyInfo.Type
    short_description: str
    description: str


@dataclass
class DriftResult:
    measurements: List[DriftMeasurement] = field(default_factory=list)
    problems: List[DriftProblem] = field(default_factory=list)

    @property
    def exceeded(self) -> List[DriftMeasurement]:
        return [m for m in self.measurements if m.exceeded]


def check_drift(current: statistics_pb2.DatasetFeatureStatistics,
                previous: statistics_pb2.DatasetFeatureStatistics,
                label_linf_threshold: float, pixel_jsd_threshold: float) -> DriftResult:
    """Measures label and pixel drift of `current` against `previous` (one split each)."""
    result = DriftResult()
    checks = ((LABEL_FEATURE, L_INFINITY, linf_distance, label_linf_threshold),
              (PIXEL_FEATURE, JENSEN_SHANNON, js_divergence, pixel_jsd_threshold))
    for feature, metric, distance, threshold in checks:
        now = read_value_histogram(current, feature)
        before = read_value_histogram(previous, feature)
        problem = _comparison_problem(feature, now, before)
        if problem is not None:
            result.problems.append(problem)
            continue
        result.measurements.append(DriftMeasurement(
            feature=feature, metric=metric, value=distance(now[0], before[0]), threshold=threshold))
    return result


def _comparison_problem(feature: str, now, before):
    """A DriftProblem when the two histograms cannot be compared, else None."""
    if before is None or before[0].sum() == 0:
        return DriftProblem(feature, _Type.COMPARATOR_CONTROL_DATA_MISSING,
                            "No previous-span data to compare",
                            f"The previous span's statistics hold no value histogram of {feature}; "
                            "its drift cannot be checked.")
    if now is None or now[0].sum() == 0:
        return DriftProblem(feature, _Type.COMPARATOR_TREATMENT_DATA_MISSING,
                            "No current-span data to compare",
                            f"This span's statistics hold no value histogram of {feature}; "
                            "its drift cannot be checked.")
    if now[0].shape != before[0].shape:
        return DriftProblem(feature, _Type.COMPARATOR_CONTROL_DATA_MISSING,
                            "Histograms do not match",
                            f"The value histograms of {feature} have {now[0].size} bins in this span "
                            f"and {before[0].size} in the previous one; drift cannot be checked.")
    return None
