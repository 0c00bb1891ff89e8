"""Exporting the serving contract of `pipeline.formats.model`, and checking the export.

The Estimator exports a SavedModel with two signatures:
- `serving_default`: `examples` (tf.string [None], serialized tf.Example) -> `class_ids`
  (int64 [None]) and `probabilities` (float32 [None, 10]);
- `serving_images`: `images` (float32 [None, 784], pixel values 0..255) -> the same outputs.

The second signature comes from a receiver-tensors alternative. The Estimator names such
signatures "<receiver>:<output>" ("images:serving_default"); `rename_signatures` gives it its
contract name in the SavedModel proto, which leaves the graph and variables untouched.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from pipeline.core.errors import TrainingError
from pipeline.formats.examples import IMAGE_KEY, IMAGE_PIXELS, NUM_CLASSES
from pipeline.formats.model import (
    CLASS_IDS,
    EXAMPLES_INPUT,
    EXAMPLES_SIGNATURE,
    IMAGES_INPUT,
    IMAGES_SIGNATURE,
    PROBABILITIES,
)

# What the Estimator calls the signature built from the `images` receiver alternative.
ESTIMATOR_IMAGES_SIGNATURE = f"{IMAGES_INPUT}:{EXAMPLES_SIGNATURE}"

# Each signature's input name, dtype and shape; both return the same outputs.
SIGNATURE_INPUTS = {
    EXAMPLES_SIGNATURE: (EXAMPLES_INPUT, tf.string, [None]),
    IMAGES_SIGNATURE: (IMAGES_INPUT, tf.float32, [None, IMAGE_PIXELS]),
}
SIGNATURE_OUTPUTS = {
    CLASS_IDS: (tf.int64, [None]),
    PROBABILITIES: (tf.float32, [None, NUM_CLASSES]),
}


def serving_input_receiver_fn() -> tf.estimator.export.ServingInputReceiver:
    """The Estimator's serving input: serialized tf.Examples, or raw images as an alternative.

    The parsed image feeds a `placeholder_with_default` named `images`: the `examples` signature
    computes it from the parsed records, the `images` alternative feeds it directly.
    """
    examples = tf.compat.v1.placeholder(tf.string, [None], name=EXAMPLES_INPUT)
    parsed = tf.io.parse_example(examples, {IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_PIXELS], tf.int64)})
    images = tf.compat.v1.placeholder_with_default(
        tf.cast(parsed[IMAGE_KEY], tf.float32), [None, IMAGE_PIXELS], name=IMAGES_INPUT
    )
    return tf.estimator.export.ServingInputReceiver(
        features={IMAGE_KEY: images},
        receiver_tensors={EXAMPLES_INPUT: examples},
        receiver_tensors_alternatives={IMAGES_INPUT: {IMAGES_INPUT: images}},
    )


def rename_signatures(export_dir: str, renames: Mapping[str, str]) -> None:
    """Renames signatures in `<export_dir>/saved_model.pb` (old name -> new name).

    Raises TrainingError when an old name is missing or a new name is already taken.
    """
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = saved_model_pb2.SavedModel()
    with open(path, "rb") as f:
        saved_model.ParseFromString(f.read())
    for meta_graph in saved_model.meta_graphs:
        signatures = meta_graph.signature_def
        for old, new in renames.items():
            if old not in signatures:
                raise TrainingError(
                    f"exported model {export_dir}: no signature {old!r} to rename (has {sorted(signatures)})"
                )
            if new in signatures:
                raise TrainingError(f"exported model {export_dir}: signature {new!r} already exists")
            signatures[new].CopyFrom(signatures[old])
            del signatures[old]
    tmp_path = path + ".tmp"
    with open(tmp_path, "wb") as f:
        f.write(saved_model.SerializeToString())
    os.replace(tmp_path, path)


def move_tree(src: str, dst: str) -> None:
    """Moves folder `src` to `dst` (which must not exist): a rename on one file system; across
    two, a copy of every file, then `src` removed.

    Raises OSError as the copy meets it (e.g. ENOSPC), naming the file it failed on; unlike
    shutil.move, which gathers a copy's errors into one shutil.Error without a path or reason.
    """
    try:
        os.rename(src, dst)
        return
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = dst if rel == "." else os.path.join(dst, rel)
        os.mkdir(target)
        dirs.sort()
        for name in sorted(files):
            shutil.copy2(os.path.join(root, name), os.path.join(target, name))
    shutil.rmtree(src)


def _check_spec(where: str, spec, dtype, shape) -> None:
    if spec.dtype != dtype or spec.shape.as_list() != shape:
        raise TrainingError(
            f"{where}: expected {dtype.name} {shape}, got {spec.dtype.name} {spec.shape.as_list()}"
        )


def verify_serving_model(export_dir: str, serialized_examples, images: np.ndarray) -> None:
    """Loads the SavedModel and checks the serving contract.

    Both signatures must exist with the contract's input and outputs, answer on the given
    records (`serialized_examples`: list of serialized tf.Example bytes; `images`: the same
    records' pixels as float32 [N, 784]) with valid probabilities, and agree with each other.
    Raises TrainingError naming the signature and what is wrong.
    """
    loaded = tf.saved_model.load(export_dir)
    signatures = loaded.signatures
    inputs = {
        EXAMPLES_SIGNATURE: tf.constant(serialized_examples, tf.string),
        IMAGES_SIGNATURE: tf.constant(images, tf.float32),
    }
    answers = {}
    for name, (input_name, dtype, shape) in SIGNATURE_INPUTS.items():
        where = f"exported model {export_dir}: signature {name!r}"
        if name not in signatures:
            raise TrainingError(f"{where} missing (has {sorted(signatures)})")
        function = signatures[name]
        input_specs = function.structured_input_signature[1]
        if set(input_specs) != {input_name}:
            raise TrainingError(f"{where}: inputs {sorted(input_specs)}, expected [{input_name!r}]")
        _check_spec(f"{where} input {input_name!r}", input_specs[input_name], dtype, shape)
        outputs = function.structured_outputs
        if set(outputs) != set(SIGNATURE_OUTPUTS):
            raise TrainingError(f"{where}: outputs {sorted(outputs)}, expected {sorted(SIGNATURE_OUTPUTS)}")
        for key, (out_dtype, out_shape) in SIGNATURE_OUTPUTS.items():
            _check_spec(f"{where} output {key!r}", outputs[key], out_dtype, out_shape)
        result = function(**{input_name: inputs[name]})
        answers[name] = {key: value.numpy() for key, value in result.items()}
        probabilities = answers[name][PROBABILITIES]
        if not np.all(np.isfinite(probabilities)) or not np.allclose(
            probabilities.sum(axis=1), 1.0, atol=1e-4
        ):
            raise TrainingError(f"{where}: probabilities are not finite or do not sum to 1")
    by_examples, by_images = answers[EXAMPLES_SIGNATURE], answers[IMAGES_SIGNATURE]
    if not (
        np.array_equal(by_examples[CLASS_IDS], by_images[CLASS_IDS])
        and np.allclose(by_examples[PROBABILITIES], by_images[PROBABILITIES], atol=1e-5)
    ):
        raise TrainingError(
            f"exported model {export_dir}: signatures {EXAMPLES_SIGNATURE!r} and "
            f"{IMAGES_SIGNATURE!r} disagree on the same records"
        )
