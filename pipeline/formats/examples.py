"""Examples: gzip TFRecords of tf.train.Example, one `Split-<name>/` folder per split.

Layout: `<uri>/Split-<split>/data_tfrecord-<shard>-of-<num_shards>.gz` (five digits each). The
`Split-<name>/` folders are TFX's and other split artifacts (statistics, anomalies) use them too:
`split_dir` and `split_dirs` serve those as well.

Features of every example (ExampleGen writes them, the trainer, evaluator and pusher read them):
    image               int64 x IMAGE_PIXELS  pixel values 0..MAX_PIXEL, row-major 28 x 28
    label               int64                 0..NUM_CLASSES-1
    ink_density         float                 fraction of pixels > 127
    ink_density_bucket  int64                 the density's bucket among data.ink_density_edges

Properties: `spans` (the raw-data spans they were made from), `split_counts`.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping

from pipeline.core.errors import InputDataError

ARTIFACT_TYPE = "Examples"
SPANS = "spans"
SPLIT_COUNTS = "split_counts"

IMAGE_KEY = "image"
LABEL_KEY = "label"
INK_DENSITY_KEY = "ink_density"
INK_DENSITY_BUCKET_KEY = "ink_density_bucket"
IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
MAX_PIXEL = 255
# The label domain: digits 0..9 (also the width of the model's probabilities).
NUM_CLASSES = 10
# The default edges of `ink_density_bucket` (data.ink_density_edges): the bucket is
# np.digitize(ink_density, edges), so 0..len(edges).
DEFAULT_INK_DENSITY_EDGES = (0.10, 0.14, 0.18, 0.22)

SPLIT_PREFIX = "Split-"
SHARD_GLOB = "data_tfrecord-*.gz"
_SPLIT_DIR = re.compile(r"^Split-([A-Za-z0-9_.-]+)$")


def spans_of(properties: Mapping) -> list:
    """The span numbers recorded on an Examples artifact ([] when none are recorded)."""
    return list(properties.get(SPANS) or [])


def split_dir(uri: str, split: str) -> str:
    """The folder of `split` inside a split artifact: `<uri>/Split-<split>`."""
    return os.path.join(uri, f"{SPLIT_PREFIX}{split}")


def shard_path(uri: str, split: str, shard: int, num_shards: int) -> str:
    """`<uri>/Split-<split>/data_tfrecord-<shard>-of-<num_shards>.gz` (5 digits each)."""
    return os.path.join(split_dir(uri, split), f"data_tfrecord-{shard:05d}-of-{num_shards:05d}.gz")


def split_dirs(uri: str, what: str, required: bool = True) -> dict:
    """{split name: folder} of the `Split-*` folders of a split artifact, by split name.

    what: how messages name the artifact ("examples artifact"). Raises InputDataError when
    `uri` is not a directory, or (when `required`) holds no `Split-*` folder.
    """
    if not os.path.isdir(uri):
        raise InputDataError(f"{what} {uri}: not a directory")
    found = {}
    for name in sorted(os.listdir(uri)):
        match = _SPLIT_DIR.match(name)
        if match and os.path.isdir(os.path.join(uri, name)):
            found[match.group(1)] = os.path.join(uri, name)
    if required and not found:
        raise InputDataError(f"{what} {uri}: no {SPLIT_PREFIX}* directory")
    return found


def split_files(uri: str, split: str) -> list[str]:
    """The sorted shard files of `split` in the Examples artifact at `uri`.

    Raises InputDataError naming the split folder when it is missing or holds no shard.
    """
    folder = split_dir(uri, split)
    if not os.path.isdir(folder):
        raise InputDataError(f"examples {folder}: split folder missing")
    files = sorted(glob.glob(os.path.join(folder, SHARD_GLOB)))
    if not files:
        raise InputDataError(f"examples {folder}: no {SHARD_GLOB} shard")
    return files


def split_pattern(uri: str, split: str) -> str:
    """The file pattern of the shards of `split` (for Beam readers), once `split_files` found some."""
    split_files(uri, split)
    return os.path.join(split_dir(uri, split), SHARD_GLOB)


def list_splits(uri: str) -> dict:
    """{split name: shard file pattern} of every split of the Examples artifact at `uri`.

    Raises InputDataError when the directory is missing, holds no `Split-*` directory, or a
    split directory holds no shard.
    """
    return {split: split_pattern(uri, split) for split in split_dirs(uri, "examples artifact")}


def check_recorded_counts(examples, counts: Mapping[str, int]) -> None:
    """Raises InputDataError when a split's examples counted now (`counts`: split -> count)
    differ from what ExampleGen recorded in the Examples artifact `examples` (property
    SPLIT_COUNTS): a shard cut short (a truncated gzip stream reads without an error) or
    rewritten since. Splits ExampleGen recorded nothing for, and artifacts without the
    property, pass."""
    recorded = (examples.properties or {}).get(SPLIT_COUNTS) or {}
    for split, count in counts.items():
        if split in recorded and int(recorded[split]) != count:
            raise InputDataError(
                f"examples artifact {examples.uri}: split {split} holds {count} examples, "
                f"but example_gen recorded {recorded[split]} (a shard is truncated or was rewritten)"
            )


def read_images(uri: str, split: str, batch_size: int = 4096):
    """The `image` feature of every example of `split`, in shard and record order, as uint8
    [N, IMAGE_PIXELS] (index i is the split's i-th record).

    Raises InputDataError naming the split folder when it has no shard, a record does not parse
    or lacks the feature, or a pixel lies outside 0..MAX_PIXEL.
    """
    import numpy as np  # noqa: PLC0415  kept with TensorFlow: most readers of this module need neither
    import tensorflow as tf  # noqa: PLC0415  the CLI and the report read this module without TensorFlow

    files = split_files(uri, split)
    spec = {IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_PIXELS], tf.int64)}

    def parse(records):
        pixels = tf.io.parse_example(records, spec)[IMAGE_KEY]
        in_range = tf.reduce_all((pixels >= 0) & (pixels <= MAX_PIXEL))
        return tf.cast(pixels, tf.uint8), in_range

    # Parsing in parallel keeps the batches in order (tf.data's map is deterministic): index i
    # is still the i-th record of the sorted shards.
    dataset = (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(batch_size)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(2)
    )
    parts = []
    try:
        for batch, in_range in dataset.as_numpy_iterator():
            if not in_range:
                raise InputDataError(f"examples {split_dir(uri, split)}: a pixel outside 0..{MAX_PIXEL}")
            parts.append(batch)
    except tf.errors.OpError as e:
        raise InputDataError(
            f"examples {split_dir(uri, split)}: unreadable records ({e.message.splitlines()[0]})"
        ) from e
    return np.concatenate(parts) if parts else np.zeros((0, IMAGE_PIXELS), dtype=np.uint8)
