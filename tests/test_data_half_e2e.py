"""The data half (example_gen .. example_validator) end to end on a few thousand real digits,
through the CLI, under each Beam running mode (other engines: test_beam_engines); then fully
cached; then the gate."""

import glob
import json
import os
import time

import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from mnist_slices import write_mnist_slice
from tensorflow_data_validation.utils.anomalies_util import load_anomalies_binary

from components.example_gen.encode import SPLITS
from pipeline.cli import main

DATA_STEPS = ["example_gen", "statistics_gen", "schema_gen", "example_validator"]
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION = os.path.join(PROJECT, "tests", "data", "fashion_mnist")  # 1,000 + 200 images, see its README
SHIPPED = "the shipped MNIST reference"
# Beam's DirectRunner running modes: in_memory (the default) and multi_processing.
IN_MEMORY = ("--beam-arg=--direct_running_mode=in_memory", "--beam-arg=--direct_num_workers=2")
MULTI_PROCESSING = ("--beam-arg=--direct_running_mode=multi_processing", "--beam-arg=--direct_num_workers=2")


def run_cli(*args) -> tuple:
    """Runs run_local's main in-process; returns (exit status, summary dict or None)."""
    summary_path = None
    for i, a in enumerate(args):
        if a == "--summary-json":
            summary_path = args[i + 1]
    code = main(list(args))
    summary = json.load(open(summary_path)) if summary_path and os.path.exists(summary_path) else None
    return code, summary


def data_half(tmp_path, data_root, *extra, name="root"):
    summary = str(tmp_path / f"{name}-summary-{time.monotonic_ns()}.json")
    return run_cli(
        "--data-root",
        data_root,
        "--pipeline-root",
        str(tmp_path / name),
        "--to",
        "example_validator",
        "--summary-json",
        summary,
        *extra,
    )


