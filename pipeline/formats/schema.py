"""Schema: one TFMD `Schema` proto in text format, `schema.pbtxt`.

SchemaGen writes the curated schema there byte for byte, and with its report option also
`inferred_schema.pbtxt` and `schema_report.txt`. Property: `feature_count`.
"""

from __future__ import annotations

import os

from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.core.errors import InputDataError, PipelineError

ARTIFACT_TYPE = "Schema"
# The curated schema file outside the pipeline root, registered by content digest.
CURATED_TYPE = "CuratedSchema"
FEATURE_COUNT = "feature_count"

SCHEMA_FILE = "schema.pbtxt"
INFERRED_FILE = "inferred_schema.pbtxt"
REPORT_FILE = "schema_report.txt"


def schema_path(schema_uri: str) -> str:
    """The schema file of a Schema artifact."""
    return os.path.join(schema_uri, SCHEMA_FILE)


def parse_schema(data: bytes, where: str, error: type[PipelineError] = InputDataError):
    """The tensorflow_metadata Schema in the text-format bytes `data`.

    where: how the message names the file. Raises `error` when `data` is not UTF-8 or not a
    Schema text proto.
    """
    try:
        return text_format.Parse(data.decode("utf-8"), schema_pb2.Schema())
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise error(f"{where}: not a valid tensorflow_metadata Schema text proto: {e}") from e


def read_schema(schema_uri: str):
    """The Schema of the Schema artifact at `schema_uri`; InputDataError naming the file when it
    is missing, unreadable or not a Schema text proto."""
    path = schema_path(schema_uri)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputDataError(f"schema file {path}: cannot be read ({e.strerror or e})") from e
    return parse_schema(data, f"schema file {path}")
