"""ExampleStatistics: TFDV `DatasetFeatureStatisticsList` per split, `Split-<name>/FeatureStats.pb`.

Each `FeatureStats.pb` is binary (`tfdv.load_stats_binary` reads it) and holds exactly one
dataset's statistics. The `image` and `label` features also carry exact value histograms in
their `custom_stats` (StatisticsGen's `ValueHistogramGenerator` writes them):
  - `value_histogram`: a `Histogram` with one bucket per integer v, low_value=v,
    high_value=v+1 (half-open), sample_count = how many values equal v;
  - `out_of_range_values`: how many values fell outside the buckets.
`pixel_histogram.json` in each split folder is a readable copy of the pixel histogram.

Properties: `split_names`, `split_counts`, and `spans` copied from the examples.
Reading needs only the tensorflow_metadata protos, not TFDV (fast enough for the run report).
"""

from __future__ import annotations

import os

import numpy as np
from google.protobuf import message
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline.core.errors import InputDataError
from pipeline.formats.examples import IMAGE_KEY, LABEL_KEY, MAX_PIXEL, NUM_CLASSES, split_dir, split_dirs
from pipeline.formats.files import read_bytes

ARTIFACT_TYPE = "ExampleStatistics"
SPLIT_NAMES = "split_names"
SPLIT_COUNTS = "split_counts"
SPANS = "spans"

STATS_FILE = "FeatureStats.pb"
PIXEL_HISTOGRAM_FILE = "pixel_histogram.json"

HISTOGRAM_STAT = "value_histogram"
OUT_OF_RANGE_STAT = "out_of_range_values"
# Features with exact histograms, and their number of integer bins.
PIXEL_FEATURE = IMAGE_KEY
PIXEL_BINS = MAX_PIXEL + 1
LABEL_FEATURE = LABEL_KEY
LABEL_BINS = NUM_CLASSES


def split_stats_path(statistics_uri: str, split: str) -> str:
    """Where the statistics of `split` live inside a statistics artifact."""
    return os.path.join(split_dir(statistics_uri, split), STATS_FILE)


def load_stats_file(path: str):
    """The DatasetFeatureStatisticsList in the binary file `path`.

    Raises InputDataError naming the file when it cannot be read, does not parse, or does not
    hold exactly one dataset's statistics.
    """
    data = read_bytes(path, "statistics file")
    try:
        stats = statistics_pb2.DatasetFeatureStatisticsList.FromString(data)
    except message.DecodeError as e:
        raise InputDataError(f"statistics file {path}: not a binary DatasetFeatureStatisticsList") from e
    if len(stats.datasets) != 1:
        raise InputDataError(f"statistics file {path}: holds {len(stats.datasets)} datasets, expected 1")
    return stats


def read_split_statistics(statistics_uri: str) -> dict:
    """{split: DatasetFeatureStatisticsList} of a statistics artifact, by split name.

    Raises InputDataError when there is no `Split-*` directory or a split's file is missing or
    unreadable (see `load_stats_file`).
    """
    return {
        split: load_stats_file(os.path.join(folder, STATS_FILE))
        for split, folder in split_dirs(statistics_uri, "statistics artifact").items()
    }


def feature_stats(dataset, name: str):
    """The FeatureNameStatistics of the top-level feature `name` in one dataset's statistics, or None."""
    for feature in dataset.features:
        if (list(feature.path.step) == [name]) or (not feature.path.step and feature.name == name):
            return feature
    return None


def read_value_histogram(dataset, feature: str) -> tuple[np.ndarray, int] | None:
    """Returns (`counts` int64 array, `out_of_range` count) recorded for `feature`, or None.

    None means the statistics hold no exact histogram for the feature (feature absent, not
    integer-typed, or statistics written without StatisticsGen's histogram generator).
    """
    found = feature_stats(dataset, feature)
    if found is None:
        return None
    counts, out_of_range = None, 0
    for stat in found.custom_stats:
        if stat.name == HISTOGRAM_STAT and stat.HasField("histogram"):
            counts = np.array([b.sample_count for b in stat.histogram.buckets], dtype=np.int64)
        elif stat.name == OUT_OF_RANGE_STAT:
            out_of_range = int(stat.num)
    return None if counts is None else (counts, out_of_range)
