"""SchemaGen's declaration (read by `pipeline.core.step.declare`); params: a `ValidationConfig`."""

from __future__ import annotations

from pipeline.formats import schema

INPUTS = ("statistics", "curated_schema")
OUTPUTS = {"schema": schema.ARTIFACT_TYPE}
