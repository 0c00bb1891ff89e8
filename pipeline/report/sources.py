"""Readers of the artifact files the report shows, without TensorFlow (fast on a no-op rerun).

Each reader takes an artifact directory and returns plain, JSON-ready values, reading the files
through their format module (`pipeline.formats`). Errors: the readers raise InputDataError (or
another PipelineError, OSError / ValueError) naming the file; the caller turns them into a note
in the report's section instead of failing the whole report.
"""

from __future__ import annotations

import os

from pipeline.core.errors import InputDataError
from pipeline.formats import anomalies as anomalies_format
from pipeline.formats import blessing as blessing_format
from pipeline.formats import pushed_model as pushed_format
from pipeline.formats import statistics as stats_format
from pipeline.formats.examples import IMAGE_KEY, INK_DENSITY_KEY, LABEL_KEY
from pipeline.formats.files import read_json
from pipeline.formats.model import HISTORY_FILE

SPLIT_ORDER = ("train", "eval", "test")


def split_sort_key(split: str) -> tuple:
    """train, eval, test first, then other splits by name."""
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def _by_split_order(by_split: dict) -> dict:
    return dict(sorted(by_split.items(), key=lambda item: split_sort_key(item[0])))


def read_statistics(statistics_uri: str) -> dict:
    """Per split of an ExampleStatistics artifact (`Split-*/FeatureStats.pb`):

    {split: {"examples": int, "label_counts": [10 ints] or None, "label_out_of_range": int,
             "pixel_mean": float or None, "pixel_std": float or None,
             "zero_pixel_share": float or None, "ink_density_mean": float or None}}
    in train, eval, test order. Label counts are the exact histogram StatisticsGen records.
    Raises InputDataError when the artifact has no split or a stats file is unreadable.
    """
    result = {}
    for split, stats_list in _by_split_order(stats_format.read_split_statistics(statistics_uri)).items():
        dataset = stats_list.datasets[0]
        entry = {
            "examples": int(dataset.num_examples),
            "label_counts": None,
            "label_out_of_range": 0,
            "pixel_mean": None,
            "pixel_std": None,
            "zero_pixel_share": None,
            "ink_density_mean": None,
        }
        labels = stats_format.read_value_histogram(dataset, LABEL_KEY)
        if labels is not None:
            entry["label_counts"] = labels[0].tolist()
            entry["label_out_of_range"] = labels[1]
        image = stats_format.feature_stats(dataset, IMAGE_KEY)
        if image is not None and image.HasField("num_stats"):
            stats = image.num_stats
            total = stats.common_stats.tot_num_values
            entry["pixel_mean"] = float(stats.mean)
            entry["pixel_std"] = float(stats.std_dev)
            entry["zero_pixel_share"] = float(stats.num_zeros) / total if total else None
        ink = stats_format.feature_stats(dataset, INK_DENSITY_KEY)
        if ink is not None and ink.HasField("num_stats"):
            entry["ink_density_mean"] = float(ink.num_stats.mean)
        result[split] = entry
    return result


def read_anomalies(anomalies_uri: str) -> dict:
    """An ExampleAnomalies artifact: {"splits": {split: [finding dicts]}, "drift": drift.json
    content or None, "leakage": leakage.json content or None, "report": report.txt text or None}.

    A finding dict: feature, severity (ERROR, WARNING, UNKNOWN), reasons, short_description,
    description. Raises InputDataError naming a SchemaDiff.pb that does not parse.
    """
    splits = {
        split: [
            {
                "feature": f.feature,
                "severity": f.severity,
                "reasons": list(f.reasons),
                "short_description": f.short_description,
                "description": f.description,
            }
            for f in anomalies_format.findings(anomalies)
        ]
        for split, anomalies in anomalies_format.read_split_anomalies(anomalies_uri).items()
    }
    drift_path = os.path.join(anomalies_uri, anomalies_format.DRIFT_FILE)
    leakage_path = os.path.join(anomalies_uri, anomalies_format.LEAKAGE_FILE)
    report_path = os.path.join(anomalies_uri, anomalies_format.REPORT_FILE)
    report = None
    if os.path.isfile(report_path):
        with open(report_path, encoding="utf-8", errors="replace") as f:
            report = f.read()
    return {
        "splits": _by_split_order(splits),
        "drift": read_json(drift_path) if os.path.isfile(drift_path) else None,
        "leakage": read_json(leakage_path) if os.path.isfile(leakage_path) else None,
        "report": report,
    }


def read_training_history(model_run_uri: str) -> dict:
    """`<model_run>/training_history.json`: {"evaluations": [{step, accuracy, loss, ...}], ...}.

    Raises InputDataError when it is missing, malformed or has no evaluation list.
    """
    path = os.path.join(model_run_uri, HISTORY_FILE)
    history = read_json(path)
    if not isinstance(history, dict) or not isinstance(history.get("evaluations"), list):
        raise InputDataError(f"{path}: no 'evaluations' list")
    return history


def read_blessing(blessing_uri: str) -> dict:
    """The ModelBlessing artifact's decision (`pipeline.formats.blessing.read_blessing`), as
    decision.json holds it plus "marker", the marker file that goes with it (BLESSED, NOT_BLESSED).

    Raises BlessingError when the decision is missing, malformed or contradicted by a marker.
    """
    record = blessing_format.read_blessing(blessing_uri)
    return {**record.to_json(), "marker": record.marker}


def read_push(pushed_model_uri: str) -> dict:
    """`<pushed_model>/push.json` (pushed, version, model_id, model_digest, serving_dir, reason, time)."""
    return pushed_format.read_push_record(pushed_model_uri)
