"""`input_fn`s reading one split of an Examples artifact for the Estimator.

An Examples artifact holds `<uri>/Split-<split>/data_tfrecord-NNNNN-of-MMMMM.gz`, gzip TFRecords
of tf.train.Example with `image` (int64 x 784, 0..255) and `label` (int64 0..9) among other
features. The input functions yield `({"image": float32 [B, 784]}, label int64 [B])` batches.
Records are parsed a batch at a time after batching (one vectorised parse per batch).
"""

from __future__ import annotations

import os
from typing import Callable, List, Optional

import tensorflow as tf

from components.trainer.model import IMAGE_KEY, IMAGE_PIXELS, LABEL_KEY
from pipeline.errors import InputDataError

SHARD_PATTERN = "data_tfrecord-*.gz"
# Examples held in the shuffle buffer; 10k parsed-on-demand records are a few tens of MB.
SHUFFLE_BUFFER = 10_000

FEATURE_SPEC = {
    IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_PIXELS], tf.int64),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}


def split_files(examples_uri: str, split: str) -> List[str]:
    """Returns the sorted TFRecord shard paths of `split` in the Examples artifact.

    Raises InputDataError naming the split folder when it is missing or holds no shard.
    """
    split_dir = os.path.join(examples_uri, f"Split-{split}")
    if not tf.io.gfile.isdir(split_dir):
        raise InputDataError(f"examples {split_dir}: split folder missing")
    files = sorted(tf.io.gfile.glob(os.path.join(split_dir, SHARD_PATTERN)))
    if not files:
        raise InputDataError(f"examples {split_dir}: no {SHARD_PATTERN} shard")
    return files


def _parse_batch(serialized: tf.Tensor):
    parsed = tf.io.parse_example(serialized, FEATURE_SPEC)
    return {IMAGE_KEY: tf.cast(parsed[IMAGE_KEY], tf.float32)}, parsed[LABEL_KEY]


def make_dataset(files: List[str], batch_size: int, training: bool, seed: Optional[int] = None,
                 max_examples: Optional[int] = None) -> tf.data.Dataset:
    """Builds the batched dataset over `files`.

    training: shuffle (seeded with `seed`), repeat forever and drop the last partial batch;
        otherwise one pass in file order, keeping the partial last batch.
    max_examples: read only the first this many records (None: all).
    """
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP",
                                      num_parallel_reads=min(len(files), 4))
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    if training:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=training)
    dataset = dataset.map(_parse_batch, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_input_fn(examples_uri: str, split: str, batch_size: int, training: bool,
                  seed: Optional[int] = None, max_examples: Optional[int] = None) -> Callable:
    """Returns an Estimator `input_fn` over `split` of the Examples artifact at `examples_uri`.

    The shard list is resolved now, so a missing split fails before training starts
    (InputDataError); parse errors surface later as tf.errors.InvalidArgumentError.
    """
    files = split_files(examples_uri, split)

    def input_fn():
        return make_dataset(files, batch_size, training, seed=seed, max_examples=max_examples)

    return input_fn
