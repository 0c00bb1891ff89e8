"""Trainer's declaration (read by `pipeline.core.step.declare`); params: a `TrainerConfig`."""

from __future__ import annotations

from pipeline.formats import model

INPUTS = ("examples", "schema", "base_model")
OUTPUTS = {"model": model.ARTIFACT_TYPE, "model_run": model.RUN_ARTIFACT_TYPE}
