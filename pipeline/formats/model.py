"""Model: a SavedModel in `Format-Serving/`, loaded only when its files match the digest recorded at export.

Files: `Format-Serving/` (the SavedModel) and `model_digest.json` ({"digest", "algorithm"}).
Properties: `digest`, the `pipeline.core.digest.directory_digest` of `Format-Serving/`;
`module_file` and `module_digest`, the trainer module that built the network (absent on models
exported before modules existed).

Serving contract of the SavedModel (the trainer exports it, the pusher checks it before a
version is published, `predict` and the evaluator call it):
- `serving_default`: `examples` (tf.string [None], serialized tf.Example) -> `class_ids`
  (int64 [None], 0..NUM_CLASSES-1) and `probabilities` (float32 [None, NUM_CLASSES], rows
  summing to 1);
- `serving_images`: `images` (float32 [None, IMAGE_PIXELS], pixel values 0..255) -> the same
  outputs; both signatures agree on the same digits.

Every reader of a Model artifact goes through `verify_model`: the evaluator (candidate and
baseline), the pusher and the trainer's warm start. (The report loads no model.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from pipeline.core.digest import directory_digest
from pipeline.core.errors import ModelIntegrityError, PushError
from pipeline.core.step import Artifact
from pipeline.formats.examples import IMAGE_KEY, IMAGE_PIXELS, NUM_CLASSES

ARTIFACT_TYPE = "Model"
# The trainer's second output: checkpoints, TensorBoard event files and the training history
# (one record per evaluation plus the run's summary).
RUN_ARTIFACT_TYPE = "ModelRun"
HISTORY_FILE = "training_history.json"
SERVING_SUBDIR = "Format-Serving"
DIGEST = "digest"
# Which trainer module made the model: its absolute path and the sha256 of its bytes.
MODULE_FILE = "module_file"
MODULE_DIGEST = "module_digest"
DIGEST_FILE = "model_digest.json"
DIGEST_ALGORITHM = "sha256-tree"

EXAMPLES_SIGNATURE = "serving_default"
IMAGES_SIGNATURE = "serving_images"
EXAMPLES_INPUT = "examples"
IMAGES_INPUT = "images"
CLASS_IDS = "class_ids"
PROBABILITIES = "probabilities"
_SUM_TOLERANCE = 1e-3


def verify_model(artifact: Artifact, role: str) -> str:
    """Checks directory_digest(<uri>/Format-Serving) against artifact.properties['digest'].

    role: how the message names the model ("candidate model", "baseline model", "base model").
    Returns the verified SavedModel directory.
    Raises ModelIntegrityError when the digest is missing, the directory is missing or unreadable,
    or the digests differ.
    """
    path = os.path.join(artifact.uri, SERVING_SUBDIR)
    expected = artifact.properties.get(DIGEST) if artifact.properties else None
    where = f"{role} {path} (artifact id {artifact.id})"
    if not isinstance(expected, str) or not expected:
        raise ModelIntegrityError(f"{where}: no recorded digest; refusing to load an unverified model")
    try:
        actual = directory_digest(path)
    except (OSError, ValueError) as e:
        raise ModelIntegrityError(f"{where}: cannot compute digest: {e}") from e
    if actual != expected:
        raise ModelIntegrityError(
            f"{where}: digest {actual[:12]}... does not match the recorded "
            f"{expected[:12]}...; the files changed after export"
        )
    return path


def write_model_digest(model_uri: str) -> str:
    """Digests `<model_uri>/Format-Serving`, writes `<model_uri>/model_digest.json`; returns it."""
    digest = directory_digest(os.path.join(model_uri, SERVING_SUBDIR))
    with open(os.path.join(model_uri, DIGEST_FILE), "w") as f:
        json.dump({DIGEST: digest, "algorithm": DIGEST_ALGORITHM}, f, indent=2)
        f.write("\n")
    return digest


# ---------------------------------------------------------------------------- serving check


def images_of(records: Sequence[bytes]) -> np.ndarray:
    """Returns the `image` features of serialized tf.Examples as float32 [N, IMAGE_PIXELS]."""
    import tensorflow as tf  # noqa: PLC0415  the report and the CLI's start-up read this module without TensorFlow

    parsed = tf.io.parse_example(
        tf.constant(list(records)), {IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_PIXELS], tf.int64)}
    )
    return parsed[IMAGE_KEY].numpy().astype(np.float32)


def _check_outputs(where: str, outputs, n: int) -> np.ndarray:
    """Validates one signature's outputs for n inputs; returns class_ids as numpy."""
    missing = {CLASS_IDS, PROBABILITIES} - set(outputs)
    if missing:
        raise PushError(f"{where}: outputs lack {', '.join(sorted(missing))}")
    class_ids = outputs[CLASS_IDS].numpy()
    probabilities = outputs[PROBABILITIES].numpy()
    if class_ids.dtype != np.int64 or class_ids.shape != (n,):
        raise PushError(f"{where}: {CLASS_IDS} is {class_ids.dtype} {class_ids.shape}, expected int64 ({n},)")
    if probabilities.dtype != np.float32 or probabilities.shape != (n, NUM_CLASSES):
        raise PushError(
            f"{where}: {PROBABILITIES} is {probabilities.dtype} {probabilities.shape}, "
            f"expected float32 ({n}, {NUM_CLASSES})"
        )
    if not np.all(np.isfinite(probabilities)):
        raise PushError(f"{where}: {PROBABILITIES} hold NaN or Inf")
    if np.any(np.abs(probabilities.sum(axis=1) - 1.0) > _SUM_TOLERANCE):
        raise PushError(f"{where}: probability rows do not sum to 1")
    if np.any((class_ids < 0) | (class_ids >= NUM_CLASSES)):
        raise PushError(f"{where}: {CLASS_IDS} outside 0..{NUM_CLASSES - 1}")
    if np.any(class_ids != probabilities.argmax(axis=1)):
        raise PushError(f"{where}: {CLASS_IDS} disagree with the argmax of {PROBABILITIES}")
    return class_ids


