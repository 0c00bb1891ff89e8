"""ExampleValidator's declaration (read by `pipeline.core.step.declare`): this span's
statistics against the schema and a drift baseline, its examples for train/test leakage; params `ExampleValidatorParams`."""

from __future__ import annotations

from components.example_validator.params import ExampleValidatorParams
from pipeline.core.step import Input
from pipeline.formats import anomalies, examples, reference, schema, statistics

INPUTS = {
    "statistics": Input(statistics.ARTIFACT_TYPE),
    # Read for train/test leakage: training and eval digits equal to a test digit.
    "examples": Input(examples.ARTIFACT_TYPE),
    "schema": Input(schema.ARTIFACT_TYPE),
    # The drift baseline: the previous span's statistics, or for a first span the reference.
    "previous_statistics": Input(statistics.ARTIFACT_TYPE, optional=True),
    "reference_statistics": Input(reference.ARTIFACT_TYPE, optional=True),
}
OUTPUTS = {"anomalies": anomalies.ARTIFACT_TYPE}
PARAMS = ExampleValidatorParams
