"""The promotion gate: decides from plain metric dicts whether a candidate model is blessed.

Pure logic, no TensorFlow. Metrics come keyed by slice name ("overall", "label=3",
"ink_density_bucket=2"), each slice a dict such as {"accuracy": 0.97, "example_count": 980}.

Rules (every threshold that is set must pass):
- `accuracy_floor`: overall accuracy >= floor. Always applies; a first run (no baseline) needs it
  set, otherwise nothing absolute vouches for the model.
- `min_gain` (needs a baseline): candidate overall accuracy >= baseline overall accuracy + min_gain.
- `slice_accuracy_floor`: every label slice ("label=<k>") accuracy >= floor.
- `slice_max_regression` (needs a baseline): baseline - candidate accuracy <= limit on every label
  slice the baseline has.

Fail closed: no threshold set at all, a missing slice or metric, a NaN or infinite value, a
threshold that is not a finite number, or a slice with zero examples fails its check. NaN is
never "better": every comparison involving it fails.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Optional

OVERALL = "overall"
LABEL_SLICE_PREFIX = "label="
ACCURACY = "accuracy"
EXAMPLE_COUNT = "example_count"
THRESHOLD_NAMES = ("accuracy_floor", "min_gain", "slice_accuracy_floor", "slice_max_regression")
# Accuracies come from float32 sums; an exact tie with min_gain 0 must not fail on rounding.
_TOLERANCE = 1e-9

Metrics = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Check:
    """One rule applied to one slice.

    value: what was compared (accuracy for floors, candidate - baseline for min_gain,
        baseline - candidate for slice_max_regression); None when it could not be computed.
    threshold: the configured limit (None when the check fails because it is not set).
    """

    name: str
    slice: str
    value: Optional[float]
    threshold: Optional[float]
    passed: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """The gate's result. `reasons` lists why the candidate was not blessed (empty if blessed)."""

    blessed: bool
    checks: list = field(default_factory=list)
    reasons: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form (non-finite numbers become None)."""
        return {
            "blessed": self.blessed,
            "reasons": list(self.reasons),
            "checks": [{k: _json_number(v) for k, v in asdict(c).items()} for c in self.checks],
        }


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _threshold(thresholds: Any, name: str) -> Optional[float]:
    if thresholds is None:
        return None
    if isinstance(thresholds, Mapping):
        return thresholds.get(name)
    return getattr(thresholds, name, None)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite_number(value: Any) -> bool:
    return _is_number(value) and math.isfinite(value)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if _is_number(value) else repr(value)


def _accuracy(metrics: Optional[Metrics], slice_name: str, model: str):
    """Returns (accuracy, None) or (None, why it cannot be used) for one slice of one model."""
    if metrics is None or slice_name not in metrics:
        return None, f"slice {slice_name} missing from {model} metrics"
    values = metrics[slice_name]
    count = values.get(EXAMPLE_COUNT)
    if count is None:
        return None, f"{model} metric {EXAMPLE_COUNT} missing on slice {slice_name}"
    if not _finite_number(count) or count <= 0:
        shown = f"{count:g}" if _is_number(count) else repr(count)
        return None, f"{model} slice {slice_name} has {shown} examples"
    if ACCURACY not in values or values[ACCURACY] is None:
        return None, f"{model} metric {ACCURACY} missing on slice {slice_name}"
    accuracy = values[ACCURACY]
    if not _finite_number(accuracy):
        return None, f"{model} {ACCURACY} on slice {slice_name} is {_fmt(accuracy)}, not a finite number"
    return float(accuracy), None


def _bad_threshold(name: str, threshold: Any) -> Optional[str]:
    if not _finite_number(threshold):
        return f"threshold {name} is {_fmt(threshold)}, not a finite number"
    return None


def _floor_check(name: str, slice_name: str, candidate: Metrics, floor: Any) -> Check:
    accuracy, problem = _accuracy(candidate, slice_name, "candidate")
    problem = problem or _bad_threshold(name, floor)
    if problem:
        return Check(name, slice_name, accuracy, floor, False, problem)
    passed = accuracy >= floor - _TOLERANCE
    relation = ">=" if passed else "<"
    return Check(name, slice_name, accuracy, floor, passed,
                 f"{slice_name} accuracy {_fmt(accuracy)} {relation} {name} {_fmt(floor)}")


def _gain_check(candidate: Metrics, baseline: Metrics, min_gain: Any) -> Check:
    name = "min_gain"
    cand, problem = _accuracy(candidate, OVERALL, "candidate")
    base, base_problem = _accuracy(baseline, OVERALL, "baseline")
    problem = problem or base_problem or _bad_threshold(name, min_gain)
    if problem:
        return Check(name, OVERALL, None, min_gain, False, problem)
    gain = cand - base
    passed = gain >= min_gain - _TOLERANCE
    verdict = "meets" if passed else "below"
    return Check(name, OVERALL, gain, min_gain, passed,
                 f"overall accuracy {_fmt(cand)} vs baseline {_fmt(base)}: gain {gain:+.4f} "
                 f"{verdict} {name} {_fmt(min_gain)}")


def _regression_check(slice_name: str, candidate: Metrics, baseline: Metrics, limit: Any) -> Check:
    name = "slice_max_regression"
    cand, problem = _accuracy(candidate, slice_name, "candidate")
    base, base_problem = _accuracy(baseline, slice_name, "baseline")
    problem = problem or base_problem or _bad_threshold(name, limit)
    if problem:
        return Check(name, slice_name, None, limit, False, problem)
    regression = base - cand
    passed = regression <= limit + _TOLERANCE
    verdict = "within" if passed else "exceeds"
    return Check(name, slice_name, regression, limit, passed,
                 f"{slice_name} accuracy {_fmt(cand)} vs baseline {_fmt(base)}: regression "
                 f"{regression:+.4f} {verdict} {name} {_fmt(limit)}")


def _label_slices(*metric_sets: Optional[Metrics], required: Iterable[str] = ()) -> list:
    names = set(required)
    for metrics in metric_sets:
        if metrics:
            names.update(s for s in metrics if s.startswith(LABEL_SLICE_PREFIX))
    return sorted(names, key=_slice_sort_key)


def _slice_sort_key(name: str):
    value = name[len(LABEL_SLICE_PREFIX):]
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def decide(candidate: Metrics, baseline: Optional[Metrics], thresholds: Any,
           required_slices: Iterable[str] = ()) -> Decision:
    """Applies the gate's rules; returns the Decision with every check made.

    candidate: slice name -> metric name -> value, for the model under evaluation.
    baseline: the same for the currently served model, or None on a first run (then only the
        absolute checks apply and `accuracy_floor` must be set).
    thresholds: an object or mapping with the four THRESHOLD_NAMES (None = not set), e.g. the
        EvaluatorConfig.
    required_slices: label slices ("label=<k>") that must be present for the per-slice checks
        (e.g. every class the model predicts), in addition to those the baseline has.
    Never raises on bad metrics: every problem becomes a failed check.
    """
    limits = {name: _threshold(thresholds, name) for name in THRESHOLD_NAMES}
    if all(value is None for value in limits.values()):
        check = Check("thresholds", OVERALL, None, None, False, "no thresholds configured")
        return Decision(False, [check], [check.reason])

    checks = []
    if limits["accuracy_floor"] is not None:
        checks.append(_floor_check("accuracy_floor", OVERALL, candidate, limits["accuracy_floor"]))
    elif baseline is None:
        checks.append(Check("accuracy_floor", OVERALL, None, None, False,
                            "accuracy_floor not set: a first run (no baseline) needs an absolute floor"))

    if baseline is not None and limits["min_gain"] is not None:
        checks.append(_gain_check(candidate, baseline, limits["min_gain"]))

    if limits["slice_accuracy_floor"] is not None:
        slices = _label_slices(candidate, baseline, required=required_slices)
        if not slices:
            checks.append(Check("slice_accuracy_floor", LABEL_SLICE_PREFIX + "*", None,
                                limits["slice_accuracy_floor"], False, "no label slices in candidate metrics"))
        for name in slices:
            checks.append(_floor_check("slice_accuracy_floor", name, candidate, limits["slice_accuracy_floor"]))

    if baseline is not None and limits["slice_max_regression"] is not None:
        slices = _label_slices(baseline, required=required_slices)
        if not slices:
            checks.append(Check("slice_max_regression", LABEL_SLICE_PREFIX + "*", None,
                                limits["slice_max_regression"], False, "no label slices in baseline metrics"))
        for name in slices:
            checks.append(_regression_check(name, candidate, baseline, limits["slice_max_regression"]))

    reasons = [c.reason for c in checks if not c.passed]
    return Decision(not reasons, checks, reasons)
