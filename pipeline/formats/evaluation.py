"""ModelEvaluation: TFMA's output for the candidate (and the baseline) on the test split, plus
three files the evaluator writes from the same pass over the examples.

- `outcomes.npz` (numpy, no pickle): one row per evaluated example, rows aligned across arrays
  (ordered by the sha256 of the serialized example, so the file is the same on every run):
  `label` int64, `ink_density_bucket` int64 (-1 when the example has none),
  `candidate_correct` bool, and `baseline_correct` bool only when a baseline was evaluated.
  This is what a paired test of candidate against baseline reads.
- `mistakes.json`: {"scanned": n, "misclassified": m, "items": [at most MAX_MISTAKES, most
  confident mistake first: {"pixels": 784 ints 0..255, "label": int, "predicted": int,
  "confidence": p(predicted), "label_probability": p(label)}]} for the candidate.
- `confusion_matrix.json`: {model_name: {"matrix": NUM_CLASSES x NUM_CLASSES int counts
  [actual][predicted], "threshold": float}} from TFMA's MultiClassConfusionMatrixPlot of the
  overall slice (the argmax matrix: threshold 0, or the lowest threshold present).

An evaluation written before these files existed holds only TFMA's output:
`missing_per_example_files` says so. Readers raise InputDataError naming the file when it is
missing, malformed or inconsistent. Only numpy, json and the core here (no TensorFlow).
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import TypeGuard

import numpy as np

from pipeline.core.atomic_files import write_bytes_atomic, write_text_atomic
from pipeline.core.errors import InputDataError
from pipeline.formats import examples as examples_format

ARTIFACT_TYPE = "ModelEvaluation"
# The name of the slice of all examples (others are "<feature>=<value>", e.g. "label=3").
OVERALL_SLICE = "overall"

OUTCOMES_FILE = "outcomes.npz"
MISTAKES_FILE = "mistakes.json"
CONFUSION_FILE = "confusion_matrix.json"
PER_EXAMPLE_FILES = (OUTCOMES_FILE, MISTAKES_FILE, CONFUSION_FILE)

NUM_CLASSES = examples_format.NUM_CLASSES
PIXELS = examples_format.IMAGE_PIXELS
MAX_MISTAKES = 48
NO_BUCKET = -1

LABEL = examples_format.LABEL_KEY
INK_DENSITY_BUCKET = examples_format.INK_DENSITY_BUCKET_KEY
CANDIDATE_CORRECT = "candidate_correct"
BASELINE_CORRECT = "baseline_correct"
# name -> numpy dtype kind(s) accepted ("i"/"u" integers, "b" bool) and the dtype returned.
OUTCOME_COLUMNS = {
    LABEL: ("iu", np.int64),
    INK_DENSITY_BUCKET: ("iu", np.int64),
    CANDIDATE_CORRECT: ("b", np.bool_),
    BASELINE_CORRECT: ("b", np.bool_),
}
REQUIRED_OUTCOMES = (LABEL, INK_DENSITY_BUCKET, CANDIDATE_CORRECT)


def missing_per_example_files(evaluation_uri: str) -> list:
    """The names of PER_EXAMPLE_FILES absent from the evaluation (all three for an evaluation
    made before the evaluator wrote them)."""
    return [name for name in PER_EXAMPLE_FILES if not os.path.isfile(os.path.join(evaluation_uri, name))]


# ---- outcomes.npz -------------------------------------------------------------------------------
def _check_outcomes(outcomes: dict, path: str) -> dict:
    missing = [name for name in REQUIRED_OUTCOMES if name not in outcomes]
    if missing:
        raise InputDataError(f"{path}: no {', '.join(missing)} array")
    result, lengths = {}, {}
    for name, (kinds, dtype) in OUTCOME_COLUMNS.items():
        if name not in outcomes:
            continue
        array = np.asarray(outcomes[name])
        if array.dtype.kind not in kinds:
            raise InputDataError(
                f"{path}: {name} has dtype {array.dtype}, expected "
                f"{'bool' if kinds == 'b' else 'an integer dtype'}"
            )
        if array.ndim != 1:
            raise InputDataError(f"{path}: {name} has shape {array.shape}, expected one value per example")
        result[name] = array.astype(dtype, copy=False)
        lengths[name] = len(array)
    if len(set(lengths.values())) > 1:
        raise InputDataError(
            f"{path}: arrays of unequal length ({', '.join(f'{k} {v}' for k, v in lengths.items())})"
        )
    return result


def write_outcomes(evaluation_uri: str, outcomes: dict) -> str:
    """Writes `outcomes` ({name: 1-D array}, see the module docstring) as `outcomes.npz`
    atomically; returns its path. Raises InputDataError for arrays the reader would refuse."""
    path = os.path.join(evaluation_uri, OUTCOMES_FILE)
    checked = _check_outcomes(outcomes, path)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **checked)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def read_outcomes(evaluation_uri: str) -> dict:
    """The per-example outcomes of an evaluation: {name: 1-D array}, int64 `label` and
    `ink_density_bucket`, bool `candidate_correct` and, when a baseline was evaluated,
    `baseline_correct`; all of the same length, row i the same example in each.

    Raises InputDataError naming the file when it is missing, not a pickle-free npz, lacks a
    required array, or holds arrays of another dtype, shape or length.
    """
    path = os.path.join(evaluation_uri, OUTCOMES_FILE)
    try:
        with np.load(path, allow_pickle=False) as npz:
            loaded = {name: npz[name] for name in npz.files}
    except FileNotFoundError as e:
        raise InputDataError(f"{path}: file not found") from e
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputDataError(f"{path}: not a readable pickle-free .npz file ({e})") from e
    return _check_outcomes(loaded, path)


# ---- JSON files ---------------------------------------------------------------------------------
def _write_json(path: str, data) -> str:
    write_text_atomic(path, json.dumps(data, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n")
    return path


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise InputDataError(f"{path}: file not found") from e
    except OSError as e:
        raise InputDataError(f"{path}: cannot be read ({e.strerror})") from e
    except ValueError as e:
        raise InputDataError(f"{path}: not valid JSON ({e})") from e


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_probability(value: object) -> TypeGuard[float]:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0.0 <= value <= 1.0
    )


# ---- mistakes.json ------------------------------------------------------------------------------
def _check_mistakes(mistakes, path: str) -> dict:
    if not isinstance(mistakes, dict):
        raise InputDataError(f"{path}: not a JSON object")
    scanned, wrong, items = mistakes.get("scanned"), mistakes.get("misclassified"), mistakes.get("items")
    if not (_is_int(scanned) and _is_int(wrong) and 0 <= wrong <= scanned):
        raise InputDataError(
            f"{path}: 'scanned' and 'misclassified' must be counts, "
            f"misclassified <= scanned (got {scanned!r}, {wrong!r})"
        )
    if not isinstance(items, list) or len(items) > min(wrong, MAX_MISTAKES):
        raise InputDataError(
            f"{path}: 'items' must be a list of at most min(misclassified, {MAX_MISTAKES}) mistakes"
        )
    previous = math.inf
    for index, item in enumerate(items):
        where = f"{path}: items[{index}]"
        if not isinstance(item, dict):
            raise InputDataError(f"{where}: not a JSON object")
        pixels = item.get("pixels")
        if (
            not isinstance(pixels, list)
            or len(pixels) != PIXELS
            or not all(_is_int(p) and 0 <= p <= examples_format.MAX_PIXEL for p in pixels)
        ):
            raise InputDataError(f"{where}: 'pixels' must be {PIXELS} ints 0..{examples_format.MAX_PIXEL}")
        label, predicted = item.get("label"), item.get("predicted")
        if not (
            _is_int(label) and _is_int(predicted) and label != predicted and 0 <= predicted < NUM_CLASSES
        ):
            raise InputDataError(
                f"{where}: 'label' and 'predicted' must be different class ids (got {label!r}, {predicted!r})"
            )
        confidence, label_probability = item.get("confidence"), item.get("label_probability")
        if not (_is_probability(confidence) and _is_probability(label_probability)):
            raise InputDataError(f"{where}: 'confidence' and 'label_probability' must be probabilities")
        if confidence > previous:
            raise InputDataError(f"{where}: items are not ordered most confident first")
        previous = confidence
    return mistakes


def write_mistakes(evaluation_uri: str, scanned: int, misclassified: int, items: list) -> str:
    """Writes `mistakes.json` (see the module docstring) atomically; returns its path."""
    path = os.path.join(evaluation_uri, MISTAKES_FILE)
    document = {
        "scanned": int(scanned),
        "misclassified": int(misclassified),
        "items": [
            {
                "pixels": [int(p) for p in item["pixels"]],
                "label": int(item["label"]),
                "predicted": int(item["predicted"]),
                "confidence": float(item["confidence"]),
                "label_probability": float(item["label_probability"]),
            }
            for item in items
        ],
    }
    return _write_json(path, _check_mistakes(document, path))


def read_mistakes(evaluation_uri: str) -> dict:
    """The candidate's most confident mistakes: {"scanned", "misclassified", "items"} as
    written by `write_mistakes`. Raises InputDataError naming the file when it is missing or
    malformed."""
    path = os.path.join(evaluation_uri, MISTAKES_FILE)
    return _check_mistakes(_read_json(path), path)


# ---- confusion_matrix.json ----------------------------------------------------------------------
def _check_confusion(matrices, path: str) -> dict:
    if not isinstance(matrices, dict) or not matrices:
        raise InputDataError(f"{path}: not a JSON object with one entry per model")
    for model, entry in matrices.items():
        matrix = entry.get("matrix") if isinstance(entry, dict) else None
        if (
            not isinstance(matrix, list)
            or len(matrix) != NUM_CLASSES
            or not all(
                isinstance(row, list) and len(row) == NUM_CLASSES and all(_is_int(c) and c >= 0 for c in row)
                for row in matrix
            )
        ):
            raise InputDataError(f"{path}: {model}: 'matrix' must be {NUM_CLASSES}x{NUM_CLASSES} counts")
        threshold = entry.get("threshold")
        if (
            not isinstance(threshold, (int, float))
            or isinstance(threshold, bool)
            or not math.isfinite(threshold)
        ):
            raise InputDataError(f"{path}: {model}: 'threshold' must be a number")
    return matrices


def write_confusion_matrices(evaluation_uri: str, matrices: dict) -> str:
    """Writes `confusion_matrix.json` ({model: {"matrix", "threshold"}}) atomically; returns its path."""
    path = os.path.join(evaluation_uri, CONFUSION_FILE)
    document = {
        model: {
            "matrix": [[int(round(float(c))) for c in row] for row in entry["matrix"]],
            "threshold": float(entry["threshold"]),
        }
        for model, entry in matrices.items()
    }
    return _write_json(path, _check_confusion(document, path))


def read_confusion_matrices(evaluation_uri: str) -> dict:
    """{model_name: {"matrix": [actual][predicted] counts, "threshold": float}} of the overall
    slice. Raises InputDataError naming the file when it is missing or malformed."""
    path = os.path.join(evaluation_uri, CONFUSION_FILE)
    return _check_confusion(_read_json(path), path)
