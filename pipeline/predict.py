"""Classify digit files with the model serving now (`run_local.py predict`).

The served model is the newest integer version in the serving folder (what TF Serving loads).
Before it is loaded, its files are checked against the digest recorded for that push in ML
Metadata (`<pipeline_root>/metadata.sqlite`: the PushedModel artifact of that version and
serving folder, and the Model artifact it names). A mismatch is refused; a version without a
push record is refused too unless `allow_unverified` (then it is loaded, and said so).

Also here: `classify`, the batched call of a SavedModel's `serving_images` signature that the
run report's gallery of misclassified digits uses.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.core.digest import directory_digest
from pipeline.core.errors import ConfigError, ModelIntegrityError, PipelineError
from pipeline.core.metadata import open_store, store_path
from pipeline.digit_inputs import DigitImage, read_digits
from pipeline.formats import pushed_model as pushed_format
from pipeline.formats.examples import IMAGE_PIXELS, NUM_CLASSES
from pipeline.formats.model import CLASS_IDS, DIGEST, IMAGES_INPUT, IMAGES_SIGNATURE, PROBABILITIES

log = logging.getLogger(__name__)

BATCH_SIZE = 1000


@dataclass(frozen=True)
class ServedModel:
    """The model to classify with: serving `version` at `path`.

    verified: its files matched `digest`, recorded for the push of model `model_id`.
    """

    version: int
    path: str
    verified: bool
    digest: str | None = None
    model_id: int | None = None


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one digit image."""

    image: DigitImage
    digit: int
    confidence: float

    def line(self) -> str:
        """`file[index] -> digit (confidence)`, plus a note when the image was inverted."""
        text = f"{self.image.source}[{self.image.index}] -> {self.digit} ({self.confidence:.4f})"
        if self.image.inverted:
            text += " [inverted: dark digit on a light background]"
        return text


def newest_version(serving_dir: str) -> int:
    """The highest integer version folder in `serving_dir`; ConfigError when there is none."""
    try:
        versions = pushed_format.list_versions(serving_dir)
    except OSError as e:
        raise ConfigError(f"serving dir {serving_dir}: cannot be listed ({e.strerror})") from e
    if not versions:
        raise ConfigError(
            f"serving dir {serving_dir}: no model version published yet "
            "(run the pipeline, or pass --serving-dir / --pipeline-root)"
        )
    return versions[-1]


def recorded_digest(
    pipeline_root: str, serving_dir: str, version: int, store_settings=None
) -> tuple[str, int] | None:
    """(digest, model id) recorded in ML Metadata for `version` pushed to `serving_dir`.

    store_settings: the MySqlSettings of a shared store (None: the root's metadata.sqlite).
    None when the pipeline root has no SQLite metadata store, or the store has no successful
    push (or rollback) of that version into that folder. A record whose model has no digest
    gives ("", model id), which never matches.
    """
    if store_settings is None and not os.path.isfile(store_path(pipeline_root)):
        return None
    store = open_store(pipeline_root, store_settings)
    pushed = pushed_format.find_push(store, serving_dir, version)
    if pushed is None:
        return None
    model_id = pushed_format.pushed_model_id(pushed.properties)
    digest = store.artifact(model_id).properties.get(DIGEST)
    return (digest if isinstance(digest, str) else "", model_id)


