"""The promotion gate: decides from plain metric dicts and paired outcomes whether a candidate
model is blessed.

Pure logic, no TensorFlow. Metrics come keyed by slice name ("overall", "label=3",
"ink_density_bucket=2"), each slice a dict such as {"accuracy": 0.97, "example_count": 980}.
Paired outcomes come as slice name -> `paired_stats.PairedTable`: on the same test examples,
how often each model alone was right.

Rules (every threshold that is set must pass):
- `accuracy_floor`: overall accuracy >= floor. Always applies; a first run (no baseline) needs it
  set, otherwise nothing absolute vouches for the model.
- `slice_accuracy_floor`: every label slice ("label=<k>") accuracy >= floor.
- With a baseline, the promotion policy on the paired difference of overall accuracy
  (candidate minus baseline, Newcombe interval at level 1 - alpha):
  `superiority`: the interval's lower bound must be above `min_gain`;
  `non_inferiority`: the lower bound must be above `-non_inferiority_margin`.
- `slice_max_regression` (needs a baseline): no label slice may be *significantly* worse than
  the baseline by more than the limit (the upper bound of its interval below -limit), each
  slice's interval at its Holm-adjusted level, so that ten slices do not multiply false
  refusals.

Fail closed: no threshold set at all, a missing slice or metric, a NaN or infinite value, a
threshold that is not a finite number, a slice with zero examples, a baseline without paired
outcomes, or paired outcomes that disagree with TFMA's own accuracy fails its check. NaN is
never "better": every comparison involving it fails.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from components.evaluator import paired_stats
from pipeline.formats.evaluation import OVERALL_SLICE

OVERALL = OVERALL_SLICE
LABEL_SLICE_PREFIX = "label="
ACCURACY = "accuracy"
EXAMPLE_COUNT = "example_count"
THRESHOLD_NAMES = ("accuracy_floor", "min_gain", "slice_accuracy_floor", "slice_max_regression")
POLICY_DEFAULTS = {"promotion_policy": "superiority", "alpha": 0.05, "non_inferiority_margin": 0.005}
# Paired outcomes and TFMA count the same examples; their accuracies may differ only by TFMA's
# float32 accumulation.
_AGREEMENT = 1e-4
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
    value: float | None
    threshold: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class Decision:
    """The gate's result. `reasons` lists why the candidate was not blessed (empty if blessed)."""

    blessed: bool
    checks: list = field(default_factory=list)
    reasons: list = field(default_factory=list)
    # The promotion policy applied (None: no baseline, so no comparison was made).
    policy: str | None = None
    alpha: float | None = None
    margin: float | None = None
    # One `paired_stats.Comparison.to_json()` per compared slice, overall first.
    comparisons: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form (non-finite numbers become None)."""
        return {
            "blessed": self.blessed,
            "reasons": list(self.reasons),
            "checks": [{k: _json_number(v) for k, v in asdict(c).items()} for c in self.checks],
            "policy": self.policy,
            "alpha": self.alpha,
            "margin": self.margin,
            "comparisons": list(self.comparisons),
        }


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _threshold(thresholds: Any, name: str) -> float | None:
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


def _accuracy(metrics: Metrics | None, slice_name: str, model: str):
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


def _bad_threshold(name: str, threshold: Any) -> str | None:
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
    return Check(
        name,
        slice_name,
        accuracy,
        floor,
        passed,
        f"{slice_name} accuracy {_fmt(accuracy)} {relation} {name} {_fmt(floor)}",
    )


def _agreement_check(model: str, table: paired_stats.PairedTable, metrics: Metrics | None) -> Check | None:
    """A failed check when the paired outcomes of `model` disagree with TFMA's overall accuracy."""
    accuracy, problem = _accuracy(metrics, OVERALL, model)
    paired = table.candidate_accuracy if model == "candidate" else table.baseline_accuracy
    if problem is None and not (math.isfinite(paired) and abs(paired - accuracy) <= _AGREEMENT):
        problem = (
            f"{model} paired outcomes give accuracy {_fmt(paired)} but TFMA measured "
            f"{_fmt(accuracy)}: the two passes disagree"
        )
    return Check("paired_outcomes", OVERALL, None, None, False, problem) if problem else None


def _policy_check(comparison, reason: str | None, policy: str, min_gain: float, margin: float) -> Check:
    """The Check of the promotion policy on the overall comparison (`reason`: why it refuses)."""
    threshold = min_gain if policy == "superiority" else -margin
    verdict = (
        "better than the serving model by more than min_gain"
        if policy == "superiority"
        else "not worse than the serving model by more than non_inferiority_margin"
    )
    passed = reason or (
        f"overall accuracy {paired_stats.describe(comparison)}: {verdict} "
        f"{_fmt(abs(threshold))} under {policy}"
    )
    return Check(policy, OVERALL, comparison.difference, threshold, reason is None, passed)


def _slice_check(comparison, reason: str | None, limit: float) -> Check:
    """The slice_max_regression Check of one label slice (`reason`: why it refuses)."""
    name = "slice_max_regression"
    # value and threshold as a regression (baseline minus candidate), like the limit itself.
    return Check(
        name,
        comparison.slice,
        -comparison.difference,
        limit,
        reason is None,
        reason
        or f"slice {comparison.slice} accuracy {paired_stats.describe(comparison)}: "
        f"not shown worse by more than {name} {_fmt(limit)} (Holm step-down)",
    )


def _label_slices(*metric_sets: Metrics | None, required: Iterable[str] = ()) -> list:
    names = set(required)
    for metrics in metric_sets:
        if metrics:
            names.update(s for s in metrics if s.startswith(LABEL_SLICE_PREFIX))
    return sorted(names, key=_slice_sort_key)


