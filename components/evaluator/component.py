"""Evaluator's declaration (read by `pipeline.core.step.declare`): the candidate and the
serving model on the test split, its evaluation and blessing, params `EvaluatorParams`."""

from __future__ import annotations

from typing import Any

from components.evaluator.params import EvaluatorParams
from pipeline.core.step import Input
from pipeline.formats import blessing, evaluation, examples, model

INPUTS = {
    "examples": Input(examples.ARTIFACT_TYPE),
    "model": Input(model.ARTIFACT_TYPE),
    # The serving model; absent on a first run or when the candidate is the serving model.
    "baseline_model": Input(model.ARTIFACT_TYPE, optional=True),
}
OUTPUTS = {"evaluation": evaluation.ARTIFACT_TYPE, "blessing": blessing.ARTIFACT_TYPE}
PARAMS = EvaluatorParams

SUMMARY_KEYS = ("blessed", "reasons", "metrics", "checks", "policy", "alpha", "margin", "comparisons")


def summary(report: Any, params: EvaluatorParams) -> dict:
    """{"evaluation": the decision and metrics} when the evaluator recorded any; else {}."""
    if not report.properties:
        return {}
    return {"evaluation": {k: report.properties[k] for k in SUMMARY_KEYS if k in report.properties}}
