"""StatisticsGen: TFDV statistics for every split of an Examples artifact, in one Beam pipeline.

Input `examples` and output `statistics`: the layouts of `pipeline.formats.examples` and
`pipeline.formats.statistics` (`Split-<split>/FeatureStats.pb`, whose `image` and `label`
features also carry the exact value histograms of `histograms.py`, plus
`Split-<split>/pixel_histogram.json`, a readable copy of the pixel-value histogram).
"""

from __future__ import annotations

import json
import os
import time

import apache_beam as beam
import tensorflow_data_validation as tfdv
from apache_beam.metrics.metric import MetricsFilter

from components.statistics_gen.beam_stats import (
    METRICS_NAMESPACE,
    ExamplesToStatistics,
    examples_read_counter_name,
)
from pipeline.core.errors import InputDataError, PipelineError
from pipeline.core.step import StepContext, StepOutcome
from pipeline.formats import examples as examples_format
from pipeline.formats import statistics as stats_format


def run(ctx: StepContext[None]) -> StepOutcome:
    """Computes and writes the statistics of every split of `ctx.inputs["examples"]`.

    Returns execution properties `split_counts` ({split: examples}), `pixel_out_of_range`
    ({split: values outside 0..255}) and `beam_runner` (the engine that ran it); the output artifact gets `split_names` and `split_counts`
    (plus `spans` copied from the examples). Raises InputDataError on a bad layout, on records
    that cannot be read as tf.Example, or when the examples' recorded `split_counts` disagree with
    what was read.
    """
    examples = ctx.inputs["examples"]
    out_uri = ctx.outputs["statistics"]
    splits = examples_format.list_splits(examples.uri)
    _check_recorded_splits(examples, splits)
    ctx.log.info("computing statistics of splits %s from %s", ", ".join(splits), examples.uri)

    start = time.monotonic()
    pipeline = beam.Pipeline(options=ctx.beam_pipeline_options())
    for split, pattern in splits.items():
        os.makedirs(examples_format.split_dir(out_uri, split))
        _ = (
            pipeline
            | f"Stats[{split}]" >> ExamplesToStatistics(pattern, split)
            | f"Write[{split}]"
            >> tfdv.WriteStatisticsToBinaryFile(stats_format.split_stats_path(out_uri, split))
        )
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except Exception as e:  # Beam wraps worker errors in runner-specific types.
        first_line = _first_line(e)
        if any(marker in str(e) for marker in _BAD_RECORD_MARKERS):
            raise InputDataError(f"examples artifact {examples.uri}: unreadable records: {first_line}") from e
        raise PipelineError(f"statistics_gen: Beam pipeline over {examples.uri} failed: {first_line}") from e
    ctx.log.info("statistics computed in %.1fs", time.monotonic() - start)
    records_read = _records_read(result, splits)

    split_counts, pixel_out_of_range = {}, {}
    for split in splits:
        stats = tfdv.load_stats_binary(stats_format.split_stats_path(out_uri, split))
        dataset = stats.datasets[0]
        split_counts[split] = int(dataset.num_examples)
        histogram = stats_format.read_value_histogram(dataset, stats_format.PIXEL_FEATURE)
        if histogram is not None:
            counts, out_of_range = histogram
            pixel_out_of_range[split] = out_of_range
            _write_json(
                os.path.join(examples_format.split_dir(out_uri, split), stats_format.PIXEL_HISTOGRAM_FILE),
                {
                    "feature": stats_format.PIXEL_FEATURE,
                    "bins": stats_format.PIXEL_BINS,
                    "counts": counts.tolist(),
                    "out_of_range_values": out_of_range,
                    "total_values": int(counts.sum()) + out_of_range,
                    "note": f"readable copy; the source of truth is the custom_stats of {stats_format.STATS_FILE}",
                },
            )
        ctx.log.info(
            "split %s: %d examples (%s records read)",
            split,
            split_counts[split],
            records_read.get(split, "?"),
        )

    examples_format.check_recorded_counts(examples, split_counts)
    output_properties = {stats_format.SPLIT_NAMES: list(splits), stats_format.SPLIT_COUNTS: split_counts}
    if examples_format.SPANS in examples.properties:
        output_properties[stats_format.SPANS] = examples_format.spans_of(examples.properties)
    return StepOutcome(
        execution_properties={
            "split_counts": split_counts,
            "pixel_out_of_range": pixel_out_of_range,
            "beam_runner": ctx.beam_runner(),
        },
        output_properties={"statistics": output_properties},
    )


# Substrings of the errors that unreadable shards raise, whichever runner relays them: a
# truncated or corrupt TFRecord, a shard that is not gzip, bytes that are not a tf.Example.
_BAD_RECORD_MARKERS = (
    "Not a valid TFRecord",
    "DATA_LOSS",
    "Feature had wrong type",
    "corrupted record",
    "while decompressing data",
    "Not a gzipped file",
    "Unable to parse example",
    "Compressed file ended",
)


def _records_read(result, splits) -> dict:
    """{split: records read} from the Beam counters; {} where the runner reports no metrics."""
    try:
        counters = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    except (NotImplementedError, AttributeError, KeyError):
        return {}
    by_name = {c.key.metric.name: c.committed for c in counters}
    return {
        split: by_name[examples_read_counter_name(split)]
        for split in splits
        if examples_read_counter_name(split) in by_name
    }


def _first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's text, cut to `limit` characters (Beam quotes whole records)."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line if len(line) <= limit else line[:limit] + "..."


def _check_recorded_splits(examples, splits) -> None:
    """Raises InputDataError when a split ExampleGen recorded has no directory."""
    recorded = examples.properties.get(examples_format.SPLIT_COUNTS) or {}
    missing = sorted(set(recorded) - set(splits))
    if missing:
        raise InputDataError(
            f"examples artifact {examples.uri}: no {examples_format.SPLIT_PREFIX}{missing[0]} "
            f"directory, but example_gen recorded {recorded[missing[0]]} examples for it"
        )


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
