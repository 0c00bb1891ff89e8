"""ModelBlessing: the evaluator's decision, `BLESSED` or `NOT_BLESSED` plus `decision.json`.

One typed record, `BlessingRecord`, is the decision: `write_blessing` writes it as
`decision.json` and adds the marker file TF Serving-style tooling looks for (`BLESSED`, or
`NOT_BLESSED` listing the reasons one per line); `read_blessing` reads it back and fails closed
(`BlessingError`) when the file is missing, malformed, or contradicted by the marker. Every
reader of a blessing (the pusher, `run_local.py status`, the run report) goes through it.

Properties recorded on the artifact in ML Metadata: `blessed` (1 or 0) and `baseline_model_id`
(the Model the candidate was compared with, 0 for none) - facts copied from the record, which
`read_blessing` can check them against.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.core.errors import PipelineError
from pipeline.formats.evaluation import OVERALL_SLICE
from pipeline.formats.files import read_json_object

ARTIFACT_TYPE = "ModelBlessing"
# The ways a candidate may replace the serving model (see the evaluator's paired statistics).
PROMOTION_POLICIES = ("superiority", "non_inferiority")
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
DECISION_FILE = "decision.json"
# Properties of the artifact in ML Metadata.
BLESSED = "blessed"
BASELINE_MODEL_ID = "baseline_model_id"
# What the BLESSED marker says.
ALL_PASSED = "all checks passed"


class BlessingError(PipelineError):
    """A blessing that cannot be trusted: decision.json missing or malformed, or a marker file
    (or a recorded property) that contradicts it. Nothing may be pushed on it."""


@dataclass(frozen=True)
class BlessingRecord:
    """The evaluator's decision about one candidate model.

    blessed: True exactly when `reasons` is empty. reasons: why not, one line each.
    checks: every rule applied ({name, slice, value, threshold, passed, reason}).
    thresholds: the configured limits. candidate_model / baseline_model: {id, uri, digest}
    (baseline None on a first run). examples: {uri, split, read, evaluated}. metrics:
    {"candidate", "baseline", "diff"}, per slice. policy, alpha, margin, comparisons: the
    statistical gate (None / [] when it did not run); a comparison is a dict such as
    {slice, candidate_only, baseline_only, p_value, difference, difference_ci, ...}.
    """

    blessed: bool
    reasons: list[str]
    checks: list[dict]
    thresholds: dict | None = None
    candidate_model: dict | None = None
    baseline_model: dict | None = None
    examples: dict | None = None
    metrics: dict | None = None
    policy: str | None = None
    alpha: float | None = None
    margin: float | None = None
    comparisons: list[dict] = field(default_factory=list)

    @property
    def marker(self) -> str:
        """The marker file this decision goes with."""
        return BLESSED_FILE if self.blessed else NOT_BLESSED_FILE

    @property
    def candidate_digest(self) -> str | None:
        """The digest of the model the decision was made for (None when not recorded)."""
        return (self.candidate_model or {}).get("digest")

    @property
    def baseline_model_id(self) -> int:
        """The Model artifact id the candidate was compared with; 0 when there was none."""
        return int((self.baseline_model or {}).get("id") or 0)

    def to_json(self) -> dict:
        """The record as decision.json holds it."""
        return dataclasses.asdict(self)


_FIELDS = {f.name: f for f in dataclasses.fields(BlessingRecord)}
_REQUIRED = ("blessed", "reasons", "checks")
_DICT_OR_NONE = ("thresholds", "candidate_model", "baseline_model", "examples", "metrics")
_NUMBER_OR_NONE = ("alpha", "margin")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _problem(data: dict) -> str | None:
    """What makes `data` not a decision record, or None."""
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        return f"unknown key {unknown[0]!r}"
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        return f"no {missing[0]!r}"
    if not isinstance(data["blessed"], bool):
        return f"'blessed' is {data['blessed']!r}, not true or false"
    if not isinstance(data["reasons"], list) or not all(isinstance(r, str) for r in data["reasons"]):
        return "'reasons' is not a list of strings"
    for key in ("checks", "comparisons"):
        if not isinstance(data.get(key, []), list) or not all(isinstance(c, dict) for c in data.get(key, [])):
            return f"{key!r} is not a list of objects"
    for key in _DICT_OR_NONE:
        if data.get(key) is not None and not isinstance(data[key], dict):
            return f"{key!r} is not an object"
    for key in _NUMBER_OR_NONE:
        if data.get(key) is not None and not _is_number(data[key]):
            return f"{key!r} is {data[key]!r}, not a finite number"
    if data.get("policy") is not None and not isinstance(data["policy"], str):
        return "'policy' is not a string"
    if data["blessed"] == bool(data["reasons"]):
        return (
            "blessed, yet it lists reasons against it"
            if data["blessed"]
            else "not blessed, yet it gives no reason"
        )
    if data["blessed"] and data.get("baseline_model") is not None:
        # Blessed over a serving model: the evidence must be there, or nothing vouches for it.
        if data.get("policy") not in PROMOTION_POLICIES:
            return f"blessed over a baseline under policy {data.get('policy')!r}, not one of {PROMOTION_POLICIES}"
        if not any(c.get("slice") == OVERALL_SLICE for c in data.get("comparisons", [])):
            return "blessed over a baseline without an overall comparison"
    return None


def write_blessing(blessing_dir: str, record: BlessingRecord) -> None:
    """Writes `decision.json` (the record; NaN and infinities refused) and the marker file.

    The marker holds the reasons, one per line, or "all checks passed". Raises ValueError for a
    record that `read_blessing` would refuse, before anything is written.
    """
    data = record.to_json()
    problem = _problem(data)
    if problem:
        raise ValueError(f"blessing record for {blessing_dir}: {problem}")
    text = json.dumps(data, indent=2, sort_keys=True, allow_nan=False)
    with open(os.path.join(blessing_dir, DECISION_FILE), "w") as f:
        f.write(text)
    with open(os.path.join(blessing_dir, record.marker), "w") as f:
        f.write("\n".join(record.reasons) + "\n" if record.reasons else f"{ALL_PASSED}\n")


def read_blessing(blessing_uri: str, recorded: Mapping | None = None) -> BlessingRecord:
    """The decision of the ModelBlessing artifact at `blessing_uri`.

    recorded: the artifact's ML Metadata properties, when the caller has them: a `blessed` or
        `baseline_model_id` there that disagrees with decision.json is a contradiction too.
    Raises BlessingError naming the file when decision.json is missing, not JSON, or not a
    decision record, when the marker file of its verdict is missing, or when the other marker
    exists as well.
    """
    path = os.path.join(blessing_uri, DECISION_FILE)
    try:
        data = read_json_object(path)
    except PipelineError as e:
        raise BlessingError(str(e)) from e
    problem = _problem(data)
    if problem:
        raise BlessingError(f"{path}: not a decision record: {problem}")
    record = BlessingRecord(**data)
    verdict = "blessed" if record.blessed else "not blessed"
    other = NOT_BLESSED_FILE if record.blessed else BLESSED_FILE
    if not os.path.isfile(os.path.join(blessing_uri, record.marker)):
        raise BlessingError(f"no {record.marker} marker in {blessing_uri}, but {path} says {verdict}")
    if os.path.lexists(os.path.join(blessing_uri, other)):
        raise BlessingError(f"{os.path.join(blessing_uri, other)} contradicts {path}, which says {verdict}")
    for key, value in ((BLESSED, int(record.blessed)), (BASELINE_MODEL_ID, record.baseline_model_id)):
        if recorded and key in recorded and recorded[key] != value:
            raise BlessingError(
                f"blessing {blessing_uri}: metadata records {key}={recorded[key]!r}, "
                f"but {path} says {value!r}"
            )
    return record


def recorded_properties(record: BlessingRecord) -> dict:
    """The artifact properties ML Metadata keeps of a decision."""
    return {BLESSED: int(record.blessed), BASELINE_MODEL_ID: record.baseline_model_id}
