"""SchemaGen: publishes the curated schema; optionally reports how it differs from an inferred one.

Params: `SchemaGenParams` (`infer_schema_report`). Inputs: `curated_schema` (the file at
`validation.schema_path`, fingerprinted by content) and `statistics` (used only for the report).
Output `schema`:
  - `schema.pbtxt`: the curated schema file, byte for byte (comments kept), once it parsed and
    passed the checks in `check_schema`;
  - with `infer_schema_report`: `inferred_schema.pbtxt` (tfdv.infer_schema over the train split's
    statistics) and `schema_report.txt`, the field-by-field differences.
"""

from __future__ import annotations

import os

from tensorflow_metadata.proto.v0 import schema_pb2

from components.schema_gen.params import SchemaGenParams
from components.schema_gen.schema_diff import schema_differences
from pipeline.core.errors import ConfigError
from pipeline.core.external import CONTENT_DIGEST, read_verified
from pipeline.core.step import Artifact, StepContext, StepOutcome
from pipeline.formats import schema as schema_format
from pipeline.formats import statistics as stats_format
from pipeline.formats.examples import split_dirs

REPORT_SPLIT = "train"


def load_curated_schema(curated: Artifact):
    """Parses and checks the curated schema artifact (a file outside the pipeline root).

    Returns (schema proto, the file's bytes as fingerprinted by the run). Raises ConfigError
    naming the file when it is missing, unparseable or fails `check_schema`, and InputDataError
    when it changed after the run fingerprinted it.
    """
    where = f"schema file {curated.uri} (config key validation.schema_path)"
    if not os.path.isfile(curated.uri):
        raise ConfigError(f"{where}: no such file")
    data = read_verified(curated)
    schema = schema_format.parse_schema(data, where, error=ConfigError)
    problem = check_schema(schema)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return schema, data


def check_schema(schema) -> str:
    """Returns what makes `schema` unusable as the data gate's schema, or "" when nothing does.

    Rules: at least one feature; unique feature names; every feature has a type; every
    environment a feature names is a declared `default_environment` (a typo would otherwise
    silently exempt the feature from validation).
    """
    if not schema.feature:
        return "declares no feature"
    seen = set()
    environments = set(schema.default_environment)
    for feature in schema.feature:
        if feature.name in seen:
            return f"feature {feature.name!r} is declared twice"
        seen.add(feature.name)
        if feature.type == schema_pb2.TYPE_UNKNOWN:
            return f"feature {feature.name!r} has no type"
        for env in list(feature.in_environment) + list(feature.not_in_environment):
            if env not in environments:
                return (
                    f"feature {feature.name!r} names environment {env!r}, which is not a "
                    f"default_environment ({', '.join(sorted(environments)) or 'none declared'})"
                )
    return ""


def run(ctx: StepContext[SchemaGenParams]) -> StepOutcome:
    """Writes the curated schema (and the inferred-schema report) into the `schema` output.

    Raises ConfigError for a missing, unparseable or inconsistent curated schema, and
    InputDataError when the report is asked for but the statistics cannot be read.
    """
    params = ctx.params
    out_uri = ctx.outputs["schema"]
    curated = ctx.inputs["curated_schema"]
    schema, data = load_curated_schema(curated)
    with open(schema_format.schema_path(out_uri), "wb") as f:
        f.write(data)
    ctx.log.info("curated schema %s: %d features", curated.uri, len(schema.feature))

    properties = {
        "schema_path": curated.uri,
        "schema_sha256": curated.properties[CONTENT_DIGEST],
        "feature_count": len(schema.feature),
        "features": [f.name for f in schema.feature],
        "environments": list(schema.default_environment),
        "min_examples_count": int(schema.dataset_constraints.min_examples_count),
    }
    if params.infer_schema_report:
        differences, split = _write_inference_report(ctx, schema, out_uri)
        properties["inferred_from_split"] = split
        properties["inferred_differences"] = len(differences)
    return StepOutcome(
        execution_properties=properties,
        output_properties={"schema": {schema_format.FEATURE_COUNT: len(schema.feature)}},
    )


def _write_inference_report(ctx: StepContext, curated, out_uri: str) -> tuple:
    """Infers a schema from one split's statistics; writes it and the differences report."""
    import tensorflow_data_validation as tfdv  # noqa: PLC0415  TFDV (seconds) only for the inference report

    stats_uri = ctx.inputs["statistics"].uri
    splits = list(split_dirs(stats_uri, "statistics artifact"))
    split = REPORT_SPLIT if REPORT_SPLIT in splits else splits[0]
    path = stats_format.split_stats_path(stats_uri, split)
    stats = stats_format.load_stats_file(path)

    # value_count rather than shape, so the inferred schema compares field by field with ours.
    inferred = tfdv.infer_schema(stats, infer_feature_shape=False)
    tfdv.write_schema_text(inferred, os.path.join(out_uri, schema_format.INFERRED_FILE))
    differences = schema_differences(curated, inferred)
    num_examples = stats.datasets[0].num_examples
    lines = [
        "Curated schema vs. schema inferred by tfdv.infer_schema",
        f"curated:  {ctx.inputs['curated_schema'].uri}",
        f"inferred: from split {split} ({num_examples} examples), {path}",
        "TFDV does not infer value ranges, categorical flags, environments or dataset",
        "constraints: differences in those are expected; the curated schema is what gates.",
        "",
        f"{len(differences)} differences:",
    ] + [f"  {d}" for d in differences]
    with open(os.path.join(out_uri, schema_format.REPORT_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    ctx.log.info("inferred schema differs from the curated one in %d fields", len(differences))
    return differences, split
