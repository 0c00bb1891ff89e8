"""Evaluator's declaration (read by `pipeline.core.step.declare`); params: an `EvaluatorConfig`."""

from __future__ import annotations

from pipeline.formats import blessing, evaluation

INPUTS = ("examples", "model", "baseline_model")
OUTPUTS = {"evaluation": evaluation.ARTIFACT_TYPE, "blessing": blessing.ARTIFACT_TYPE}

SUMMARY_KEYS = ("blessed", "reasons", "metrics", "checks", "policy", "alpha", "margin", "comparisons")


def summary(report, params) -> dict:
    """{"evaluation": the decision and metrics} when the evaluator recorded any; else {}."""
    if not report.properties:
        return {}
    return {"evaluation": {k: report.properties[k] for k in SUMMARY_KEYS if k in report.properties}}
