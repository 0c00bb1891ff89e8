"""ExampleValidator: the data gate. Statistics against the curated schema, and drift.

Inputs: `statistics` (`Split-<split>/FeatureStats.pb`), `schema` (`schema.pbtxt`) and, from the
second span on, `previous_statistics` (the previous span's statistics).
Params: `ValidationConfig` (label_drift_linf, pixel_drift_jsd).
Output `anomalies` (see `pipeline.formats.anomalies`):
  - `Split-<split>/SchemaDiff.pb`: binary tensorflow_metadata Anomalies per split; the train
    split's also carries the drift measurements (`drift_skew_info`) and drift anomalies;
  - `drift.json`: the drift figures and thresholds, or why drift was not checked;
  - `report.txt`: every anomaly by split, feature and type, then the drift figures.
Any ERROR anomaly stops the run (exit status 3); the outputs are written first.
"""

from __future__ import annotations

import json
import logging
import os

from pipeline.core.errors import InputDataError
from pipeline.core.step import StepContext, StepOutcome
from pipeline.formats import anomalies as anomalies_format, schema as schema_format
from pipeline.formats import statistics as stats_format
from pipeline.formats.examples import SPLIT_PREFIX

ENVIRONMENT = "TRAINING"
DRIFT_SPLIT = "train"


def run(ctx: StepContext) -> StepOutcome:
    """Validates every split; returns StepOutcome with `stop_run` set on any ERROR anomaly.

    Raises InputDataError when the schema or a statistics file is missing or unreadable, or when
    drift must be checked but this span's statistics have no train split.
    """
    from components.example_validator.report import failure_summary, format_report

    params = ctx.params
    out_uri = ctx.outputs["anomalies"]
    statistics_uri = ctx.inputs["statistics"].uri
    schema_path = schema_format.schema_path(ctx.inputs["schema"].uri)
    schema = schema_format.read_schema(ctx.inputs["schema"].uri)
    environment = ENVIRONMENT if ENVIRONMENT in schema.default_environment else None
    split_stats = stats_format.read_split_statistics(statistics_uri)

    results = validate_splits(split_stats, schema, environment)
    drift, drift_note = None, "not checked: no previous span statistics (first span)"
    previous = ctx.inputs.get("previous_statistics")
    if previous is not None:
        drift, drift_note = _check_drift_into(results, split_stats, statistics_uri, previous, params)

    split_findings = {split: anomalies_format.findings(anomalies) for split, anomalies in results.items()}
    split_counts = {split: int(stats.datasets[0].num_examples) for split, stats in split_stats.items()}
    _write_outputs(out_uri, results, drift, drift_note, format_report(
        statistics_uri=statistics_uri, schema_path=schema_path, environment=environment,
        split_counts=split_counts, split_findings=split_findings, drift=drift,
        drift_split=DRIFT_SPLIT, drift_note=drift_note))

    for split, items in split_findings.items():
        for f in items:
            ctx.log.log(logging.ERROR if f.is_error else logging.WARNING, "split %s feature %s: %s %s: %s",
                        split, f.feature, f.severity, "+".join(f.reasons), f.description)
    summary = failure_summary(split_findings)
    properties = {
        "passed": summary is None,
        "environment": environment,
        "split_counts": split_counts,
        "anomaly_counts": {s: len(items) for s, items in split_findings.items()},
        "error_counts": {s: sum(f.is_error for f in items) for s, items in split_findings.items()},
        "drift_checked": drift is not None,
        "drift": {f"{m.feature}_{m.metric}": round(m.value, 6) for m in drift.measurements} if drift else {},
        "drift_thresholds": {"label_l_infinity": params.label_drift_linf,
                             "image_jensen_shannon_divergence": params.pixel_drift_jsd},
    }
    outcome = StepOutcome(execution_properties=properties,
                          output_properties={"anomalies": {anomalies_format.SPLIT_NAMES: sorted(results),
                                                           anomalies_format.PASSED: int(summary is None)}})
    if summary is not None:
        outcome.stop_run = f"data validation failed: {summary}"
        outcome.stop_exit_code = 3
        ctx.log.error("%s", outcome.stop_run)
    else:
        ctx.log.info("data validation passed for splits %s", ", ".join(sorted(results)))
    return outcome


def validate_splits(split_stats: dict, schema, environment) -> dict:
    """{split: Anomalies} of each split's statistics against `schema` in `environment`.

    An empty split, which TFDV only flags with `data_missing`, gets a dataset-level ERROR.
    """
    import tensorflow_data_validation as tfdv

    from components.example_validator.anomalies import flag_missing_data

    results = {}
    for split, stats in split_stats.items():
        results[split] = tfdv.validate_statistics(stats, schema, environment=environment)
        flag_missing_data(results[split])
    return results


def _check_drift_into(results: dict, split_stats: dict, statistics_uri: str, previous, params) -> tuple:
    """Measures drift of the train split against `previous` and records it in `results`.

    Returns (DriftResult, a note naming the statistics compared against).
    """
    from components.example_validator.anomalies import add_anomaly, add_drift
    from components.example_validator.drift_check import check_drift

    if DRIFT_SPLIT not in split_stats:
        raise InputDataError(f"statistics artifact {statistics_uri}: no {SPLIT_PREFIX}{DRIFT_SPLIT} "
                             "to compare with the previous span")
    previous_path = stats_format.split_stats_path(previous.uri, DRIFT_SPLIT)
    # A previous artifact without a train split leaves nothing to compare: check_drift reports
    # that as missing control data (an ERROR), it is not skipped.
    previous_dataset = (stats_format.load_stats_file(previous_path).datasets[0]
                        if os.path.isfile(previous_path) else _empty_dataset())
    drift = check_drift(split_stats[DRIFT_SPLIT].datasets[0], previous_dataset,
                        params.label_drift_linf, params.pixel_drift_jsd)
    for problem in drift.problems:
        add_anomaly(results[DRIFT_SPLIT], problem.feature, problem.reason_type,
                    problem.short_description, problem.description)
    for measurement in drift.measurements:
        add_drift(results[DRIFT_SPLIT], measurement)
    spans = previous.properties.get(stats_format.SPANS)
    return drift, f"against {previous_path}" + (f" (spans {list(spans)})" if spans else "")


def _write_outputs(out_uri: str, results: dict, drift, drift_note: str, report: str) -> None:
    """Writes Split-*/SchemaDiff.pb, drift.json and report.txt."""
    anomalies_format.write_split_anomalies(out_uri, results)
    drift_json = {"checked": drift is not None, "split": DRIFT_SPLIT, "note": drift_note,
                  "measurements": [m.to_json() for m in drift.measurements] if drift else [],
                  "problems": [{"feature": p.feature, "description": p.description}
                               for p in drift.problems] if drift else []}
    _write_text(os.path.join(out_uri, anomalies_format.DRIFT_FILE),
                json.dumps(drift_json, indent=1, sort_keys=True) + "\n")
    _write_text(os.path.join(out_uri, anomalies_format.REPORT_FILE), report)


def _empty_dataset():
    from tensorflow_metadata.proto.v0 import statistics_pb2

    return statistics_pb2.DatasetFeatureStatistics()


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
