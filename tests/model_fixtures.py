"""Test fixtures for the evaluator and pusher: small Examples artifacts and a tiny SavedModel.

The SavedModel honours the Model contract (see the common layouts) without the trainer: a
softmax regression over the 784 pixels, fitted for a few full-batch steps on real training
digits and saved with `tf.saved_model.save` from a `tf.Module` holding two signatures:

- `serving_default`: `examples` tf.string [None] (serialized tf.Example) -> `class_ids` int64 [None],
  `probabilities` float32 [None, 10];
- `serving_images`: `images` float32 [None, 784] (pixel values 0..255) -> the same outputs.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
from mnist_slices import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_real

from pipeline.core.digest import directory_digest
from pipeline.formats.examples import DEFAULT_INK_DENSITY_EDGES
from pipeline.formats.model import DIGEST_FILE, SERVING_SUBDIR


def digit_features(images: np.ndarray, edges=DEFAULT_INK_DENSITY_EDGES):
    """Returns (flat int64 pixels N x 784, ink_density float N, ink_density_bucket int64 N)."""
    flat = images.reshape(len(images), 784).astype(np.int64)
    density = (flat > 127).mean(axis=1).astype(np.float32)
    bucket = np.digitize(density, edges).astype(np.int64)
    return flat, density, bucket


def serialize_examples(images: np.ndarray, labels: np.ndarray, edges=DEFAULT_INK_DENSITY_EDGES) -> list:
    """Returns serialized tf.train.Example bytes with the Examples contract's four features."""
    import tensorflow as tf

    flat, density, bucket = digit_features(images, edges)
    records = []
    for pixels, label, dens, buck in zip(flat, labels.astype(np.int64), density, bucket):
        example = tf.train.Example(
            features=tf.train.Features(
                feature={
                    "image": tf.train.Feature(int64_list=tf.train.Int64List(value=pixels)),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    "ink_density": tf.train.Feature(float_list=tf.train.FloatList(value=[dens])),
                    "ink_density_bucket": tf.train.Feature(int64_list=tf.train.Int64List(value=[buck])),
                }
            )
        )
        records.append(example.SerializeToString())
    return records


def write_examples(uri: str, n_test: int, offset: int = 0, split: str = "test") -> str:
    """Writes real test digits [offset, offset+n_test) as `<uri>/Split-<split>/` gzip TFRecords.

    Returns `uri` (the Examples artifact directory).
    """
    import tensorflow as tf

    images = read_real(TEST_IMAGES, n_test, offset)
    labels = read_real(TEST_LABELS, n_test, offset)
    split_dir = os.path.join(uri, f"Split-{split}")
    os.makedirs(split_dir, exist_ok=True)
    path = os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in serialize_examples(images, labels):
            writer.write(record)
    return uri


def read_records(paths) -> list:
    """Returns every serialized record of the gzip TFRecord files `paths`, in file order."""
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(list(paths), compression_type="GZIP")]


def _fit_softmax(n_train: int, steps: int, seed: int):
    """Fits softmax regression on real digits with full-batch Adam; returns (W, b) arrays."""
    import tensorflow as tf

    x = read_real(TRAIN_IMAGES, n_train).reshape(n_train, 784).astype(np.float32) / 255.0
    y = read_real(TRAIN_LABELS, n_train).astype(np.int64)
    rng = np.random.default_rng(seed)
    w = tf.Variable(rng.normal(0.0, 0.01, size=(784, 10)).astype(np.float32))
    b = tf.Variable(np.zeros(10, np.float32))
    optimizer = tf.keras.optimizers.Adam(learning_rate=0.05)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            logits = tf.matmul(x, w) + b
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        optimizer.apply_gradients(zip(tape.gradient(loss, [w, b]), [w, b]))
    return w.numpy(), b.numpy()


def _serving_module(weights: np.ndarray, bias: np.ndarray):
    import tensorflow as tf

    class DigitsModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(weights, name="w")
            self.b = tf.Variable(bias, name="b")

        def _predict(self, images):
            probabilities = tf.nn.softmax(tf.matmul(images / 255.0, self.w) + self.b)
            return {
                "class_ids": tf.argmax(probabilities, axis=1, output_type=tf.int64),
                "probabilities": probabilities,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_examples(self, examples):
            parsed = tf.io.parse_example(examples, {"image": tf.io.FixedLenFeature([784], tf.int64)})
            return self._predict(tf.cast(parsed["image"], tf.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
        def serve_images(self, images):
            return self._predict(images)

    return DigitsModel()


def build_model(uri: str, n_train: int = 1000, steps: int = 40, seed: int = 0) -> str:
    """Writes a Model artifact at `<uri>/Format-Serving` (+ model_digest.json); returns its digest.

    More `steps` give a better model (40 steps on 1000 digits: about 85% test accuracy);
    `steps=0` leaves the random initial weights (about chance).
    """
    import tensorflow as tf

    weights, bias = _fit_softmax(n_train, steps, seed)
    module = _serving_module(weights, bias)
    export_dir = os.path.join(uri, SERVING_SUBDIR)
    tf.saved_model.save(
        module,
        export_dir,
        signatures={
            "serving_default": module.serve_examples,
            "serving_images": module.serve_images,
        },
    )
    digest = directory_digest(export_dir)
    with open(os.path.join(uri, DIGEST_FILE), "w") as f:
        json.dump({"digest": digest}, f)
    return digest


def copy_model(src_uri: str, dest_uri: str) -> str:
    """Copies a Model artifact directory; returns the digest of the copy's Format-Serving."""
    shutil.copytree(src_uri, dest_uri)
    return directory_digest(os.path.join(dest_uri, SERVING_SUBDIR))


def tamper_with_variables(uri: str) -> str:
    """Flips one byte of the model's variables data file; returns the file changed."""
    variables = os.path.join(uri, SERVING_SUBDIR, "variables")
    data = sorted(n for n in os.listdir(variables) if n.startswith("variables.data"))[0]
    path = os.path.join(variables, data)
    with open(path, "r+b") as f:
        f.seek(8)
        byte = f.read(1)
        f.seek(8)
        f.write(bytes([byte[0] ^ 0xFF]))
    return path
