"""SchemaGen: the curated schema is published as is; bad schema files are refused."""

import os

import pytest
from step_context import step_context
from tiny_examples import compute_statistics, real_split, write_examples_artifact

from components.schema_gen.executor import run
from components.schema_gen.schema_diff import schema_differences
from pipeline.config import DEFAULT_SCHEMA_PATH, ValidationConfig
from pipeline.core.digest import file_digest
from pipeline.core.errors import ConfigError
from pipeline.core.step import Artifact
from pipeline.formats.examples import DEFAULT_INK_DENSITY_EDGES


@pytest.fixture(scope="module")
def statistics(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema_gen")
    examples = write_examples_artifact(
        str(root / "examples"), {"train": real_split(120), "eval": real_split(60, 120)}
    )
    compute_statistics(examples, str(root / "statistics"))
    return Artifact(str(root / "statistics"), "ExampleStatistics")


def _run(tmp_path, statistics, **params):
    config = ValidationConfig(**params)
    path = config.schema_path
    curated = Artifact(
        path, "CuratedSchema", {"content_digest": file_digest(path) if os.path.isfile(path) else ""}
    )
    ctx = step_context(
        "schema_gen",
        {"statistics": statistics, "curated_schema": curated},
        {"schema": str(tmp_path / "schema")},
        params=config,
    )
    return run(ctx), tmp_path / "schema"


def test_copies_curated_schema_and_reports_inferred_differences(tmp_path, statistics):
    import tensorflow_data_validation as tfdv

    outcome, out = _run(tmp_path, statistics)
    assert (out / "schema.pbtxt").read_bytes() == DEFAULT_SCHEMA_PATH.read_bytes()
    schema = tfdv.load_schema_text(str(out / "schema.pbtxt"))
    assert [f.name for f in schema.feature] == ["image", "label", "ink_density", "ink_density_bucket"]
    props = outcome.execution_properties
    assert props["feature_count"] == 4
    assert props["environments"] == ["TRAINING", "SERVING"]
    assert props["min_examples_count"] == 50
    assert props["inferred_from_split"] == "train"
    assert outcome.stop_run is None

    inferred = tfdv.load_schema_text(str(out / "inferred_schema.pbtxt"))
    assert {f.name for f in inferred.feature} == {f.name for f in schema.feature}
    report = (out / "schema_report.txt").read_text()
    assert "from split train (120 examples)" in report
    assert "feature label: int_domain.max: curated 9, inferred (unset)" in report
    assert "feature label: not_in_environment: curated ['SERVING'], inferred (unset)" in report
    assert f"{props['inferred_differences']} differences:" in report


def test_curated_schema_choices():
    """The gate's rules themselves: a change here must be a deliberate schema change."""
    import tensorflow_data_validation as tfdv
    from tensorflow_metadata.proto.v0 import schema_pb2

    schema = tfdv.load_schema_text(str(DEFAULT_SCHEMA_PATH))
    features = {f.name: f for f in schema.feature}
    label, image = features["label"], features["image"]
    assert (label.type, label.int_domain.min, label.int_domain.max) == (schema_pb2.INT, 0, 9)
    assert label.int_domain.is_categorical
    assert (label.value_count.min, label.value_count.max, label.presence.min_fraction) == (1, 1, 1.0)
    assert list(label.not_in_environment) == ["SERVING"]
    assert (image.type, image.int_domain.min, image.int_domain.max) == (schema_pb2.INT, 0, 255)
    assert (image.value_count.min, image.value_count.max, image.presence.min_fraction) == (784, 784, 1.0)
    density = features["ink_density"].float_domain
    assert (density.min, density.max, density.disallow_nan, density.disallow_inf) == (0.0, 1.0, True, True)
    assert features["ink_density_bucket"].int_domain.max == len(DEFAULT_INK_DENSITY_EDGES)
    assert schema.dataset_constraints.min_examples_count == 50
    assert list(schema.default_environment) == ["TRAINING", "SERVING"]


def test_without_report_reads_no_statistics(tmp_path):
    missing = Artifact(str(tmp_path / "no-statistics"), "ExampleStatistics")
    outcome, out = _run(tmp_path, missing, infer_schema_report=False)
    assert sorted(os.listdir(out)) == ["schema.pbtxt"]
    assert "inferred_differences" not in outcome.execution_properties


BAD_SCHEMAS = {
    "unparseable": ('feature { name: "label" type: INTEGER }', "not a valid tensorflow_metadata Schema"),
    "no_feature": ('default_environment: "TRAINING"', "declares no feature"),
    "duplicate": ('feature { name: "a" type: INT } feature { name: "a" type: INT }', "'a' is declared twice"),
    "untyped": ('feature { name: "a" }', "'a' has no type"),
    "env_typo": (
        'default_environment: "TRAINING" feature { name: "label" type: INT not_in_environment: "SERVNG" }',
        "names environment 'SERVNG', which is not a default_environment",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_SCHEMAS))
def test_bad_schema_file_is_a_config_error(tmp_path, statistics, case):
    text, message = BAD_SCHEMAS[case]
    path = tmp_path / "schema.pbtxt"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"schema file {path} .*{message}"):
        _run(tmp_path, statistics, schema_path=str(path))
    assert not os.listdir(tmp_path / "schema")  # nothing half-written


def test_missing_schema_file_is_a_config_error(tmp_path, statistics):
    path = tmp_path / "missing.pbtxt"
    with pytest.raises(
        ConfigError, match=f"schema file {path} \\(config key validation.schema_path\\): no such file"
    ):
        _run(tmp_path, statistics, schema_path=str(path))


def test_schema_differences():
    from tensorflow_metadata.proto.v0 import schema_pb2

    a = schema_pb2.Schema()
    a.feature.add(name="x", type=schema_pb2.INT).int_domain.max = 9
    b = schema_pb2.Schema()
    b.CopyFrom(a)
    assert schema_differences(a, b) == []
    b.feature[0].int_domain.max = 11
    b.feature.add(name="y", type=schema_pb2.FLOAT)
    a.dataset_constraints.min_examples_count = 5
    assert schema_differences(a, b) == [
        "feature x: int_domain.max: curated 9, inferred 11",
        "feature y: in the inferred schema only (in the data, not in the curated schema)",
        "schema: dataset_constraints.min_examples_count: curated 5, inferred (unset)",
    ]
