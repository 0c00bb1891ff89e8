"""Trainer's declaration (read by `pipeline.core.step.declare`); params: a `TrainerConfig`."""

from __future__ import annotations

from pipeline.core.external import CONTENT_DIGEST
from pipeline.formats import model

INPUTS = ("examples", "schema", "base_model", "module_file")
OUTPUTS = {"model": model.ARTIFACT_TYPE, "model_run": model.RUN_ARTIFACT_TYPE}


def summary(report, params) -> dict:
    """{"model_module": {"path", "sha256", "entry_point"}}: the module file the trainer's cache
    key holds by content (entry_point once the trainer has run or was cached; {} when the
    module did not resolve)."""
    module = report.inputs.get("module_file")
    if module is None:
        return {}
    return {
        "model_module": {
            "path": module.uri,
            "sha256": module.properties.get(CONTENT_DIGEST),
            "entry_point": (report.properties or {}).get("model_entry_point"),
        }
    }
