"""Readers of the artifact files the report shows, without TensorFlow (fast on a no-op rerun).

Each reader takes an artifact directory and returns plain, JSON-ready values. Errors: the
readers raise InputDataError (or OSError / ValueError) naming the file; the caller turns them
into a note in the report's section instead of failing the whole report.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from pipeline.errors import InputDataError

# Written by components/statistics_gen/histograms.py into the feature's custom_stats (that
# module imports TFDV, too slow to load for a report).
HISTOGRAM_STAT = "value_histogram"
OUT_OF_RANGE_STAT = "out_of_range_values"
SPLIT_ORDER = ("train", "eval", "test")


def split_sort_key(split: str) -> tuple:
    """train, eval, test first, then other splits by name."""
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def read_json(path: str):
    """The parsed JSON file at `path`; InputDataError naming it when missing or malformed."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as e:
        raise InputDataError(f"{path}: file not found") from e
    except OSError as e:
        raise InputDataError(f"{path}: cannot be read ({e.strerror})") from e
    except ValueError as e:
        raise InputDataError(f"{path}: not valid JSON ({e})") from e


def _feature(dataset, name: str):
    for feature in dataset.features:
        if (feature.path.step and list(feature.path.step) == [name]) or feature.name == name:
            return feature
    return None


def _exact_histogram(feature) -> Optional[list]:
    for stat in feature.custom_stats:
        if stat.name == HISTOGRAM_STAT and stat.HasField("histogram"):
            return [int(b.sample_count) for b in stat.histogram.buckets]
    return None


def _out_of_range(feature) -> int:
    return next((int(s.num) for s in feature.custom_stats if s.name == OUT_OF_RANGE_STAT), 0)


def read_statistics(statistics_uri: str) -> dict:
    """Per split of an ExampleStatistics artifact (`Split-*/FeatureStats.pb`):

    {split: {"examples": int, "label_counts": [10 ints] or None, "label_out_of_range": int,
             "pixel_mean": float or None, "pixel_std": float or None,
             "zero_pixel_share": float or None, "ink_density_mean": float or None}}
    in train, eval, test order. Label counts are the exact histogram StatisticsGen records.
    Raises InputDataError when the artifact has no split or a stats file is unreadable.
    """
    from components.example_validator.executor import load_split_statistics

    result = {}
    for split, stats_list in sorted(load_split_statistics(statistics_uri).items(),
                                    key=lambda item: split_sort_key(item[0])):
        dataset = stats_list.datasets[0]
        entry = {"examples": int(dataset.num_examples), "label_counts": None, "label_out_of_range": 0,
                 "pixel_mean": None, "pixel_std": None, "zero_pixel_share": None,
                 "ink_density_mean": None}
        label = _feature(dataset, "label")
        if label is not None:
            entry["label_counts"] = _exact_histogram(label)
            entry["label_out_of_range"] = _out_of_range(label)
        image = _feature(dataset, "image")
        if image is not None and image.HasField("num_stats"):
            stats = image.num_stats
            total = stats.common_stats.tot_num_values
            entry["pixel_mean"] = float(stats.mean)
            entry["pixel_std"] = float(stats.std_dev)
            entry["zero_pixel_share"] = float(stats.num_zeros) / total if total else None
        ink = _feature(dataset, "ink_density")
        if ink is not None and ink.HasField("num_stats"):
            entry["ink_density_mean"] = float(ink.num_stats.mean)
        result[split] = entry
    return result


def read_anomalies(anomalies_uri: str) -> dict:
    """An ExampleAnomalies artifact: {"splits": {split: [finding dicts]}, "drift": drift.json
    content or None, "report": report.txt text or None}.

    A finding dict: feature, severity (ERROR, WARNING, UNKNOWN), reasons, short_description,
    description. Raises InputDataError naming a SchemaDiff.pb that does not parse.
    """
    from google.protobuf import message
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    from components.example_validator.anomalies import findings

    if not os.path.isdir(anomalies_uri):
        raise InputDataError(f"anomalies artifact {anomalies_uri}: not a directory")
    splits = {}
    for name in sorted(os.listdir(anomalies_uri)):
        path = os.path.join(anomalies_uri, name, "SchemaDiff.pb")
        if not name.startswith("Split-") or not os.path.isfile(path):
            continue
        try:
            with open(path, "rb") as f:
                anomalies = anomalies_pb2.Anomalies.FromString(f.read())
        except message.DecodeError as e:
            raise InputDataError(f"{path}: not a binary Anomalies proto") from e
        splits[name[len("Split-"):]] = [
            {"feature": f.feature, "severity": f.severity, "reasons": list(f.reasons),
             "short_description": f.short_description, "description": f.description}
            for f in findings(anomalies)]
    drift_path = os.path.join(anomalies_uri, "drift.json")
    report_path = os.path.join(anomalies_uri, "report.txt")
    report = None
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8", errors="replace") as f:
            report = f.read()
    return {"splits": dict(sorted(splits.items(), key=lambda item: split_sort_key(item[0]))),
            "drift": read_json(drift_path) if os.path.isfile(drift_path) else None,
            "report": report}


def read_training_history(model_run_uri: str) -> dict:
    """`<model_run>/training_history.json`: {"evaluations": [{step, accuracy, loss, ...}], ...}.

    Raises InputDataError when it is missing, malformed or has no evaluation list.
    """
    path = os.path.join(model_run_uri, "training_history.json")
    history = read_json(path)
    if not isinstance(history, dict) or not isinstance(history.get("evaluations"), list):
        raise InputDataError(f"{path}: no 'evaluations' list")
    return history


def read_blessing(blessing_uri: str) -> dict:
    """The ModelBlessing artifact: decision.json plus which marker file (BLESSED, NOT_BLESSED) exists.

    Returns decision.json's content with "marker" added ("BLESSED", "NOT_BLESSED", or None when
    neither or both exist). Raises InputDataError when decision.json is missing or malformed.
    """
    from components.evaluator.layout import BLESSED_FILE, DECISION_FILE, NOT_BLESSED_FILE

    decision = read_json(os.path.join(blessing_uri, DECISION_FILE))
    if not isinstance(decision, dict):
        raise InputDataError(f"{os.path.join(blessing_uri, DECISION_FILE)}: not a JSON object")
    markers = [m for m in (BLESSED_FILE, NOT_BLESSED_FILE) if os.path.exists(os.path.join(blessing_uri, m))]
    decision["marker"] = markers[0] if len(markers) == 1 else None
    return decision


def read_push(pushed_model_uri: str) -> dict:
    """`<pushed_model>/push.json` (pushed, version, model_id, model_digest, serving_dir, reason, time)."""
    record = read_json(os.path.join(pushed_model_uri, "push.json"))
    if not isinstance(record, dict):
        raise InputDataError(f"{os.path.join(pushed_model_uri, 'push.json')}: not a JSON object")
    return record