def read_split(examples_uri, split) -> list:
    """Serialized records of one split of an Examples artifact, over all its shards."""
    files = sorted(glob.glob(os.path.join(examples_uri, f"Split-{split}", "data_tfrecord-*-of-*.gz")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def test_data_half_runs_then_is_fully_cached(tmp_path, small_mnist):
    # The in_memory running mode, named.
    code, summary = data_half(tmp_path, small_mnist, *IN_MEMORY)
    assert code == 0, summary and summary.get("message")
    assert [summary["steps"][s]["state"] for s in DATA_STEPS] == ["ran"] * 4
    assert summary["steps"]["trainer"]["state"] == "skipped"
    assert summary["data"]["spans"] == [0]

    examples = summary["steps"]["example_gen"]["outputs"]["examples"]
    counts = summary["steps"]["example_gen"]["properties"]["split_counts"]
    assert counts["train"] + counts["eval"] == 2000 and counts["test"] == 500
    assert 2000 / 12 * 0.6 < counts["eval"] < 2000 / 12 * 1.4
    for split in ("train", "eval", "test"):
        shards = os.listdir(os.path.join(examples, f"Split-{split}"))
        assert shards and all(s.startswith("data_tfrecord-") and s.endswith(".gz") for s in shards)

    stats_uri = summary["steps"]["statistics_gen"]["outputs"]["statistics"]
    stats = tfdv.load_stats_binary(os.path.join(stats_uri, "Split-train", "FeatureStats.pb"))
    assert stats.datasets[0].num_examples == counts["train"]
    schema = tfdv.load_schema_text(
        os.path.join(summary["steps"]["schema_gen"]["outputs"]["schema"], "schema.pbtxt")
    )
    assert {f.name for f in schema.feature} >= {"image", "label"}
    anomalies_uri = summary["steps"]["example_validator"]["outputs"]["anomalies"]
    for split in ("train", "eval", "test"):
        anomalies = load_anomalies_binary(os.path.join(anomalies_uri, f"Split-{split}", "SchemaDiff.pb"))
        assert not anomalies.anomaly_info, f"unexpected anomalies in {split}"
    # A first span: its drift was measured against the shipped reference, and passed.
    validator = summary["steps"]["example_validator"]["properties"]
    assert validator["drift_checked"] is True and validator["drift_baseline"] == SHIPPED

    code, again = data_half(tmp_path, small_mnist, *IN_MEMORY)
    assert code == 0
    assert [again["steps"][s]["state"] for s in DATA_STEPS] == ["cached"] * 4
    assert again["steps"]["example_gen"]["outputs"] == summary["steps"]["example_gen"]["outputs"]


def test_out_of_range_labels_stop_the_run_before_training(tmp_path):
    from mnist_slices import TRAIN_LABELS, read_real, write_idx

    root = write_mnist_slice(str(tmp_path / "data"), 600, 200)
    labels = read_real(TRAIN_LABELS, 600).copy()
    labels[17] = 11
    write_idx(os.path.join(root, TRAIN_LABELS), labels)
    summary_path = str(tmp_path / "s.json")
    code = main(
        [
            "--data-root",
            root,
            "--pipeline-root",
            str(tmp_path / "root"),
            "--summary-json",
            summary_path,
            "--train-steps",
            "1",
        ]
    )
    summary = json.load(open(summary_path))
    assert code == 3
    assert summary["steps"]["trainer"]["state"] == "skipped"
    assert "train-labels-idx1-ubyte.gz" in summary["message"]
    assert not os.path.exists(tmp_path / "root" / "example_gen" / "examples" / "1")


def test_drifted_new_span_is_stopped_by_the_gate(tmp_path):
    from mnist_slices import TEST_IMAGES, TRAIN_IMAGES, read_real, write_idx

    data = tmp_path / "data"
    write_mnist_slice(str(data / "span-1"), 1200, 300)
    span2 = write_mnist_slice(str(data / "span-2"), 1200, 300, offset=1200)
    # Span 2 arrives with inverted images (white digits on black became black on white).
    write_idx(os.path.join(span2, TRAIN_IMAGES), 255 - read_real(TRAIN_IMAGES, 1200, 1200))
    write_idx(os.path.join(span2, TEST_IMAGES), 255 - read_real(TEST_IMAGES, 300, 1200))
    code, first = data_half(tmp_path, str(data), "--span", "1")
    assert code == 0, first["message"]
    assert first["steps"]["example_validator"]["properties"]["drift_baseline"] == SHIPPED
    code, second = data_half(tmp_path, str(data))
    assert second["data"]["spans"] == [2]
    assert code == 3
    assert "train/image" in second["message"]
    assert "jensen-shannon divergence" in second["message"].lower()
    # From the second span on, drift is against the previous span, never the reference.
    assert "to previous span 1: " in second["message"]
    assert second["steps"]["example_validator"]["properties"]["drift_baseline"] == "previous span 1"
    report = os.path.join(second["steps"]["example_validator"]["outputs"]["anomalies"], "report.txt")
    assert "image" in open(report).read()


@pytest.fixture(scope="module")
def mode_mnist(tmp_path_factory):
    """1,000 training and 200 test digits: enough for the schema's minimum split size."""
    return write_mnist_slice(str(tmp_path_factory.mktemp("modes")), 1000, 200)


def test_multi_processing_direct_runner_runs_the_data_half_and_writes_every_record(tmp_path, mode_mnist):
    code, summary = data_half(tmp_path, mode_mnist, *MULTI_PROCESSING)
    assert code == 0, summary and summary["message"]
    assert [summary["steps"][s]["state"] for s in DATA_STEPS] == ["ran"] * 4
    counts = summary["steps"]["example_gen"]["properties"]["split_counts"]
    assert counts["train"] + counts["eval"] == 1000 and counts["test"] == 200
    # The workers' shards hold every record they counted.
    examples = summary["steps"]["example_gen"]["outputs"]["examples"]
    for split in SPLITS:
        assert len(read_split(examples, split)) == counts[split]


def _copy_with_config(tmp_path, source, key: str) -> tuple:
    """(a copy of the file `source` under tmp_path, a config file pointing validation.<key> at it)."""
    copy = tmp_path / f"my_{source.name}"
    copy.write_bytes(source.read_bytes())
    config = tmp_path / "config.toml"
    config.write_text(f'[validation]\n{key} = "{copy}"\n')
    return copy, config


def test_editing_the_curated_schema_in_place_reruns_the_gate(tmp_path, small_mnist):
    """The curated schema is an input by content: an edit in place (same path) is seen."""
    from pipeline.config import DEFAULT_SCHEMA_PATH

    schema, config = _copy_with_config(tmp_path, DEFAULT_SCHEMA_PATH, "schema_path")
    code, first = data_half(tmp_path, small_mnist, "--config", str(config))
    assert code == 0, first["message"]

    text = schema.read_text()
    assert "    max: 9\n" in text
    schema.write_text(text.replace("    max: 9\n", "    max: 8\n", 1))  # label 9 now out of domain
    code, second = data_half(tmp_path, small_mnist, "--config", str(config))
    assert code == 3, second["message"]
    assert [second["steps"][s]["state"] for s in DATA_STEPS] == ["cached", "cached", "ran", "ran"]
    assert "label" in second["message"]
    assert (
        second["steps"]["schema_gen"]["properties"]["schema_sha256"]
        != first["steps"]["schema_gen"]["properties"]["schema_sha256"]
    )


def test_fashion_mnist_as_the_first_span_is_stopped_by_the_reference(tmp_path):
    """Valid IDX files of clothing photos as a fresh root's first span: no previous span, but the
    pixel histogram is far from the shipped MNIST reference, so the gate stops the run (exit 3)
    before training. With validation.reference_check = false the same data passes."""
    code, summary = data_half(tmp_path, FASHION)
    assert code == 3, summary["message"]
    assert summary["data"]["spans"] == [0]
    assert summary["message"].startswith(
        f"data validation failed: train/image: High Jensen-Shannon divergence to {SHIPPED}: "
    )
    assert summary["message"].endswith(" > 0.02 (COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH)")
    assert [summary["steps"][s]["state"] for s in DATA_STEPS] == ["ran"] * 4
    assert summary["steps"]["trainer"]["state"] == "skipped"
    validator = summary["steps"]["example_validator"]["properties"]
    assert validator["drift_baseline"] == SHIPPED and validator["drift_baseline_kind"] == "reference"
    assert validator["drift"]["image_jensen_shannon_divergence"] > 0.1  # measured: 0.143
    anomalies_uri = summary["steps"]["example_validator"]["outputs"]["anomalies"]
    report = open(os.path.join(anomalies_uri, "report.txt")).read()
    assert f"drift (train split against {SHIPPED}): " in report
    assert "image  jensen_shannon_divergence = " in report and "EXCEEDED" in report

    config = tmp_path / "off.toml"
    config.write_text("[validation]\nreference_check = false\n")
    code, off = data_half(tmp_path, FASHION, "--config", str(config))
    assert code == 0, off["message"]
    assert off["steps"]["example_validator"]["state"] == "ran"
    assert off["steps"]["example_validator"]["properties"]["drift_checked"] is False
    assert off["steps"]["example_gen"]["state"] == off["steps"]["statistics_gen"]["state"] == "cached"


def test_editing_the_reference_in_place_reruns_the_gate(tmp_path, mode_mnist):
    """The reference is an input by content, like the curated schema: an edit in place is seen."""
    from pipeline.config import DEFAULT_REFERENCE_PATH

    reference, config = _copy_with_config(tmp_path, DEFAULT_REFERENCE_PATH, "reference_path")
    code, first = data_half(tmp_path, mode_mnist, "--config", str(config))
    assert code == 0, first["message"]
    assert first["steps"]["example_validator"]["properties"]["drift_baseline"] == SHIPPED

    doc = json.loads(reference.read_text())
    doc["name"] = "my edited reference"
    doc["histograms"]["label"]["counts"] = [6000] * 10  # still within the limit of real digits
    reference.write_text(json.dumps(doc))
    code, second = data_half(tmp_path, mode_mnist, "--config", str(config))
    assert code == 0, second["message"]
    assert [second["steps"][s]["state"] for s in DATA_STEPS] == ["cached", "cached", "cached", "ran"]
    validator = second["steps"]["example_validator"]["properties"]
    assert validator["drift_baseline"] == "my edited reference"
    assert (
        validator["drift"]["label_l_infinity"]
        != first["steps"]["example_validator"]["properties"]["drift"]["label_l_infinity"]
    )
