"""Reading and extending TFDV `Anomalies` protos: findings, severities, drift entries.

TFDV reports one `AnomalyInfo` per feature (keyed by the feature's serialized path) plus one
for the dataset. Severity is ERROR for everything the schema rules out; the gate treats
UNKNOWN like ERROR (fail closed) and lets only WARNING pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.example_validator.drift import JENSEN_SHANNON, L_INFINITY, DriftMeasurement

DATASET = "<dataset>"
_Severity = anomalies_pb2.AnomalyInfo.Severity
_Type = anomalies_pb2.AnomalyInfo.Type
_MEASUREMENT_TYPES = {
    L_INFINITY: anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY,
    JENSEN_SHANNON: anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE,
}
_DRIFT_REASONS = {
    L_INFINITY: (_Type.COMPARATOR_L_INFTY_HIGH, "High L-infinity distance to the previous span"),
    JENSEN_SHANNON: (_Type.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH,
                     "High Jensen-Shannon divergence to the previous span"),
}


@dataclass(frozen=True)
class Finding:
    """One anomaly in words: which feature (or `DATASET`), how bad, what and why."""

    feature: str
    severity: str  # "ERROR", "WARNING" or "UNKNOWN"
    reasons: tuple  # AnomalyInfo.Type names, e.g. ("INT_TYPE_BIG_INT",)
    short_description: str
    description: str

    @property
    def is_error(self) -> bool:
        return self.severity != "WARNING"


def _finding(feature: str, info: anomalies_pb2.AnomalyInfo) -> Finding:
    return Finding(
        feature=feature,
        severity=_Severity.Name(info.severity),
        reasons=tuple(_Type.Name(r.type) for r in info.reason),
        short_description=info.short_description or "; ".join(r.short_description for r in info.reason),
        description=info.description or "; ".join(r.description for r in info.reason),
    )


def findings(anomalies: anomalies_pb2.Anomalies) -> List[Finding]:
    """Every anomaly of `anomalies`, the dataset-level one first, then features by name."""
    result = []
    if anomalies.HasField("dataset_anomaly_info"):
        result.append(_finding(DATASET, anomalies.dataset_anomaly_info))
    for key in sorted(anomalies.anomaly_info):
        result.append(_finding(key, anomalies.anomaly_info[key]))
    return result


def add_anomaly(anomalies: anomalies_pb2.Anomalies, feature: str, reason_type: int,
                short_description: str, description: str,
                severity: int = _Severity.ERROR) -> None:
    """Adds a reason to `feature`'s AnomalyInfo (creating it), the way TFDV merges reasons.

    The info's severity becomes the worse of the two, and its descriptions are joined.
    """
    info = anomalies.anomaly_info[feature]
    if not info.path.step:
        info.path.step.append(feature)
    if info.reason:
        # An existing UNKNOWN severity already fails the gate; never let a new reason soften it.
        existing = _Severity.ERROR if info.severity == _Severity.UNKNOWN else info.severity
        info.severity = max(existing, severity)
    else:
        info.severity = severity
    info.reason.add(type=reason_type, short_description=short_description, description=description)
    info.short_description = _join(info.short_description, short_description)
    info.description = _join(info.description, description)


def flag_missing_data(anomalies: anomalies_pb2.Anomalies) -> None:
    """Turns TFDV's silent `data_missing` (a split with no examples) into a dataset ERROR.

    TFDV validates empty statistics by setting `data_missing` and reporting no anomaly at all;
    an empty split must not pass the gate.
    """
    if not anomalies.data_missing:
        return
    info = anomalies.dataset_anomaly_info
    info.severity = _Severity.ERROR
    info.reason.add(type=_Type.DATASET_LOW_NUM_EXAMPLES, short_description="No examples",
                    description="The split has no examples (TFDV reports data_missing).")
    info.short_description = _join(info.short_description, "No examples")
    info.description = _join(info.description, "The split has no examples (TFDV reports data_missing).")


def add_drift(anomalies: anomalies_pb2.Anomalies, measurement: DriftMeasurement) -> None:
    """Records `measurement` in `drift_skew_info`, and as an ERROR anomaly when it is exceeded."""
    entry = None
    for info in anomalies.drift_skew_info:
        if list(info.path.step) == [measurement.feature]:
            entry = info
    if entry is None:
        entry = anomalies.drift_skew_info.add()
        entry.path.step.append(measurement.feature)
    entry.drift_measurements.add(type=_MEASUREMENT_TYPES[measurement.metric],
                                 value=measurement.value, threshold=measurement.threshold)
    if measurement.exceeded:
        reason, short = _DRIFT_REASONS[measurement.metric]
        add_anomaly(anomalies, measurement.feature, reason, short,
                    f"The {measurement.metric.replace('_', ' ')} between this span's and the previous "
                    f"span's distribution of {measurement.feature} is {measurement.value:.6g}, above "
                    f"the threshold {measurement.threshold:.6g}.")


def _join(first: Optional[str], second: str) -> str:
    return f"{first} {second}" if first else second