def _slice_sort_key(name: str):
    value = name[len(LABEL_SLICE_PREFIX) :]
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def _setting(thresholds: Any, name: str):
    value = _threshold(thresholds, name)
    return POLICY_DEFAULTS[name] if value is None else value


def decide(
    candidate: Metrics,
    baseline: Metrics | None,
    thresholds: Any,
    required_slices: Iterable[str] = (),
    paired: Mapping | None = None,
) -> Decision:
    """Applies the gate's rules; returns the Decision with every check made.

    candidate: slice name -> metric name -> value, for the model under evaluation.
    baseline: the same for the currently served model, or None on a first run (then only the
        absolute checks apply and `accuracy_floor` must be set).
    thresholds: an object or mapping with the four THRESHOLD_NAMES (None = not set) and the
        policy settings `promotion_policy`, `alpha`, `non_inferiority_margin` (defaults in
        POLICY_DEFAULTS), e.g. the EvaluatorConfig.
    required_slices: label slices ("label=<k>") that must be present for the per-slice checks
        (e.g. every class the model predicts), in addition to those the baseline has.
    paired: slice name -> paired_stats.PairedTable of candidate vs baseline on the same
        examples ("overall" and the label slices at least); needed whenever there is a baseline.
    Never raises on bad metrics: every problem becomes a failed check. Raises ValueError for a
    policy setting out of range (config validation catches those first).
    """
    limits = {name: _threshold(thresholds, name) for name in THRESHOLD_NAMES}
    if all(value is None for value in limits.values()):
        check = Check("thresholds", OVERALL, None, None, False, "no thresholds configured")
        return Decision(False, [check], [check.reason])

    checks = []
    if limits["accuracy_floor"] is not None:
        checks.append(_floor_check("accuracy_floor", OVERALL, candidate, limits["accuracy_floor"]))
    elif baseline is None:
        checks.append(
            Check(
                "accuracy_floor",
                OVERALL,
                None,
                None,
                False,
                "accuracy_floor not set: a first run (no baseline) needs an absolute floor",
            )
        )

    if limits["slice_accuracy_floor"] is not None:
        slices = _label_slices(candidate, baseline, required=required_slices)
        if not slices:
            checks.append(
                Check(
                    "slice_accuracy_floor",
                    LABEL_SLICE_PREFIX + "*",
                    None,
                    limits["slice_accuracy_floor"],
                    False,
                    "no label slices in candidate metrics",
                )
            )
        for name in slices:
            checks.append(
                _floor_check("slice_accuracy_floor", name, candidate, limits["slice_accuracy_floor"])
            )

    policy = alpha = margin = None
    comparisons = []
    if baseline is not None:
        policy, alpha = _setting(thresholds, "promotion_policy"), _setting(thresholds, "alpha")
        margin = _setting(thresholds, "non_inferiority_margin")
        compared, more = _compare_with_baseline(
            candidate, baseline, limits, paired or {}, policy, alpha, margin, required_slices
        )
        checks += compared
        comparisons = more

    reasons = [c.reason for c in checks if not c.passed]
    return Decision(not reasons, checks, reasons, policy, alpha, margin, comparisons)


def _compare_with_baseline(
    candidate: Metrics,
    baseline: Metrics,
    limits: dict,
    paired: Mapping,
    policy: str,
    alpha: float,
    margin: float,
    required_slices,
) -> tuple:
    """(checks, comparisons as JSON) of the promotion policy and the slice regression checks."""
    min_gain = limits["min_gain"] if limits["min_gain"] is not None else 0.0
    limit = limits["slice_max_regression"]
    try:
        paired_stats.check_settings(policy, alpha, min_gain, margin, limit)
    except ValueError as e:  # fail closed: settings the gate cannot apply promote nothing
        return [Check("promotion_settings", OVERALL, None, None, False, f"promotion settings: {e}")], []
    table = paired.get(OVERALL)
    if table is None:
        return [
            Check(
                "paired_outcomes",
                OVERALL,
                None,
                None,
                False,
                "no paired outcomes of candidate and baseline on the same examples: "
                "cannot compare with the serving model",
            )
        ], []
    checks = [
        c
        for c in (
            _agreement_check("candidate", table, candidate),
            _agreement_check("baseline", table, baseline),
        )
        if c
    ]
    overall = paired_stats.compare(OVERALL, table, alpha)
    slices = _label_slices(baseline, required=required_slices) if limit is not None else []
    present = {s: paired[s] for s in slices if s in paired}
    slice_comparisons = paired_stats.compare_slices(present, alpha, limit) if present else []
    overall_reason, slice_results = paired_stats.verdicts(
        overall, slice_comparisons, policy, alpha, min_gain, margin, limit
    )
    checks.append(_policy_check(overall, overall_reason, policy, min_gain, margin))
    if limit is not None:
        if not slices:
            checks.append(
                Check(
                    "slice_max_regression",
                    LABEL_SLICE_PREFIX + "*",
                    None,
                    limit,
                    False,
                    "no label slices in baseline metrics",
                )
            )
        checks += [
            Check("slice_max_regression", s, None, limit, False, f"slice {s}: no paired outcomes")
            for s in slices
            if s not in paired
        ]
        checks += [_slice_check(c, reason, limit) for c, reason in slice_results]
    by_slice = {OVERALL: overall, **{c.slice: c for c in slice_comparisons}}
    # Slices reported but not gated (other features) are compared at the overall level.
    for name, other in paired.items():
        if name not in by_slice:
            by_slice[name] = paired_stats.compare(name, other, alpha)
    return checks, [c.to_json() for c in by_slice.values()]
