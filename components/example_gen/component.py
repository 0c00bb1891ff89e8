"""ExampleGen's declaration (read by `pipeline.core.step.declare`): its raw-data input (the
spans to read), its output, and its run-summary entry (`data`); params `DataParams`."""

from __future__ import annotations

import os
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


def raw_data_input(data_root: str, span: int | None, window_spans: int, ready_marker: str = "") -> InputSpec:
    """The `raw_data` input: a resolver registering the spans to read as a `RawData` artifact.

    uri = data_root; properties {"spans", "span_dirs", "fingerprint"} (the span numbers and the
    raw files' content digest, so new or changed files, or a span whose `ready_marker` landed
    since, invalidate the cache). Resolving raises ConfigError / InputDataError (from span
    discovery) when the data root is unusable or no complete span is there.
    """

    def resolve(store: Any, _resolved: Any) -> Artifact:
        properties = dict(raw_data_properties(data_root, span, window_spans, ready_marker))
        # The raw files' fingerprint is what the core compares for this input.
        properties[CONTENT_DIGEST] = properties[idx.FINGERPRINT]
        artifact_id = store.put_external_artifact(idx.RAW_DATA_TYPE, data_root, properties)
        return to_step_artifact(store.artifact(artifact_id))

    return InputSpec(resolver=resolve)


def summary(report: Any, params: DataParams) -> dict:
    """{"data": the data root, the spans this run read ([] when they did not resolve) and, once
    they resolved, the root's "layout": "flat" (the files directly in it) or "spans"}."""
    raw = report.inputs.get("raw_data")
    if raw is None:
        return {"data": {"data_root": params.data_root, "spans": []}}
    dirs = [os.path.normpath(d) for d in raw.properties.get(idx.SPAN_DIRS, [])]
    layout = "flat" if dirs == [os.path.normpath(raw.uri)] else "spans"
    spans = list(raw.properties.get(idx.SPANS, []))
    return {"data": {"data_root": params.data_root, "spans": spans, "layout": layout}}
