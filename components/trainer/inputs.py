"""`input_fn`s reading one split of an Examples artifact for the Estimator.

An Examples artifact (`pipeline.formats.examples`) holds gzip TFRecords of tf.train.Example per
split, with `image` (int64 x 784, 0..255) and `label` (int64 0..9) among other features. The
input functions yield `({"image": float32 [B, 784]}, label int64 [B])` batches. Records are parsed
a batch at a time after batching (one vectorised parse per batch).

Also here: `read_sample` (the first records of a split, to fail fast and to check an export)
and `check_schema` (the Schema artifact must describe the features read here).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2

from pipeline.core.errors import InputDataError
from pipeline.formats.examples import IMAGE_KEY, IMAGE_PIXELS, LABEL_KEY, split_files
from pipeline.formats.schema import read_schema, schema_path

# Serialized records held in the shuffle buffer (about 2 KB each: some 20 MB).
SHUFFLE_BUFFER = 10_000

FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_PIXELS], tf.int64),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}


def _parse_batch(serialized: tf.Tensor):
    parsed = tf.io.parse_example(serialized, FEATURE_SPEC)
    return {IMAGE_KEY: tf.cast(parsed[IMAGE_KEY], tf.float32)}, parsed[LABEL_KEY]


def make_dataset(
    files: list[str],
    batch_size: int,
    training: bool,
    seed: int | None = None,
    max_examples: int | None = None,
) -> tf.data.Dataset:
    """Builds the batched dataset over `files`.

    training: shuffle (seeded with `seed`), repeat forever and drop the last partial batch;
        otherwise one pass in file order, keeping the partial last batch.
    max_examples: read only the first this many records (None: all).
    """
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=min(len(files), 4))
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    if training:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(_parse_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_input_fn(
    examples_uri: str,
    split: str,
    batch_size: int,
    training: bool,
    seed: int | None = None,
    max_examples: int | None = None,
) -> Callable:
    """Returns an Estimator `input_fn` over `split` of the Examples artifact at `examples_uri`.

    The shard list is resolved now, so a missing split fails before training starts
    (InputDataError); parse errors surface later as tf.errors.InvalidArgumentError.
    """
    files = split_files(examples_uri, split)

    def input_fn():
        return make_dataset(files, batch_size, training, seed=seed, max_examples=max_examples)

    return input_fn


def read_sample(files: list[str], count: int):
    """Returns (serialized records, their images as float32 [n, 784]) for the first `count`
    records of `files` (fewer when the files hold fewer).

    Used before training to fail fast on an empty split or records of another shape, and to
    check the exported model. Raises InputDataError naming the split folder.
    """
    where = f"examples {os.path.dirname(files[0])}"
    try:
        records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)]
        if not records:
            raise InputDataError(f"{where}: no records")
        parsed = tf.io.parse_example(tf.constant(records), FEATURE_SPEC)
    except tf.errors.DataLossError as e:
        raise InputDataError(f"{where}: corrupt TFRecord data ({e.message.splitlines()[0]})") from e
    except tf.errors.InvalidArgumentError as e:
        raise InputDataError(
            f"{where}: records do not fit the trainer's features (image int64 "
            f"x 784, label int64): {e.message.splitlines()[0]}"
        ) from e
    return records, tf.cast(parsed[IMAGE_KEY], tf.float32).numpy()


def check_schema(schema_uri: str) -> None:
    """Checks that the Schema artifact (`<schema_uri>/schema.pbtxt`) describes what the trainer
    reads: `image` INT with 784 values (when the schema bounds the count) and `label` INT.

    Raises InputDataError naming the schema file and the feature that does not fit, or when it
    cannot be read.
    """
    path = schema_path(schema_uri)
    schema = read_schema(schema_uri)
    features = {feature.name: feature for feature in schema.feature}
    for name, count in ((IMAGE_KEY, IMAGE_PIXELS), (LABEL_KEY, 1)):
        feature = features.get(name)
        if feature is None:
            raise InputDataError(f"schema {path}: no feature {name!r}; the trainer needs it")
        if feature.type != schema_pb2.INT:
            raise InputDataError(
                f"schema {path}: feature {name!r} is "
                f"{schema_pb2.FeatureType.Name(feature.type)}, the trainer needs INT"
            )
        if feature.HasField("shape"):
            dims = [dim.size for dim in feature.shape.dim]
            if math.prod(dims) != count:
                raise InputDataError(
                    f"schema {path}: feature {name!r} has shape {dims}, the trainer needs {count} values"
                )
        elif feature.HasField("value_count"):
            low, high = feature.value_count.min, feature.value_count.max
            # max 0 means unbounded; only a range that excludes `count` contradicts the trainer.
            if low > count or (high and high < count):
                raise InputDataError(
                    f"schema {path}: feature {name!r} has value_count "
                    f"[{low}, {high}], the trainer needs {count} values"
                )
