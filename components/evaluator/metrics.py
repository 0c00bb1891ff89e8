"""Turns TFMA's metrics output into plain per-slice dicts for the gate and the reports.

Result shape: {model_name: {slice_name: {metric_name: float}}}, where slice names are
"overall", "<feature>=<value>" (e.g. "label=3"), and metric names are TFMA's names with the
sub key appended for per-class metrics ("precision_class_3_top_1"). Diff metrics (candidate
minus baseline, computed by TFMA) are returned under the key "<candidate>_diff".
"""

from __future__ import annotations

import math

from components.evaluator.blessing import OVERALL

DIFF_SUFFIX = "_diff"


def slice_name(slice_key: tuple) -> str:
    """("label", 3),) -> "label=3"; () -> "overall"; crosses joined with ","."""
    if not slice_key:
        return OVERALL
    parts = []
    for column, value in slice_key:
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        parts.append(f"{column}={value}")
    return ",".join(parts)


def metric_name(key) -> str:
    """A readable unique name for a tfma MetricKey proto (its name plus sub key)."""
    name = key.name
    if key.HasField("sub_key"):
        sub = key.sub_key
        if sub.HasField("class_id"):
            name += f"_class_{sub.class_id.value}"
        if sub.HasField("top_k"):
            name += f"_top_{sub.top_k.value}"
        if sub.HasField("k"):
            name += f"_k_{sub.k.value}"
    return name


def read_metrics(output_path: str, unnamed_model: str) -> dict:
    """Reads the TFMA output at `output_path`; returns {model: {slice: {metric: value}}}.

    unnamed_model: the name to file metrics under whose key has no model name (TFMA leaves the
        name out when a single model is evaluated).
    Only scalar (double) metrics are kept; NaN stays NaN (the gate fails closed on it).
    """
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.slicer import slicer_lib

    result: dict = {}
    for metrics_for_slice in tfma.load_metrics(output_path):
        name = slice_name(slicer_lib.deserialize_slice_key(metrics_for_slice.slice_key))
        for entry in metrics_for_slice.metric_keys_and_values:
            if not entry.value.HasField("double_value"):
                continue
            model = (entry.key.model_name or unnamed_model) + (DIFF_SUFFIX if entry.key.is_diff else "")
            value = float(entry.value.double_value.value)
            result.setdefault(model, {}).setdefault(name, {})[metric_name(entry.key)] = value
    return result


def json_ready(metrics: dict) -> dict:
    """A deep copy with NaN/Inf replaced by None, so it serialises as strict JSON."""
    if isinstance(metrics, dict):
        return {k: json_ready(v) for k, v in metrics.items()}
    if isinstance(metrics, float) and not math.isfinite(metrics):
        return None
    return metrics


def summary(metrics: dict, names=("example_count", "accuracy", "log_loss")) -> dict:
    """Per-slice dict restricted to the headline metrics, for the execution's properties."""
    return {s: {n: v[n] for n in names if n in v} for s, v in metrics.items()}
