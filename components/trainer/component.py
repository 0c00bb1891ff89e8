"""Trainer's declaration (read by `pipeline.core.step.declare`): Examples, schema, module file
and an optional warm-start model in, the model and its training run out; params `TrainerParams`."""

from __future__ import annotations

from typing import Any

from components.trainer.params import TrainerParams
from pipeline.core.external import CONTENT_DIGEST
from pipeline.core.step import Input
from pipeline.formats import examples, model, module_file, schema

INPUTS = {
    "examples": Input(examples.ARTIFACT_TYPE),
    "schema": Input(schema.ARTIFACT_TYPE),
    # The warm-start source: a pushed model of earlier spans (absent when warm_start is off).
    "base_model": Input(model.ARTIFACT_TYPE, optional=True),
    "module_file": Input(module_file.ARTIFACT_TYPE),
}
OUTPUTS = {"model": model.ARTIFACT_TYPE, "model_run": model.RUN_ARTIFACT_TYPE}
PARAMS = TrainerParams


def summary(report: Any, params: TrainerParams) -> dict:
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