def check_serving(model_dir: str, records: Sequence[bytes]) -> None:
    """Loads the SavedModel at `model_dir` and calls both signatures (the serving contract).

    records: serialized tf.Examples to answer; when empty only `serving_images` is called, on
        blank images (a rollback has no examples at hand).
    Raises PushError naming the signature and what is wrong.
    """
    import tensorflow as tf  # noqa: PLC0415  the report and the CLI's start-up read this module without TensorFlow

    try:
        model = tf.saved_model.load(model_dir)
    except Exception as e:  # a model that does not load must never be published
        raise PushError(
            f"staged model {model_dir} does not load: {type(e).__name__}: {e}".splitlines()[0]
        ) from e
    for name in (EXAMPLES_SIGNATURE, IMAGES_SIGNATURE):
        if name not in model.signatures:
            raise PushError(
                f"staged model {model_dir}: signature {name} missing "
                f"(has {', '.join(sorted(model.signatures)) or 'none'})"
            )
    try:
        images = images_of(records) if records else np.zeros((2, IMAGE_PIXELS), np.float32)
        by_images = _check_outputs(
            f"{model_dir} {IMAGES_SIGNATURE}",
            model.signatures[IMAGES_SIGNATURE](**{IMAGES_INPUT: tf.constant(images)}),
            len(images),
        )
        if records:
            by_examples = _check_outputs(
                f"{model_dir} {EXAMPLES_SIGNATURE}",
                model.signatures[EXAMPLES_SIGNATURE](**{EXAMPLES_INPUT: tf.constant(list(records))}),
                len(records),
            )
            if np.any(by_examples != by_images):
                raise PushError(
                    f"{model_dir}: {EXAMPLES_SIGNATURE} and {IMAGES_SIGNATURE} disagree on "
                    f"{int(np.sum(by_examples != by_images))} of {len(records)} examples"
                )
    except PushError:
        raise
    except Exception as e:  # a signature that cannot be called does not serve
        raise PushError(
            f"staged model {model_dir} failed to answer: {type(e).__name__}: {e}".splitlines()[0]
        ) from e
