"""Pusher's declaration (read by `pipeline.core.step.declare`); params: a `PusherConfig`
with its serving_dir set."""

from __future__ import annotations

from pipeline.formats import pushed_model

INPUTS = ("model", "blessing", "examples", "baseline_model")
OUTPUTS = {"pushed_model": pushed_model.ARTIFACT_TYPE}
# The pusher runs every time: what serves now may have changed since its last run.
CACHEABLE = False

SUMMARY_KEYS = ("pushed", "version", "reason", "serving_dir")


def summary(report, params) -> dict:
    """{"push": what was published}; a pusher that did not run pushed nothing, and says why."""
    if report.properties:
        return {"push": {k: report.properties[k] for k in SUMMARY_KEYS if k in report.properties}}
    return {"push": {"pushed": 0, "version": 0, "reason": report.error or report.reason}}
