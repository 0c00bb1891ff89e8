"""ExampleValidator's declaration (read by `pipeline.core.step.declare`): this span's
statistics against the schema and a drift baseline; params `ExampleValidatorParams`."""

from __future__ import annotations

from components.example_validator.params import ExampleValidatorParams
from pipeline.core.step import Input
from pipeline.formats import anomalies, reference, schema, statistics

INPUTS = {
    "statistics": Input(statistics.ARTIFACT_TYPE),
    "schema": Input(schema.ARTIFACT_TYPE),
    # The drift baseline: the previous span's statistics, or for a first span the reference.
    "previous_statistics": Input(statistics.ARTIFACT_TYPE, optional=True),
    "reference_statistics": Input(reference.ARTIFACT_TYPE, optional=True),
}
OUTPUTS = {"anomalies": anomalies.ARTIFACT_TYPE}
PARAMS = ExampleValidatorParams
