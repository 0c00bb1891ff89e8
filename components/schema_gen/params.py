"""SchemaGen's parameters (the schema half of `[validation]`), checked when an instance is
built (`pipeline.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.params import ANY, Params, local_path


@dataclass(frozen=True)
class SchemaGenParams(Params):
    """The curated schema the gate validates against, and the inferred-schema report."""

    SECTION = "validation"

    # The curated schema (text protobuf), read by content digest (the application supplies the
    # default: its schema/schema.pbtxt).
    schema_path: str
    # Also infer a schema from the statistics and write its diff against the curated one.
    infer_schema_report: bool = True

    CHECKS = {
        "schema_path": local_path(required=True),
        "infer_schema_report": ANY,  # true or false
    }
