"""SchemaGen: publishes the curated schema; optionally reports how it differs from an inferred one.

Params: `ValidationConfig` (`schema_path`, `infer_schema_report`). Input `statistics` (used only
for the report). Output `schema`:
  - `schema.pbtxt`: the curated schema file, byte for byte (comments kept), once it parsed and
    passed the checks in `check_schema`;
  - with `infer_schema_report`: `inferred_schema.pbtxt` (tfdv.infer_schema over the train split's
    statistics) and `schema_report.txt`, the field-by-field differences.
"""

from __future__ import annotations

import os
import shutil

from google.protobuf import message, text_format

from pipeline.digest import file_digest
from pipeline.errors import ConfigError, InputDataError
from pipeline.step import StepContext, StepOutcome

SCHEMA_FILE = "schema.pbtxt"
INFERRED_FILE = "inferred_schema.pbtxt"
REPORT_FILE = "schema_report.txt"
STATS_FILE = "FeatureStats.pb"
REPORT_SPLIT = "train"


def load_curated_schema(path: str):
    """Parses and checks the curated schema at `path`; ConfigError naming the file otherwise."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    where = f"schema file {path} (config key validation.schema_path)"
    if not os.path.isfile(path):
        raise ConfigError(f"{where}: no such file")
    try:
        with open(path, "r", encoding="utf-8") as f:
            schema = text_format.Parse(f.read(), schema_pb2.Schema())
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise ConfigError(f"{where}: not a valid tensorflow_metadata Schema: {e}") from e
    problem = check_schema(schema)
    if problem:
        raise ConfigError(f"{where}: {problem}")
    return schema


def check_schema(schema) -> str:
    """Returns what makes `schema` unusable as the data gate's schema, or "" when nothing does.

    Rules: at least one feature; unique feature names; every feature has a type; every
    environment a feature names is a declared `default_environment` (a typo would otherwise
    silently exempt the feature from validation).
    """
    from tensorflow_metadata.proto.v0 import schema_pb2

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
                return (f"feature {feature.name!r} names environment {env!r}, which is not a "
                        f"default_environment ({', '.join(sorted(environments)) or 'none declared'})")
    return ""


def run(ctx: StepContext) -> StepOutcome:
    """Writes the curated schema (and the inferred-schema report) into the `schema` output.

    Raises ConfigError for a missing, unparseable or inconsistent curated schema, and
    InputDataError when the report is asked for but the statistics cannot be read.
    """
    params = ctx.params
    out_uri = ctx.outputs["schema"]
    schema = load_curated_schema(params.schema_path)
    shutil.copyfile(params.schema_path, os.path.join(out_uri, SCHEMA_FILE))
    ctx.log.info("curated schema %s: %d features", params.schema_path, len(schema.feature))

    properties = {
        "schema_path": params.schema_path,
        "schema_sha256": file_digest(params.schema_path),
        "feature_count": len(schema.feature),
        "features": [f.name for f in schema.feature],
        "environments": list(schema.default_environment),
        "min_examples_count": int(schema.dataset_constraints.min_examples_count),
    }
    if params.infer_schema_report:
        differences, split = _write_inference_report(ctx, schema, out_uri)
        properties["inferred_from_split"] = split
        properties["inferred_differences"] = len(differences)
    return StepOutcome(execution_properties=properties,
                       output_properties={"schema": {"feature_count": len(schema.feature)}})


def _write_inference_report(ctx: StepContext, curated, out_uri: str) -> tuple:
    """Infers a schema from one split's statistics; writes it and the differences report."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import statistics_pb2

    from components.schema_gen.schema_diff import schema_differences

    stats_uri = ctx.inputs["statistics"].uri
    splits = sorted(n[len("Split-"):] for n in os.listdir(stats_uri) if n.startswith("Split-"))
    if not splits:
        raise InputDataError(f"statistics artifact {stats_uri}: no Split-* directory")
    split = REPORT_SPLIT if REPORT_SPLIT in splits else splits[0]
    path = os.path.join(stats_uri, f"Split-{split}", STATS_FILE)
    try:
        with open(path, "rb") as f:
            stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(f.read())
    except OSError as e:
        raise InputDataError(f"statistics file {path}: cannot be read ({e.strerror})") from e
    except message.DecodeError as e:
        raise InputDataError(f"statistics file {path}: not a binary DatasetFeatureStatisticsList") from e

    # value_count rather than shape, so the inferred schema compares field by field with ours.
    inferred = tfdv.infer_schema(stats, infer_feature_shape=False)
    tfdv.write_schema_text(inferred, os.path.join(out_uri, INFERRED_FILE))
    differences = schema_differences(curated, inferred)
    num_examples = stats.datasets[0].num_examples if stats.datasets else 0
    lines = [
        "Curated schema vs. schema inferred by tfdv.infer_schema",
        f"curated:  {ctx.params.schema_path}",
        f"inferred: from split {split} ({num_examples} examples), {path}",
        "TFDV does not infer value ranges, categorical flags, environments or dataset",
        "constraints: differences in those are expected; the curated schema is what gates.",
        "",
        f"{len(differences)} differences:",
    ] + [f"  {d}" for d in differences]
    with open(os.path.join(out_uri, REPORT_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    ctx.log.info("inferred schema differs from the curated one in %d fields", len(differences))
    return differences, split