def resolve_served_model(
    serving_dir: str, pipeline_root: str, allow_unverified: bool = False, store_settings=None
) -> ServedModel:
    """The newest serving version, verified against its push record (see the module docstring).

    store_settings: as `recorded_digest`.

    Raises ConfigError when nothing is published, ModelIntegrityError when the files do not
    match the recorded digest, or when there is no record and `allow_unverified` is False.
    """
    version = newest_version(serving_dir)
    path = os.path.join(serving_dir, str(version))
    record = recorded_digest(pipeline_root, serving_dir, version, store_settings)
    if record is None:
        where = (
            store_settings.describe()
            if store_settings is not None
            else os.path.join(pipeline_root, "metadata.sqlite")
        )
        if not allow_unverified:
            raise ModelIntegrityError(
                f"serving version {version} in {serving_dir}: no push record in "
                f"{where} to verify it against; refusing to "
                "load it (pass --pipeline-root of the pipeline that pushed it, or --allow-unverified)"
            )
        log.warning(
            "serving version %d in %s has no push record: loading it UNVERIFIED", version, serving_dir
        )
        return ServedModel(version, path, verified=False)
    expected, model_id = record
    try:
        actual = directory_digest(path)
    except (OSError, ValueError) as e:
        raise ModelIntegrityError(f"serving version {version} at {path}: cannot compute digest: {e}") from e
    if not expected or actual != expected:
        raise ModelIntegrityError(
            f"serving version {version} at {path}: digest {actual[:12]}... does not match the "
            f"{expected[:12] or '(missing)'}... recorded for model id {model_id}; refusing to load it"
        )
    return ServedModel(version, path, verified=True, digest=expected, model_id=model_id)


def classify(
    model_dir: str, images: np.ndarray, batch_size: int = BATCH_SIZE, model=None
) -> tuple[np.ndarray, np.ndarray]:
    """Runs the SavedModel's `serving_images` signature on `images` (float32 [N, 784], 0..255).

    model: an already loaded SavedModel (loaded from `model_dir` when None); load it only
        after its digest was verified.
    Returns (class_ids int64 [N], probabilities float32 [N, 10]).
    Raises PipelineError naming `model_dir` when the signature is missing or answers out of contract.
    """
    import tensorflow as tf  # noqa: PLC0415  TensorFlow (seconds) only to classify, kept out of the CLI start-up

    images = np.asarray(images, dtype=np.float32).reshape(-1, IMAGE_PIXELS)
    if model is None:
        model = tf.saved_model.load(model_dir)
    if IMAGES_SIGNATURE not in model.signatures:
        raise PipelineError(
            f"model {model_dir}: no {IMAGES_SIGNATURE} signature "
            f"(has {', '.join(sorted(model.signatures)) or 'none'})"
        )
    signature = model.signatures[IMAGES_SIGNATURE]
    class_ids, probabilities = [], []
    for start in range(0, len(images), batch_size):
        outputs = signature(**{IMAGES_INPUT: tf.constant(images[start : start + batch_size])})
        class_ids.append(outputs[CLASS_IDS].numpy().astype(np.int64).reshape(-1))
        probabilities.append(outputs[PROBABILITIES].numpy().astype(np.float32))
    ids = np.concatenate(class_ids) if class_ids else np.zeros(0, np.int64)
    probs = np.concatenate(probabilities) if probabilities else np.zeros((0, NUM_CLASSES), np.float32)
    if (
        probs.shape != (len(images), NUM_CLASSES)
        or ids.shape != (len(images),)
        or not np.all(np.isfinite(probs))
        or np.any((ids < 0) | (ids >= NUM_CLASSES))
    ):
        raise PipelineError(
            f"model {model_dir}: {IMAGES_SIGNATURE} answered class_ids {ids.shape} and "
            f"probabilities {probs.shape} for {len(images)} images, or values out of range"
        )
    return ids, probs


def predict_files(
    paths: Sequence[str],
    serving_dir: str,
    pipeline_root: str,
    invert: str = "auto",
    allow_unverified: bool = False,
    store_settings=None,
) -> tuple[ServedModel, list[Prediction]]:
    """Classifies every digit in `paths` (PNG or gzip IDX images) with the served model.

    store_settings: the MySqlSettings of a shared metadata store (None: the root's SQLite file).

    Every file is read and validated before the model is resolved and loaded, so a bad file
    fails fast (InputDataError naming it). Raises as `resolve_served_model` and `classify`.
    Returns the model used and one Prediction per digit, in file and record order.
    """
    digits = [digit for path in paths for digit in read_digits(path, invert)]
    served = resolve_served_model(serving_dir, pipeline_root, allow_unverified, store_settings)
    class_ids, probabilities = classify(served.path, np.stack([d.pixels for d in digits]))
    confidence = probabilities[np.arange(len(digits)), class_ids]
    return served, [Prediction(d, int(c), float(p)) for d, c, p in zip(digits, class_ids, confidence)]
