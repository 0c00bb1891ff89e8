"""Exact histograms of small-integer features, stored inside TFDV statistics.

TFDV's own numeric histograms are built from a quantiles sketch: their bucket counts are
approximate (fractional) and their bucket edges follow each dataset's min and max, so two spans'
histograms do not line up. Drift checks need exact counts over fixed bins, so this module adds
them: `ValueHistogramGenerator` is a TFDV `CombinerStatsGenerator` that counts every value of an
int64 feature into one bin per integer of a fixed range `[0, num_bins)`.

The result lives in the feature's `custom_stats` of the same `FeatureStats.pb`, so the
statistics artifact stays the single source of truth; the layout of those custom statistics,
and `read_value_histogram` that decodes them again, are `pipeline.formats.statistics`'s.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
from tensorflow_data_validation.statistics.generators import stats_generator
from tensorflow_metadata.proto.v0 import path_pb2, statistics_pb2

from pipeline.formats.statistics import (
    HISTOGRAM_STAT,
    LABEL_BINS,
    LABEL_FEATURE,
    OUT_OF_RANGE_STAT,
    PIXEL_BINS,
    PIXEL_FEATURE,
)


class _Accumulator:
    """Per-bin counts plus the count of values outside the bins."""

    __slots__ = ("counts", "out_of_range", "seen")

    def __init__(self, num_bins: int):
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.out_of_range = 0
        self.seen = False


class ValueHistogramGenerator(stats_generator.CombinerStatsGenerator):
    """Counts the values of one int64 feature into `num_bins` exact integer bins.

    Input: Arrow RecordBatches as TFDV hands them (the feature's column is List<int64>, or Null
    when no example of the batch has it). Output: a DatasetFeatureStatistics with the feature's
    `value_histogram` and `out_of_range_values` custom statistics; empty when the feature never
    appeared with integer values (a missing or mistyped feature is the schema check's job).
    """

    def __init__(self, feature: str, num_bins: int):
        super().__init__(name=f"ValueHistogram[{feature}]")
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        self._feature = feature
        self._num_bins = num_bins

    def create_accumulator(self) -> _Accumulator:
        return _Accumulator(self._num_bins)

    def add_input(self, accumulator: _Accumulator, input_record_batch: pa.RecordBatch) -> _Accumulator:
        index = input_record_batch.schema.get_field_index(self._feature)
        if index < 0:
            return accumulator
        column = input_record_batch.column(index)
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
            return accumulator  # Null column: no example of this batch has the feature.
        if not pa.types.is_integer(column.type.value_type):
            return accumulator
        values = column.flatten().to_numpy(zero_copy_only=False)
        accumulator.seen = True
        in_range = (values >= 0) & (values < self._num_bins)
        accumulator.out_of_range += int(values.size - np.count_nonzero(in_range))
        accumulator.counts += np.bincount(values[in_range], minlength=self._num_bins)
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Accumulator]) -> _Accumulator:
        it = iter(accumulators)
        merged = next(it, None)
        if merged is None:
            return self.create_accumulator()
        for acc in it:
            merged.counts += acc.counts
            merged.out_of_range += acc.out_of_range
            merged.seen = merged.seen or acc.seen
        return merged

    def extract_output(self, accumulator: _Accumulator) -> statistics_pb2.DatasetFeatureStatistics:
        result = statistics_pb2.DatasetFeatureStatistics()
        if not accumulator.seen:
            return result
        feature = result.features.add(path=path_pb2.Path(step=[self._feature]))
        hist = feature.custom_stats.add(name=HISTOGRAM_STAT).histogram
        hist.type = statistics_pb2.Histogram.STANDARD
        for value, count in enumerate(accumulator.counts.tolist()):
            hist.buckets.add(low_value=value, high_value=value + 1, sample_count=count)
        feature.custom_stats.add(name=OUT_OF_RANGE_STAT, num=accumulator.out_of_range)
        return result


def default_generators() -> list:
    """The exact histograms StatisticsGen adds: pixel values (256 bins) and labels (10 bins)."""
    return [
        ValueHistogramGenerator(PIXEL_FEATURE, PIXEL_BINS),
        ValueHistogramGenerator(LABEL_FEATURE, LABEL_BINS),
    ]
