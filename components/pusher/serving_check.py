"""The digits a staged SavedModel must answer before it is published, and the publisher's check.

The check itself is the Model format's serving contract, `pipeline.formats.model.check_serving`;
the pusher feeds it the first records of the examples' test split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.core.errors import InputDataError
from pipeline.formats.examples import split_files
from pipeline.formats.model import check_serving


def read_examples(examples_uri: str, count: int, split: str = "test") -> list:
    """Returns up to `count` serialized tf.Examples from the first shards of `Split-<split>`.

    Raises InputDataError when the split has no shards or no records.
    """
    import tensorflow as tf  # noqa: PLC0415  only to publish: the pusher of a no-op rerun (every step cached) runs without TensorFlow

    files = split_files(examples_uri, split)
    records = [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP").take(count)]
    if not records:
        raise InputDataError(
            f"examples {examples_uri} split {split}: shards hold no records to verify the model with"
        )
    return records


def make_verify_fn(records: Sequence[bytes]) -> Callable[[str], None]:
    """Returns verify_fn(staged_dir) for publish(): check_serving on these records."""
    records = list(records)
    return lambda staged_dir: check_serving(staged_dir, records)
