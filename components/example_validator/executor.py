"""ExampleValidator: the data gate. Statistics against the curated schema, and drift.

Inputs: `statistics` (`Split-<split>/FeatureStats.pb`), `examples` (read for train/test
leakage: every split's digits against those of `test`), `schema` (`schema.pbtxt`) and at most
one drift baseline: from the second span on `previous_statistics` (the previous span's
statistics); on a pipeline root's first span `reference_statistics` (the reference JSON of
`pipeline.formats.reference`, an external file registered by content digest), unless
`reference_check` is off.
Params: `ExampleValidatorParams` (label_drift_linf and pixel_drift_jsd against the previous span;
reference_check, reference_label_drift_linf and reference_pixel_drift_jsd against the
reference); leakage_max_exact and leakage_max_near_rate.
Output `anomalies` (see `pipeline.formats.anomalies`):
  - `Split-<split>/SchemaDiff.pb`: binary tensorflow_metadata Anomalies per split; the train
    split's also carries the drift measurements (`drift_skew_info`) and drift anomalies;
  - `drift.json`: the drift figures, thresholds and baseline, or why drift was not checked;
  - `leakage.json`: training and eval digits found in the test split, and the limits;
  - `report.txt`: every anomaly by split, feature and type, then the drift figures.
Any ERROR anomaly, or leakage above a limit, stops the run (exit status 3); the outputs are
written first.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import tensorflow_data_validation as tfdv

from components.example_validator.anomalies import add_anomaly, add_drift, flag_missing_data
from components.example_validator.drift_check import Baseline, check_drift, statistics_histograms
from components.example_validator.leakage import LeakageResult, exceeded, find_leakage
from components.example_validator.params import ExampleValidatorParams
from components.example_validator.report import failure_summary, format_report
from pipeline.core.errors import InputDataError, PipelineError
from pipeline.core.external import CONTENT_DIGEST, read_verified
from pipeline.core.step import StepContext, StepOutcome
from pipeline.formats import anomalies as anomalies_format
from pipeline.formats import examples as examples_format
from pipeline.formats import schema as schema_format
from pipeline.formats import statistics as stats_format
from pipeline.formats.examples import SPLIT_PREFIX
from pipeline.formats.reference import parse_reference

ENVIRONMENT = "TRAINING"
DRIFT_SPLIT = "train"
# The split the evaluator measures the candidate on: no other split may hold its digits.
TEST_SPLIT = "test"
PREVIOUS_SPAN, REFERENCE = "previous_span", "reference"


@dataclass(frozen=True)
class DriftPlan:
    """What drift is measured against, with which limits; `note` names the file compared with."""

    kind: str  # PREVIOUS_SPAN or REFERENCE
    baseline: Baseline
    label_threshold: float
    pixel_threshold: float
    note: str


def run(ctx: StepContext[ExampleValidatorParams]) -> StepOutcome:
    """Validates every split; returns StepOutcome with `stop_run` set on any ERROR anomaly.

    Raises InputDataError when the schema, a statistics file or the reference is missing,
    unreadable or changed since the run resolved it, when drift must be checked but this
    span's statistics have no train split, or when the examples have no test split or cannot
    be read in full; PipelineError when `reference_check` is on but
    neither baseline was given (a wiring error: the gate never skips drift silently).
    """
    params = ctx.params
    out_uri = ctx.outputs["anomalies"]
    statistics_uri = ctx.inputs["statistics"].uri
    schema_path = schema_format.schema_path(ctx.inputs["schema"].uri)
    schema = schema_format.read_schema(ctx.inputs["schema"].uri)
    environment = ENVIRONMENT if ENVIRONMENT in schema.default_environment else None
    split_stats = stats_format.read_split_statistics(statistics_uri)

    results = validate_splits(split_stats, schema, environment)
    plan = drift_plan(ctx.inputs, params)
    drift = None
    if plan is None:
        drift_note = "not checked: first span (no previous span) and validation.reference_check = false"
    else:
        drift, drift_note = _check_drift_into(results, split_stats, statistics_uri, plan), plan.note

    leakage, read_seconds, leakage_seconds = _check_leakage(ctx.inputs["examples"])
    leakage_failure = exceeded(leakage, params.leakage_max_exact, params.leakage_max_near_rate)
    leakage_json = {
        **leakage.to_json(),
        "max_exact": params.leakage_max_exact,
        "max_near_rate": params.leakage_max_near_rate,
        "exceeded": leakage_failure is not None,
        "seconds": round(leakage_seconds, 3),
        "read_seconds": round(read_seconds, 3),
    }

    split_findings = {split: anomalies_format.findings(anomalies) for split, anomalies in results.items()}
    split_counts = {split: int(stats.datasets[0].num_examples) for split, stats in split_stats.items()}
    _write_outputs(
        out_uri,
        results,
        drift,
        drift_note,
        plan,
        leakage_json,
        format_report(
            statistics_uri=statistics_uri,
            schema_path=schema_path,
            environment=environment,
            split_counts=split_counts,
            split_findings=split_findings,
            drift=drift,
            drift_split=DRIFT_SPLIT,
            drift_note=drift_note,
            leakage=leakage_json,
        ),
    )

    for split, items in split_findings.items():
        for f in items:
            ctx.log.log(
                logging.ERROR if f.is_error else logging.WARNING,
                "split %s feature %s: %s %s: %s",
                split,
                f.feature,
                f.severity,
                "+".join(f.reasons),
                f.description,
            )
    summary = (
        "; ".join(line for line in (failure_summary(split_findings), leakage_failure) if line is not None)
        or None
    )
    properties = {
        "passed": summary is None,
        "environment": environment,
        "split_counts": split_counts,
        "anomaly_counts": {s: len(items) for s, items in split_findings.items()},
        "error_counts": {s: sum(f.is_error for f in items) for s, items in split_findings.items()},
        "drift_checked": drift is not None,
        # What the drift was measured against: "previous span 1", "the shipped MNIST reference".
        "drift_baseline": drift.baseline if drift else None,
        "drift_baseline_kind": plan.kind if plan else None,
        "drift": {f"{m.feature}_{m.metric}": round(m.value, 6) for m in drift.measurements} if drift else {},
        "drift_thresholds": _thresholds(plan, params),
        "leakage": leakage_json,
    }
    outcome = StepOutcome(
        execution_properties=properties,
        output_properties={
            "anomalies": {
                anomalies_format.SPLIT_NAMES: sorted(results),
                anomalies_format.PASSED: int(summary is None),
                anomalies_format.LEAKAGE_EXACT: leakage.exact_count,
                anomalies_format.LEAKAGE_NEAR: leakage.near_count,
            }
        },
    )
    if summary is not None:
        outcome.stop_run = f"data validation failed: {summary}"
        outcome.stop_exit_code = 3
        ctx.log.error("%s", outcome.stop_run)
    else:
        ctx.log.info(
            "data validation passed for splits %s (drift %s; test digits in %s: %d exact, %d near)",
            ", ".join(sorted(results)),
            f"against {drift.baseline}" if drift else "not checked",
            "+".join(leakage.checked),
            leakage.exact_count,
            leakage.near_count,
        )
    return outcome


def _check_leakage(examples) -> tuple[LeakageResult, float, float]:
    """Every split's digits of the Examples artifact `examples` against its test split; returns
    the result, the seconds spent reading the examples, and the seconds of the whole check.

    Raises InputDataError when there is no test split, or a split cannot be read in full (see
    `examples_format.read_images`, `check_recorded_counts`).
    """
    started = time.monotonic()
    splits = examples_format.split_dirs(examples.uri, "examples artifact")
    if TEST_SPLIT not in splits:
        raise InputDataError(
            f"examples artifact {examples.uri}: no {SPLIT_PREFIX}{TEST_SPLIT} to check train/test leakage against"
        )
    images = {split: examples_format.read_images(examples.uri, split) for split in splits}
    examples_format.check_recorded_counts(examples, {split: len(a) for split, a in images.items()})
    read_seconds = time.monotonic() - started
    test = images.pop(TEST_SPLIT)
    return find_leakage(images, test), read_seconds, time.monotonic() - started


def validate_splits(split_stats: dict, schema, environment) -> dict:
    """{split: Anomalies} of each split's statistics against `schema` in `environment`.

    An empty split, which TFDV only flags with `data_missing`, gets a dataset-level ERROR.
    """
    results = {}
    for split, stats in split_stats.items():
        results[split] = tfdv.validate_statistics(stats, schema, environment=environment)
        flag_missing_data(results[split])
    return results


def drift_plan(inputs, params: ExampleValidatorParams) -> DriftPlan | None:
    """The baseline drift is measured against: the previous span when there is one, else the
    reference; None only when there is neither and `params.reference_check` is off.

    Raises PipelineError when `reference_check` is on and no baseline was given, InputDataError
    when the reference cannot be read (see `_reference_plan`).
    """
    previous = inputs.get("previous_statistics")
    if previous is not None:
        return _previous_plan(previous, params)
    reference = inputs.get("reference_statistics")
    if reference is not None:
        return _reference_plan(reference, params)
    if params.reference_check:
        raise PipelineError(
            "example_validator: validation.reference_check is on, but the step got neither "
            "previous_statistics nor reference_statistics to measure drift against"
        )
    return None


def _previous_plan(previous, params: ExampleValidatorParams) -> DriftPlan:
    previous_path = stats_format.split_stats_path(previous.uri, DRIFT_SPLIT)
    # A previous artifact without a train split leaves nothing to compare: check_drift reports
    # that as missing control data (an ERROR), it is not skipped.
    histograms = (
        statistics_histograms(stats_format.load_stats_file(previous_path).datasets[0])
        if os.path.isfile(previous_path)
        else {}
    )
    spans = list(previous.properties.get(stats_format.SPANS) or [])
    if not spans:
        name = "the previous span"
    else:
        name = f"previous span{'s' if len(spans) > 1 else ''} {', '.join(str(s) for s in spans)}"
    return DriftPlan(
        PREVIOUS_SPAN,
        Baseline(name, histograms),
        params.label_drift_linf,
        params.pixel_drift_jsd,
        f"statistics {previous_path}",
    )


def _reference_plan(reference, params: ExampleValidatorParams) -> DriftPlan:
    """The reference as a baseline; InputDataError when it is unreadable, malformed, or changed
    since the run registered its digest (the cache key would not describe what was read)."""
    parsed = parse_reference(read_verified(reference), reference.uri)
    digest = str(reference.properties.get(CONTENT_DIGEST, ""))
    return DriftPlan(
        REFERENCE,
        Baseline(parsed.name, parsed.histograms, is_reference=True),
        params.reference_label_drift_linf,
        params.reference_pixel_drift_jsd,
        f"reference statistics {reference.uri} (sha256 {digest[:16]}, "
        f"{parsed.num_examples} examples), as the first span has no previous span",
    )


def _thresholds(plan: DriftPlan | None, params: ExampleValidatorParams) -> dict:
    """The limits that applied (those against the previous span when drift was not checked)."""
    label, pixel = (
        (plan.label_threshold, plan.pixel_threshold)
        if plan
        else (params.label_drift_linf, params.pixel_drift_jsd)
    )
    return {"label_l_infinity": label, "image_jensen_shannon_divergence": pixel}


def _check_drift_into(results: dict, split_stats: dict, statistics_uri: str, plan: DriftPlan):
    """Measures drift of the train split against `plan`'s baseline and records it in `results`."""
    if DRIFT_SPLIT not in split_stats:
        raise InputDataError(
            f"statistics artifact {statistics_uri}: no {SPLIT_PREFIX}{DRIFT_SPLIT} "
            f"to compare with {plan.baseline.name}"
        )
    drift = check_drift(
        split_stats[DRIFT_SPLIT].datasets[0], plan.baseline, plan.label_threshold, plan.pixel_threshold
    )
    for problem in drift.problems:
        add_anomaly(
            results[DRIFT_SPLIT],
            problem.feature,
            problem.reason_type,
            problem.short_description,
            problem.description,
        )
    for measurement in drift.measurements:
        add_drift(results[DRIFT_SPLIT], measurement, drift.baseline)
    return drift


def _write_outputs(
    out_uri: str,
    results: dict,
    drift,
    drift_note: str,
    plan: DriftPlan | None,
    leakage_json: dict,
    report: str,
) -> None:
    """Writes Split-*/SchemaDiff.pb, drift.json, leakage.json and report.txt."""
    anomalies_format.write_split_anomalies(out_uri, results)
    drift_json = {
        "checked": drift is not None,
        "split": DRIFT_SPLIT,
        "note": drift_note,
        "baseline": drift.baseline if drift else None,
        "baseline_kind": plan.kind if plan else None,
        "measurements": [m.to_json() for m in drift.measurements] if drift else [],
        "problems": [{"feature": p.feature, "description": p.description} for p in drift.problems]
        if drift
        else [],
    }
    _write_text(
        os.path.join(out_uri, anomalies_format.DRIFT_FILE),
        json.dumps(drift_json, indent=1, sort_keys=True) + "\n",
    )
    _write_text(
        os.path.join(out_uri, anomalies_format.LEAKAGE_FILE),
        json.dumps(leakage_json, indent=1, sort_keys=True) + "\n",
    )
    _write_text(os.path.join(out_uri, anomalies_format.REPORT_FILE), report)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
