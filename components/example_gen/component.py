"""ExampleGen's declaration (read by `pipeline.core.step.declare`): its raw-data input (the
spans to read), its output, and its run-summary entry (`data`); params `DataParams`."""

from __future__ import annotations

from typing import Any

from components.example_gen.params import DataParams
from components.example_gen.spans import raw_data_properties
from pipeline.core.artifacts import CONTENT_DIGEST
from pipeline.core.metadata import to_step_artifact
from pipeline.core.step import Artifact, Input, InputSpec
from pipeline.formats import examples as examples_format
from pipeline.formats import idx

INPUTS = {"raw_data": Input(idx.RAW_DATA_TYPE)}
OUTPUTS = {"examples": examples_format.ARTIFACT_TYPE}
PARAMS = DataParams


def raw_data_input(data_root: str, span: int | None, window_spans: int) -> InputSpec:
    """The `raw_data` input: a resolver registering the spans to read as a `RawData` artifact.

    uri = data_root; properties {"spans", "span_dirs", "fingerprint"} (the raw files' content
    digest, so new or changed files invalidate the cache). Resolving raises ConfigError /
    InputDataError (from span discovery) when the data root is unusable.
    """

    def resolve(store: Any, _resolved: Any) -> Artifact:
        properties = dict(raw_data_properties(data_root, span, window_spans))
        # The raw files' fingerprint is what the core compares for this input.
        properties[CONTENT_DIGEST] = properties[idx.FINGERPRINT]
        artifact_id = store.put_external_artifact(idx.RAW_DATA_TYPE, data_root, properties)
        return to_step_artifact(store.artifact(artifact_id))

    return InputSpec(resolver=resolve)


def summary(report: Any, params: DataParams) -> dict:
    """{"data": the data root and the spans this run read ([] when they did not resolve)}."""
    raw = report.inputs.get("raw_data")
    spans = list(raw.properties.get(idx.SPANS, [])) if raw is not None else []
    return {"data": {"data_root": params.data_root, "spans": spans}}
