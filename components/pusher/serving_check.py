"""Checks that a staged SavedModel loads and answers per the Model contract before it is published.

Contract: `serving_default` takes `examples` (serialized tf.Example, tf.string [None]) and
`serving_images` takes `images` (float32 [None, 784], pixels 0..255); both return `class_ids`
(int64 [None], 0..9) and `probabilities` (float32 [None, 10], rows summing to 1), and both must
agree on the same digits.
"""

from __future__ import annotations

import glob
import os
from typing import Callable, Sequence

import numpy as np

from pipeline.errors import InputDataError, PushError

NUM_CLASSES = 10
IMAGE_SIZE = 784
SHARD_GLOB = "data_tfrecord-*.gz"
_SUM_TOLERANCE = 1e-3


def read_examples(examples_uri: str, count: int, split: str = "test") -> list:
    """Returns up to `count` serialized tf.Examples from the first shards of `Split-<split>`.

    Raises InputDataError when the split has no shards or no records.
    """
    import tensorflow as tf

    split_dir = os.path.join(examples_uri, f"Split-{split}")
    files = sorted(glob.glob(os.path.join(split_dir, SHARD_GLOB)))
    if not files:
        raise InputDataError(f"no {SHARD_GLOB} shards in {split_dir}: nothing to verify the model with")
    dataset = tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)
    records = [r.numpy() for r in dataset]
    if not records:
        raise InputDataError(f"{split_dir}: shards hold no records to verify the model with")
    return records


def images_of(records: Sequence[bytes]) -> np.ndarray:
    """Returns the `image` features of serialized tf.Examples as float32 [N, 784]."""
    import tensorflow as tf

    parsed = tf.io.parse_example(tf.constant(list(records)),
                                 {"image": tf.io.FixedLenFeature([IMAGE_SIZE], tf.int64)})
    return parsed["image"].numpy().astype(np.float32)


def _check_outputs(where: str, outputs, n: int) -> np.ndarray:
    """Validates one signature's outputs for n inputs; returns class_ids as numpy."""
    missing = {"class_ids", "probabilities"} - set(outputs)
    if missing:
        raise PushError(f"{where}: outputs lack {', '.join(sorted(missing))}")
    class_ids = outputs["class_ids"].numpy()
    probabilities = outputs["probabilities"].numpy()
    if class_ids.dtype != np.int64 or class_ids.shape != (n,):
        raise PushError(f"{where}: class_ids is {class_ids.dtype} {class_ids.shape}, expected int64 ({n},)")
    if probabilities.dtype != np.float32 or probabilities.shape != (n, NUM_CLASSES):
        raise PushError(f"{where}: probabilities is {probabilities.dtype} {probabilities.shape}, "
                        f"expected float32 ({n}, {NUM_CLASSES})")
    if not np.all(np.isfinite(probabilities)):
        raise PushError(f"{where}: probabilities hold NaN or Inf")
    if np.any(np.abs(probabilities.sum(axis=1) - 1.0) > _SUM_TOLERANCE):
        raise PushError(f"{where}: probability rows do not sum to 1")
    if np.any((class_ids < 0) | (class_ids >= NUM_CLASSES)):
        raise PushError(f"{where}: class_ids outside 0..{NUM_CLASSES - 1}")
    if np.any(class_ids != probabilities.argmax(axis=1)):
        raise PushError(f"{where}: class_ids disagree with the argmax of probabilities")
    return class_ids


def check_serving(model_dir: str, records: Sequence[bytes]) -> None:
    """Loads the SavedModel at `model_dir` and calls both signatures.

    records: serialized tf.Examples to answer; when empty only `serving_images` is called, on
        blank images (rollback has no examples at hand).
    Raises PushError naming the signature and what is wrong.
    """
    import tensorflow as tf

    try:
        model = tf.saved_model.load(model_dir)
    except Exception as e:  # a model that does not load must never be published
        raise PushError(f"staged model {model_dir} does not load: {type(e).__name__}: {e}".splitlines()[0]) from e
    for name in ("serving_default", "serving_images"):
        if name not in model.signatures:
            raise PushError(f"staged model {model_dir}: signature {name} missing "
                            f"(has {', '.join(sorted(model.signatures)) or 'none'})")
    try:
        images = images_of(records) if records else np.zeros((2, IMAGE_SIZE), np.float32)
        by_images = _check_outputs(f"{model_dir} serving_images", model.signatures["serving_images"](
            images=tf.constant(images)), len(images))
        if records:
            by_examples = _check_outputs(f"{model_dir} serving_default", model.signatures["serving_default"](
                examples=tf.constant(list(records))), len(records))
            if np.any(by_examples != by_images):
                raise PushError(f"{model_dir}: serving_default and serving_images disagree on "
                                f"{int(np.sum(by_examples != by_images))} of {len(records)} examples")
    except PushError:
        raise
    except Exception as e:  # a signature that cannot be called does not serve
        raise PushError(f"staged model {model_dir} failed to answer: {type(e).__name__}: {e}".splitlines()[0]) from e


def make_verify_fn(records: Sequence[bytes]) -> Callable[[str], None]:
    """Returns verify_fn(staged_dir) for publish(): check_serving on these records."""
    records = list(records)
    return lambda staged_dir: check_serving(staged_dir, records)
