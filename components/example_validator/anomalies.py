"""Extending TFDV `Anomalies` protos: severities, missing data, drift entries.

Severity is ERROR for everything the schema rules out; the gate treats UNKNOWN like ERROR (fail
closed) and lets only WARNING pass. Reading them back in words is `pipeline.formats.anomalies`.
"""

from __future__ import annotations

from tensorflow_metadata.proto.v0 import anomalies_pb2

from components.example_validator.drift import JENSEN_SHANNON, L_INFINITY, DriftMeasurement

_Severity = anomalies_pb2.AnomalyInfo.Severity
_Type = anomalies_pb2.AnomalyInfo.Type
_MEASUREMENT_TYPES = {
    L_INFINITY: anomalies_pb2.DriftSkewInfo.Measurement.L_INFTY,
    JENSEN_SHANNON: anomalies_pb2.DriftSkewInfo.Measurement.JENSEN_SHANNON_DIVERGENCE,
}
_DRIFT_REASONS = {
    L_INFINITY: (_Type.COMPARATOR_L_INFTY_HIGH, "High L-infinity distance"),
    JENSEN_SHANNON: (_Type.COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH, "High Jensen-Shannon divergence"),
}


def add_anomaly(
    anomalies: anomalies_pb2.Anomalies,
    feature: str,
    reason_type: int,
    short_description: str,
    description: str,
    severity: int = _Severity.ERROR,
) -> None:
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
    info.reason.add(
        type=_Type.DATASET_LOW_NUM_EXAMPLES,
        short_description="No examples",
        description="The split has no examples (TFDV reports data_missing).",
    )
    info.short_description = _join(info.short_description, "No examples")
    info.description = _join(info.description, "The split has no examples (TFDV reports data_missing).")


def add_drift(anomalies: anomalies_pb2.Anomalies, measurement: DriftMeasurement, baseline: str) -> None:
    """Records `measurement` in `drift_skew_info`, and as an ERROR anomaly when it is exceeded.

    baseline: what the span was compared with ("previous span 1", "the shipped MNIST
    reference"); the short description names it and the figures, because the gate's one-line
    message is made of it.
    """
    entry = None
    for info in anomalies.drift_skew_info:
        if list(info.path.step) == [measurement.feature]:
            entry = info
    if entry is None:
        entry = anomalies.drift_skew_info.add()
        entry.path.step.append(measurement.feature)
    entry.drift_measurements.add(
        type=_MEASUREMENT_TYPES[measurement.metric], value=measurement.value, threshold=measurement.threshold
    )
    if measurement.exceeded:
        reason, short = _DRIFT_REASONS[measurement.metric]
        add_anomaly(
            anomalies,
            measurement.feature,
            reason,
            f"{short} to {baseline}: {measurement.value:.4g} > {measurement.threshold:g}",
            f"The {measurement.metric.replace('_', ' ')} between this span's distribution of "
            f"{measurement.feature} and that of {baseline} is {measurement.value:.6g}, above "
            f"the threshold {measurement.threshold:.6g}.",
        )


def _join(first: str | None, second: str) -> str:
    return f"{first} {second}" if first else second
