"""SchemaGen's declaration (read by `pipeline.core.step.declare`): the statistics and the
curated schema file in, the schema the gate uses out; params `SchemaGenParams`."""

from __future__ import annotations

from components.schema_gen.params import SchemaGenParams
from pipeline.core.step import Input
from pipeline.formats import schema, statistics

INPUTS = {
    "statistics": Input(statistics.ARTIFACT_TYPE),
    "curated_schema": Input(schema.CURATED_TYPE),
}
OUTPUTS = {"schema": schema.ARTIFACT_TYPE}
PARAMS = SchemaGenParams
