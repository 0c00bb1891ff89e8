"""StatisticsGen: per-split TFDV statistics with exact pixel and label histograms."""

import json
import os

import numpy as np
import pyarrow as pa
import pytest
from step_context import step_context
from tiny_examples import SplitData, compute_statistics, real_split, write_examples_artifact

from components.statistics_gen.executor import run
from components.statistics_gen.histograms import ValueHistogramGenerator
from pipeline.core.errors import InputDataError
from pipeline.core.step import Artifact
from pipeline.formats.examples import list_splits
from pipeline.formats.statistics import (
    HISTOGRAM_STAT,
    OUT_OF_RANGE_STAT,
    read_value_histogram,
    split_stats_path,
)

SPLITS = {"train": (240, 0), "eval": (60, 240), "test": (60, 300)}


@pytest.fixture(scope="module")
def split_data():
    return {name: real_split(count, offset) for name, (count, offset) in SPLITS.items()}


@pytest.fixture(scope="module")
def stats_run(tmp_path_factory, split_data):
    """One statistics_gen run over a three-split artifact: (outcome, statistics dir)."""
    root = tmp_path_factory.mktemp("statistics_gen")
    examples = write_examples_artifact(str(root / "examples"), split_data)
    counts = {name: count for name, (count, _) in SPLITS.items()}
    outcome = compute_statistics(
        examples, str(root / "statistics"), properties={"split_counts": counts, "spans": [3]}
    )
    return outcome, str(root / "statistics")


def test_statistics_written_per_split_and_loadable(stats_run):
    import tensorflow_data_validation as tfdv

    _, out = stats_run
    assert sorted(os.listdir(out)) == ["Split-eval", "Split-test", "Split-train"]
    for split, (count, _) in SPLITS.items():
        stats = tfdv.load_stats_binary(split_stats_path(out, split))
        assert len(stats.datasets) == 1
        dataset = stats.datasets[0]
        assert dataset.num_examples == count
        names = {f.path.step[0] for f in dataset.features}
        assert names == {"image", "label", "ink_density", "ink_density_bucket"}
        image = tfdv.get_feature_stats(dataset, tfdv.FeaturePath(["image"]))
        assert image.num_stats.common_stats.min_num_values == 784
        assert image.num_stats.common_stats.max_num_values == 784
        assert image.num_stats.max <= 255


def test_histograms_are_exact(stats_run, split_data):
    import tensorflow_data_validation as tfdv

    _, out = stats_run
    for split, data in split_data.items():
        dataset = tfdv.load_stats_binary(split_stats_path(out, split)).datasets[0]
        labels, label_oor = read_value_histogram(dataset, "label")
        np.testing.assert_array_equal(labels, np.bincount(data.labels, minlength=10))
        pixels, pixel_oor = read_value_histogram(dataset, "image")
        np.testing.assert_array_equal(pixels, np.bincount(np.concatenate(data.images), minlength=256))
        assert label_oor == 0 and pixel_oor == 0
        with open(os.path.join(out, f"Split-{split}", "pixel_histogram.json")) as f:
            readable = json.load(f)
        assert readable["counts"] == pixels.tolist()
        assert readable["total_values"] == 784 * len(data.labels)


def test_properties(stats_run):
    outcome, _ = stats_run
    counts = {name: count for name, (count, _) in SPLITS.items()}
    assert outcome.stop_run is None
    assert outcome.execution_properties["split_counts"] == counts
    assert outcome.execution_properties["pixel_out_of_range"] == {s: 0 for s in SPLITS}
    assert outcome.output_properties["statistics"] == {
        "split_names": ["eval", "test", "train"],
        "split_counts": counts,
        "spans": [3],
    }


def _batch(columns: dict) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(list(columns.values()), list(columns.keys()))


def test_value_histogram_generator_counts_and_out_of_range():
    gen = ValueHistogramGenerator("image", 4)
    first = gen.add_input(
        gen.create_accumulator(),
        _batch({"image": pa.array([[0, 1, 1], None, [3, 4, -1]], type=pa.list_(pa.int64()))}),
    )
    second = gen.add_input(
        gen.create_accumulator(), _batch({"image": pa.array([[2, 300]], type=pa.list_(pa.int64()))})
    )
    merged = gen.merge_accumulators([first, second])
    dataset = gen.extract_output(merged)
    counts, out_of_range = read_value_histogram(dataset, "image")
    np.testing.assert_array_equal(counts, [1, 2, 1, 1])
    assert out_of_range == 3  # 4, -1 and 300
    stats = {s.name: s for s in dataset.features[0].custom_stats}
    assert [(b.low_value, b.high_value) for b in stats[HISTOGRAM_STAT].histogram.buckets] == [
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
    ]
    assert stats[OUT_OF_RANGE_STAT].num == 3


