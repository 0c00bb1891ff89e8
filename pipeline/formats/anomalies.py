"""ExampleAnomalies: TFDV `Anomalies` per split, `Split-<name>/SchemaDiff.pb`, plus drift.

Files: `Split-<split>/SchemaDiff.pb` (binary tensorflow_metadata Anomalies, loadable with
`tensorflow_data_validation.utils.anomalies_util.load_anomalies_binary`), `drift.json` (the drift
figures and thresholds, or why drift was not checked), `leakage.json` (training and eval digits
found in the test split), `report.txt` (every anomaly in words).
Properties: `split_names`, `passed` (1 when no ERROR anomaly and no leakage above its limits was
found), `leakage_exact` and `leakage_near` (the counts).

TFDV reports one `AnomalyInfo` per feature (keyed by the feature's serialized path) plus one
for the dataset. `findings` reads them as plain `Finding`s; severity UNKNOWN counts as an error
(fail closed), only WARNING passes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from google.protobuf import message
from tensorflow_metadata.proto.v0 import anomalies_pb2

from pipeline.core.errors import InputDataError
from pipeline.formats.examples import split_dir, split_dirs
from pipeline.formats.files import read_bytes

ARTIFACT_TYPE = "ExampleAnomalies"
SPLIT_NAMES = "split_names"
PASSED = "passed"

ANOMALIES_FILE = "SchemaDiff.pb"
# Properties: training and eval digits equal (exact) or nearly equal to a test digit.
LEAKAGE_EXACT = "leakage_exact"
LEAKAGE_NEAR = "leakage_near"
DRIFT_FILE = "drift.json"
# The leakage counts, first record indexes and limits (components/example_validator/leakage.py).
LEAKAGE_FILE = "leakage.json"
REPORT_FILE = "report.txt"
# The `feature` of a dataset-level finding.
DATASET = "<dataset>"


@dataclass(frozen=True)
class Finding:
    """One anomaly in words: which feature (or `DATASET`), how bad, what and why."""

    feature: str
    severity: str  # "ERROR", "WARNING" or "UNKNOWN"
    reasons: tuple  # AnomalyInfo.Type names, e.g. ("INT_TYPE_BIG_INT",)
    short_description: str
    description: str

    @property
    def is_error(self) -> bool:
        return self.severity != "WARNING"


def _finding(feature: str, info) -> Finding:
    severity, kind = anomalies_pb2.AnomalyInfo.Severity, anomalies_pb2.AnomalyInfo.Type
    return Finding(
        feature=feature,
        severity=severity.Name(info.severity),
        reasons=tuple(kind.Name(r.type) for r in info.reason),
        short_description=info.short_description or "; ".join(r.short_description for r in info.reason),
        description=info.description or "; ".join(r.description for r in info.reason),
    )


def findings(anomalies) -> list[Finding]:
    """Every anomaly of an `Anomalies` proto, the dataset-level one first, then features by name."""
    result = []
    if anomalies.HasField("dataset_anomaly_info"):
        result.append(_finding(DATASET, anomalies.dataset_anomaly_info))
    for key in sorted(anomalies.anomaly_info):
        result.append(_finding(key, anomalies.anomaly_info[key]))
    return result


def write_split_anomalies(anomalies_uri: str, results: dict) -> None:
    """Writes `Split-<split>/SchemaDiff.pb` for each {split: Anomalies} of `results`."""
    for split, anomalies in results.items():
        os.makedirs(split_dir(anomalies_uri, split))
        with open(os.path.join(split_dir(anomalies_uri, split), ANOMALIES_FILE), "wb") as f:
            f.write(anomalies.SerializeToString())


def read_split_anomalies(anomalies_uri: str) -> dict:
    """{split: Anomalies} of an ExampleAnomalies artifact, by split name (splits without a
    `SchemaDiff.pb` are left out). Raises InputDataError naming a file that does not parse."""
    result = {}
    for split, folder in split_dirs(anomalies_uri, "anomalies artifact", required=False).items():
        path = os.path.join(folder, ANOMALIES_FILE)
        if not os.path.isfile(path):
            continue
        try:
            result[split] = anomalies_pb2.Anomalies.FromString(read_bytes(path))
        except message.DecodeError as e:
            raise InputDataError(f"{path}: not a binary Anomalies proto") from e
    return result
