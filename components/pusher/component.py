"""Pusher's declaration (read by `pipeline.core.step.declare`); params `PusherParams` with its
serving_dir set."""

from __future__ import annotations

from typing import Any

from components.pusher.params import PusherParams
from pipeline.core.step import Input
from pipeline.formats import blessing, examples, model, pushed_model

INPUTS = {
    "model": Input(model.ARTIFACT_TYPE),
    "blessing": Input(blessing.ARTIFACT_TYPE),
    "examples": Input(examples.ARTIFACT_TYPE),
    # The model serving now (absent before the first push).
    "baseline_model": Input(model.ARTIFACT_TYPE, optional=True),
}
OUTPUTS = {"pushed_model": pushed_model.ARTIFACT_TYPE}
PARAMS = PusherParams
# The pusher runs every time: what serves now may have changed since its last run.
CACHEABLE = False

SUMMARY_KEYS = ("pushed", "version", "reason", "serving_dir")


def summary(report: Any, params: PusherParams) -> dict:
    """{"push": what was published}; a pusher that did not run pushed nothing, and says why."""
    if report.properties:
        return {"push": {k: report.properties[k] for k in SUMMARY_KEYS if k in report.properties}}
    return {"push": {"pushed": 0, "version": 0, "reason": report.error or report.reason}}
