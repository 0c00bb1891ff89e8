"""Drift of the label and pixel-value distributions against a baseline: the previous span's
statistics, or (for a pipeline root's first span) the reference statistics.

Reads the exact histograms StatisticsGen stores in the statistics (see
`pipeline.formats.statistics`) and measures:
  - label: L-infinity distance between the normalised label histograms (10 bins);
  - image: Jensen-Shannon divergence between the normalised pixel-value histograms (256 bins).
A comparison that cannot be made (a histogram missing or empty on either side, bins that do not
match) is a problem, not a pass: the gate fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from tensorflow_metadata.proto.v0 import anomalies_pb2, statistics_pb2

from components.example_validator.drift import (
    JENSEN_SHANNON,
    L_INFINITY,
    DriftMeasurement,
    js_divergence,
    linf_distance,
)
from pipeline.formats.statistics import LABEL_FEATURE, PIXEL_FEATURE, read_value_histogram

_Type = anomalies_pb2.AnomalyInfo.Type
DRIFT_FEATURES = (LABEL_FEATURE, PIXEL_FEATURE)


@dataclass(frozen=True)
class Baseline:
    """What this span's histograms are compared with.

    name: how messages name it ("previous span 1", "the shipped MNIST reference").
    histograms: feature -> counts, or None where the baseline holds no histogram of it.
    is_reference: True for reference statistics, False for a previous span's statistics.
    """

    name: str
    histograms: Mapping[str, np.ndarray | None]
    is_reference: bool = False


@dataclass(frozen=True)
class DriftProblem:
    """A drift comparison that could not be made, as an anomaly reason."""

    feature: str
    reason_type: int  # AnomalyInfo.Type
    short_description: str
    description: str


@dataclass
class DriftResult:
    baseline: str = ""  # Baseline.name
    is_reference: bool = False  # Baseline.is_reference
    measurements: list[DriftMeasurement] = field(default_factory=list)
    problems: list[DriftProblem] = field(default_factory=list)

    @property
    def exceeded(self) -> list[DriftMeasurement]:
        return [m for m in self.measurements if m.exceeded]


def statistics_histograms(dataset: statistics_pb2.DatasetFeatureStatistics) -> dict:
    """{feature: counts or None} of the drift features in one dataset's statistics."""
    found = {feature: read_value_histogram(dataset, feature) for feature in DRIFT_FEATURES}
    return {feature: None if value is None else value[0] for feature, value in found.items()}


def check_drift(
    current: statistics_pb2.DatasetFeatureStatistics,
    baseline: Baseline,
    label_linf_threshold: float,
    pixel_jsd_threshold: float,
) -> DriftResult:
    """Measures label and pixel drift of `current` (one split's statistics) against `baseline`."""
    result = DriftResult(baseline=baseline.name, is_reference=baseline.is_reference)
    now_histograms = statistics_histograms(current)
    checks = (
        (LABEL_FEATURE, L_INFINITY, linf_distance, label_linf_threshold),
        (PIXEL_FEATURE, JENSEN_SHANNON, js_divergence, pixel_jsd_threshold),
    )
    for feature, metric, distance, threshold in checks:
        now, before = now_histograms[feature], baseline.histograms.get(feature)
        problem = _comparison_problem(feature, now, before, baseline)
        if problem is not None:
            result.problems.append(problem)
            continue
        result.measurements.append(
            DriftMeasurement(feature=feature, metric=metric, value=distance(now, before), threshold=threshold)
        )
    return result


def _comparison_problem(feature: str, now, before, baseline: Baseline) -> DriftProblem | None:
    """A DriftProblem when the two histograms cannot be compared, else None."""
    if before is None or before.sum() == 0:
        if baseline.is_reference:
            return DriftProblem(
                feature,
                _Type.COMPARATOR_CONTROL_DATA_MISSING,
                "No reference data to compare",
                f"{_capitalised(baseline.name)} holds no value histogram of {feature}; "
                "its drift cannot be checked.",
            )
        return DriftProblem(
            feature,
            _Type.COMPARATOR_CONTROL_DATA_MISSING,
            "No previous-span data to compare",
            f"The previous span's statistics hold no value histogram of {feature}; "
            "its drift cannot be checked.",
        )
    if now is None or now.sum() == 0:
        return DriftProblem(
            feature,
            _Type.COMPARATOR_TREATMENT_DATA_MISSING,
            "No current-span data to compare",
            f"This span's statistics hold no value histogram of {feature}; its drift cannot be checked.",
        )
    if now.shape != before.shape:
        return DriftProblem(
            feature,
            _Type.COMPARATOR_CONTROL_DATA_MISSING,
            "Histograms do not match",
            f"The value histograms of {feature} have {now.size} bins in this span "
            f"and {before.size} in {baseline.name}; drift cannot be checked.",
        )
    return None


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]
