"""Tiny Examples artifacts (the ExampleGen layout) written straight from real digits, for tests.

`write_examples_artifact` writes `<dest>/Split-<split>/data_tfrecord-00000-of-00001.gz` with the
features ExampleGen writes. Each split is given as a `SplitData`, which tests can corrupt (label
11, a 783-pixel image, a dropped feature, pixel 300) before writing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from mnist_slices import TRAIN_IMAGES, TRAIN_LABELS, read_real
from step_context import TEST_BEAM_ARGS, step_context

from pipeline.formats.examples import DEFAULT_INK_DENSITY_EDGES


@dataclass
class SplitData:
    """One split's examples: images (list of int arrays, normally 784 values) and labels.

    drop: feature name -> indices of examples written without that feature.
    """

    images: list[np.ndarray]
    labels: np.ndarray
    drop: dict[str, list[int]] = field(default_factory=dict)


def real_split(count: int, offset: int = 0, digits: tuple | None = None) -> SplitData:
    """`count` real training digits from `offset`; only those in `digits` when given."""
    if digits is None:
        images = read_real(TRAIN_IMAGES, count, offset).reshape(count, 784).astype(np.int64)
        labels = read_real(TRAIN_LABELS, count, offset).astype(np.int64)
    else:
        pool = 12 * count  # enough real digits to draw `count` of a subset of classes from
        images = read_real(TRAIN_IMAGES, pool, offset).reshape(pool, 784).astype(np.int64)
        labels = read_real(TRAIN_LABELS, pool, offset).astype(np.int64)
        keep = np.flatnonzero(np.isin(labels, digits))[:count]
        assert keep.size == count, "not enough digits of the requested classes"
        images, labels = images[keep], labels[keep]
    return SplitData(images=list(images), labels=labels)


def _example(image: np.ndarray, label: int, dropped: set):
    import tensorflow as tf

    image = np.asarray(image, dtype=np.int64)
    density = float(np.mean(image > 127))
    feats = {
        "image": tf.train.Feature(int64_list=tf.train.Int64List(value=image)),
        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)])),
        "ink_density": tf.train.Feature(float_list=tf.train.FloatList(value=[density])),
        "ink_density_bucket": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(np.digitize(density, DEFAULT_INK_DENSITY_EDGES))])
        ),
    }
    for name in dropped:
        feats.pop(name)
    return tf.train.Example(features=tf.train.Features(feature=feats))


def write_examples_artifact(dest: str, splits: dict[str, SplitData]) -> str:
    """Writes an Examples artifact with the given splits under `dest`; returns `dest`."""
    import tensorflow as tf

    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split, data in splits.items():
        split_dir = os.path.join(dest, f"Split-{split}")
        os.makedirs(split_dir, exist_ok=True)
        dropped_at = {}
        for name, indices in data.drop.items():
            for i in indices:
                dropped_at.setdefault(i, set()).add(name)
        path = os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options=options) as writer:
            for i, (image, label) in enumerate(zip(data.images, data.labels)):
                writer.write(_example(image, label, dropped_at.get(i, set())).SerializeToString())
    return dest


def compute_statistics(
    examples_uri: str, out_dir: str, properties: dict | None = None, beam_args=TEST_BEAM_ARGS
):
    """Runs the statistics_gen executor over `examples_uri` into `out_dir`; returns its outcome."""
    from components.statistics_gen import executor
    from pipeline.core.step import Artifact

    ctx = step_context(
        "statistics_gen",
        {"examples": Artifact(examples_uri, "Examples", properties or {})},
        {"statistics": out_dir},
        beam_args=beam_args,
    )
    return executor.run(ctx)


def curated_schema_artifact(path=None):
    """The curated schema file as the `curated_schema` input the runner resolves (by content)."""
    from pipeline.config import DEFAULT_SCHEMA_PATH
    from pipeline.core.digest import file_digest
    from pipeline.core.step import Artifact

    path = str(path or DEFAULT_SCHEMA_PATH)
    return Artifact(path, "CuratedSchema", {"content_digest": file_digest(path)})


def reference_artifact(path=None):
    """The reference statistics file as the `reference_statistics` input the runner resolves
    for a first span (by content; default: the shipped MNIST reference)."""
    from pipeline.config import DEFAULT_REFERENCE_PATH
    from pipeline.core.digest import file_digest
    from pipeline.core.step import Artifact

    path = str(path or DEFAULT_REFERENCE_PATH)
    return Artifact(path, "ReferenceStatistics", {"content_digest": file_digest(path)})
