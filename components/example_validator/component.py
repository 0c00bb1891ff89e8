"""ExampleValidator's declaration (read by `pipeline.core.step.declare`); params: a `ValidationConfig`."""

from __future__ import annotations

from pipeline.formats import anomalies

INPUTS = ("statistics", "schema", "previous_statistics", "reference_statistics")
OUTPUTS = {"anomalies": anomalies.ARTIFACT_TYPE}
