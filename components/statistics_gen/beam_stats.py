"""Beam transforms that turn one split's gzip TFRecords of tf.Example into TFDV statistics."""

from __future__ import annotations

import apache_beam as beam
import tensorflow_data_validation as tfdv
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics
from tfx_bsl.public import tfxio

from components.statistics_gen.histograms import default_generators

METRICS_NAMESPACE = "statistics_gen"


def examples_read_counter_name(split: str) -> str:
    """Name of the Beam counter that counts the serialized examples read for `split`."""
    return f"examples_read_{split}"


def make_stats_options() -> tfdv.StatsOptions:
    """TFDV options: the default generators plus the exact pixel and label histograms."""
    return tfdv.StatsOptions(generators=default_generators())


class _CountRecords(beam.DoFn):
    """Passes records through unchanged, counting them in a Beam counter."""

    def __init__(self, counter_name: str):
        self._counter_name = counter_name
        self._counter = None

    def setup(self):
        self._counter = Metrics.counter(METRICS_NAMESPACE, self._counter_name)

    def process(self, record: bytes):
        self._counter.inc()
        yield record


class ExamplesToStatistics(beam.PTransform):
    """PBegin -> PCollection of one DatasetFeatureStatisticsList for the files `file_pattern`.

    Reads gzip TFRecords of serialized tf.Example, decodes them to Arrow without a schema (so the
    statistics describe the data as it is, mistyped or short features included), and runs
    `tfdv.GenerateStatistics`. Each record read increments the counter
    `examples_read_counter_name(split)`. A record that is not a tf.Example fails the pipeline.
    """

    def __init__(self, file_pattern: str, split: str, options: tfdv.StatsOptions | None = None):
        super().__init__()
        self._file_pattern = file_pattern
        self._split = split
        self._options = options or make_stats_options()

    def expand(self, pbegin):
        decoder = tfxio.TFExampleBeamRecord(
            physical_format="tfrecords_gzip", telemetry_descriptors=["statistics_gen"]
        )
        return (
            pbegin
            | "ReadTFRecords"
            >> beam.io.ReadFromTFRecord(self._file_pattern, compression_type=CompressionTypes.GZIP)
            | "CountExamples" >> beam.ParDo(_CountRecords(examples_read_counter_name(self._split)))
            | "DecodeToArrow" >> decoder.BeamSource()
            | "GenerateStatistics" >> tfdv.GenerateStatistics(self._options)
        )
