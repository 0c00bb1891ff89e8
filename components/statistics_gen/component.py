"""StatisticsGen's declaration (read by `pipeline.core.step.declare`); params: None."""

from __future__ import annotations

from pipeline.formats import statistics

INPUTS = ("examples",)
OUTPUTS = {"statistics": statistics.ARTIFACT_TYPE}
