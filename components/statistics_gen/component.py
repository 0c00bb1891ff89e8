"""StatisticsGen's declaration (read by `pipeline.core.step.declare`): Examples in, their
statistics out; it takes no parameters."""

from __future__ import annotations

from pipeline.core.step import Input
from pipeline.formats import examples, statistics

INPUTS = {"examples": Input(examples.ARTIFACT_TYPE)}
OUTPUTS = {"statistics": statistics.ARTIFACT_TYPE}
PARAMS = None