def test_value_histogram_generator_skips_absent_or_float_feature():
    gen = ValueHistogramGenerator("label", 10)
    acc = gen.add_input(
        gen.create_accumulator(), _batch({"other": pa.array([[1]], type=pa.list_(pa.int64()))})
    )
    acc = gen.add_input(acc, _batch({"label": pa.array([None, None], type=pa.null())}))
    acc = gen.add_input(acc, _batch({"label": pa.array([[1.5]], type=pa.list_(pa.float32()))}))
    dataset = gen.extract_output(acc)
    assert len(dataset.features) == 0
    assert read_value_histogram(dataset, "label") is None


def test_find_splits_rejects_bad_layouts(tmp_path):
    with pytest.raises(InputDataError, match="not a directory"):
        list_splits(str(tmp_path / "nope"))
    (tmp_path / "other").mkdir()
    with pytest.raises(InputDataError, match="no Split-\\* directory"):
        list_splits(str(tmp_path))
    (tmp_path / "Split-train").mkdir()
    (tmp_path / "Split-train" / "data.txt").write_text("x")
    with pytest.raises(InputDataError, match=r"Split-train: no data_tfrecord-\*\.gz shard"):
        list_splits(str(tmp_path))


def test_recorded_split_counts_must_match(tmp_path):
    examples = write_examples_artifact(str(tmp_path / "ex"), {"train": real_split(60)})
    with pytest.raises(InputDataError, match="no Split-eval directory, but example_gen recorded 5"):
        compute_statistics(
            examples, str(tmp_path / "s1"), properties={"split_counts": {"train": 60, "eval": 5}}
        )
    assert not os.listdir(tmp_path / "s1")  # refused before any work
    with pytest.raises(InputDataError, match="split train holds 60 examples, but example_gen recorded 61"):
        compute_statistics(examples, str(tmp_path / "s2"), properties={"split_counts": {"train": 61}})


def test_unreadable_records_are_input_errors(tmp_path):
    examples = write_examples_artifact(str(tmp_path / "ex"), {"train": real_split(60)})
    shard = tmp_path / "ex" / "Split-train" / "data_tfrecord-00000-of-00001.gz"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # a truncated gzip shard
    with pytest.raises(InputDataError, match=f"examples artifact {examples}: unreadable records"):
        compute_statistics(examples, str(tmp_path / "stats"))


def test_empty_split_has_zero_examples(tmp_path):
    import tensorflow_data_validation as tfdv

    empty = SplitData(images=[], labels=np.zeros(0, dtype=np.int64))
    examples = write_examples_artifact(str(tmp_path / "ex"), {"train": real_split(60), "eval": empty})
    outcome = compute_statistics(examples, str(tmp_path / "stats"))
    assert outcome.execution_properties["split_counts"] == {"eval": 0, "train": 60}
    assert (
        tfdv.load_stats_binary(split_stats_path(str(tmp_path / "stats"), "eval")).datasets[0].num_examples
        == 0
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "beam_args",
    [
        ["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
    ],
    ids=["multi_processing", "portable_loopback"],
)
def test_other_runners_give_the_same_statistics(tmp_path, stats_run, split_data, beam_args):
    import tensorflow_data_validation as tfdv

    _, reference = stats_run
    examples = write_examples_artifact(str(tmp_path / "ex"), split_data)
    ctx = step_context(
        "statistics_gen",
        {"examples": Artifact(examples, "Examples")},
        {"statistics": str(tmp_path / "stats")},
        beam_args=beam_args,
    )
    outcome = run(ctx)
    assert outcome.execution_properties["split_counts"] == {s: c for s, (c, _) in SPLITS.items()}
    for split in SPLITS:
        mine = tfdv.load_stats_binary(split_stats_path(str(tmp_path / "stats"), split)).datasets[0]
        ref = tfdv.load_stats_binary(split_stats_path(reference, split)).datasets[0]
        for feature in ("label", "image"):
            np.testing.assert_array_equal(
                read_value_histogram(mine, feature)[0], read_value_histogram(ref, feature)[0]
            )
