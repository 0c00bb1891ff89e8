"""The report's model analysis: TFMA's confusion matrices and the misclassified test digits.

This is the only part of the report that needs TensorFlow (and TFMA). Its result is a plain,
JSON-ready dict, cached by content (see `pipeline.report.cache`), so that a rerun whose
evaluator was cached does not load TensorFlow again.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from components.evaluator.metrics import confusion_matrix
from pipeline.errors import InputDataError
from pipeline.report.images import png_data_uri

log = logging.getLogger(__name__)

NUM_CLASSES = 10
# The test split is read up to this many examples for the gallery (the full MNIST test set).
MAX_EXAMPLES = 10_000
# Misclassified digits shown, most confident mistakes first.
GALLERY_SIZE = 48
UNNAMED_MODEL = "candidate"  # TFMA leaves the model name out when it evaluated one model


def confusion_matrices(evaluation_uri: str) -> dict:
    """The overall-slice MultiClassConfusionMatrix of each model in a TFMA output.

    Returns {model_name: {"matrix": 10x10 counts [actual][predicted], "threshold": float}}
    (the argmax matrix: threshold 0, or the lowest threshold present). Raises InputDataError
    when the output holds no confusion matrix plot for the overall slice.
    """
    import tensorflow_model_analysis as tfma

    result = {}
    for plots in tfma.load_plots(evaluation_uri):
        if plots.slice_key.single_slice_keys:
            continue  # only the overall slice
        for entry in plots.plot_keys_and_values:
            value = entry.value
            if not value.HasField("multi_class_confusion_matrix_at_thresholds"):
                continue
            matrix = confusion_matrix(value, NUM_CLASSES)
            if matrix is None:
                continue
            chosen = min(value.multi_class_confusion_matrix_at_thresholds.matrices, key=lambda m: m.threshold)
            result[entry.key.model_name or UNNAMED_MODEL] = {
                "matrix": matrix.round().astype(int).tolist(), "threshold": float(chosen.threshold)}
    if not result:
        raise InputDataError(f"TFMA output {evaluation_uri}: no confusion matrix plot for the overall slice")
    return result


def misclassified(model_dir: str, examples_uri: str, max_examples: int = MAX_EXAMPLES,
                  keep: int = GALLERY_SIZE) -> dict:
    """Runs the (already verified) SavedModel at `model_dir` on the test split; keeps the mistakes.

    Reads the first `max_examples` test examples in shard order. Returns
    {"scanned": n, "misclassified": m, "seconds": s, "items": [up to `keep` dicts, most confident
    mistake first: {"png": data URI, "label": int, "predicted": int, "confidence": float,
    "label_probability": float}]}.
    Raises InputDataError when the test split is missing, empty or unreadable.
    """
    import tensorflow as tf

    from components.trainer import inputs
    from pipeline.predict import classify

    started = time.monotonic()
    files = inputs.split_files(examples_uri, "test")
    model = tf.saved_model.load(model_dir)
    worst_images, worst_rows = [], []
    scanned = wrong_total = 0
    try:
        for features, labels in inputs.make_dataset(files, 1000, training=False, max_examples=max_examples):
            images = features["image"].numpy()
            labels = labels.numpy().astype(np.int64)
            class_ids, probabilities = classify(model_dir, images, model=model)
            wrong = np.flatnonzero(class_ids != labels)
            scanned += len(labels)
            wrong_total += len(wrong)
            if len(wrong):
                worst_images.append(images[wrong])
                worst_rows.append(np.stack([labels[wrong], class_ids[wrong],
                                            probabilities[wrong, class_ids[wrong]],
                                            probabilities[wrong, labels[wrong]]], axis=1))
                # Keep memory bounded: only the `keep` most confident mistakes so far.
                stacked_rows, stacked_images = np.concatenate(worst_rows), np.concatenate(worst_images)
                order = np.argsort(-stacked_rows[:, 2], kind="stable")[:keep]
                worst_rows, worst_images = [stacked_rows[order]], [stacked_images[order]]
    except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
        raise InputDataError(f"examples {examples_uri}/Split-test: unreadable records "
                             f"({str(e).strip().splitlines()[0]})") from e
    if scanned == 0:
        raise InputDataError(f"examples {examples_uri}/Split-test: no records")
    items = []
    if worst_rows:
        for pixels, (label, predicted, confidence, label_probability) in zip(worst_images[0], worst_rows[0]):
            items.append({"png": png_data_uri(pixels), "label": int(label), "predicted": int(predicted),
                          "confidence": float(confidence), "label_probability": float(label_probability)})
    seconds = time.monotonic() - started
    log.info("report: %d of %d test digits misclassified (%.1fs)", wrong_total, scanned, seconds)
    return {"scanned": scanned, "misclassified": wrong_total, "seconds": round(seconds, 2), "items": items}
