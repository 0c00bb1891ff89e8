"""The blessing gate's pure logic: every rule, and failing closed on bad or missing metrics."""

import json
import math

import pytest
from hypothesis import given, settings, strategies as st

from components.evaluator.blessing import THRESHOLD_NAMES, decide
from pipeline.config import EvaluatorConfig

NAN = float("nan")
INF = float("inf")

ALL = EvaluatorConfig(accuracy_floor=0.95, min_gain=0.0, slice_accuracy_floor=0.90,
                      slice_max_regression=0.02)
NONE = EvaluatorConfig(accuracy_floor=None, min_gain=None, slice_accuracy_floor=None,
                       slice_max_regression=None)


def thresholds(**kw):
    return {**{name: None for name in THRESHOLD_NAMES}, **kw}


def metrics(overall=0.97, per_label=0.96, count=1000, **slices):
    """Overall plus label=0..9 slices; `label_3=0.5` overrides one slice's accuracy."""
    out = {"overall": {"accuracy": overall, "example_count": count}}
    for k in range(10):
        out[f"label={k}"] = {"accuracy": slices.get(f"label_{k}", per_label), "example_count": count // 10}
    out["ink_density_bucket=2"] = {"accuracy": 0.1, "example_count": 50}  # not gated
    return out


def failed(decision):
    return {(c.name, c.slice) for c in decision.checks if not c.passed}


# --- first run (no baseline) -------------------------------------------------------------------

def test_first_run_passes_on_absolute_checks_only():
    d = decide(metrics(), None, ALL)
    assert d.blessed and d.reasons == []
    names = {c.name for c in d.checks}
    assert names == {"accuracy_floor", "slice_accuracy_floor"}  # relative checks need a baseline
    assert len(d.checks) == 1 + 10
    floor = next(c for c in d.checks if c.name == "accuracy_floor")
    assert floor.slice == "overall" and floor.value == 0.97 and floor.threshold == 0.95


def test_first_run_below_floor_is_not_blessed():
    d = decide(metrics(overall=0.94), None, ALL)
    assert not d.blessed
    assert failed(d) == {("accuracy_floor", "overall")}
    assert "0.9400 < accuracy_floor 0.9500" in d.reasons[0]


def test_first_run_without_floor_fails_closed():
    d = decide(metrics(), None, thresholds(min_gain=0.0, slice_max_regression=0.02))
    assert not d.blessed
    assert "first run" in d.reasons[0] and "accuracy_floor" in d.reasons[0]


def test_floor_unset_with_baseline_uses_the_other_thresholds():
    d = decide(metrics(), metrics(), thresholds(min_gain=0.0))
    assert d.blessed and [c.name for c in d.checks] == ["min_gain"]


# --- change threshold against the baseline -----------------------------------------------------

def test_better_candidate_passes_min_gain():
    d = decide(metrics(overall=0.98), metrics(overall=0.97), ALL)
    assert d.blessed
    gain = next(c for c in d.checks if c.name == "min_gain")
    assert gain.value == pytest.approx(0.01) and gain.passed


def test_worse_candidate_fails_min_gain():
    d = decide(metrics(overall=0.96), metrics(overall=0.97), ALL)
    assert not d.blessed
    assert failed(d) == {("min_gain", "overall")}
    assert "gain -0.0100" in d.reasons[0]


def test_equal_passes_with_min_gain_zero_and_fails_with_positive_gain():
    assert decide(metrics(), metrics(), ALL).blessed
    d = decide(metrics(), metrics(), thresholds(accuracy_floor=0.95, min_gain=0.01))
    assert not d.blessed and failed(d) == {("min_gain", "overall")}


def test_equal_within_float_rounding_is_still_equal():
    # 0.95 + 0.02 != 0.97 in binary floating point; a tie must not fail on rounding.
    d = decide(metrics(overall=0.97), metrics(overall=0.95), thresholds(accuracy_floor=0.5, min_gain=0.02))
    assert d.blessed


# --- NaN and Inf --------------------------------------------------------------------------------

def test_nan_candidate_fails_every_check_it_touches():
    d = decide(metrics(overall=NAN), metrics(), ALL)
    assert not d.blessed
    assert {("accuracy_floor", "overall"), ("min_gain", "overall")} <= failed(d)
    assert all("not a finite number" in r for r in d.reasons)


def test_nan_is_never_better_even_with_negative_min_gain():
    d = decide(metrics(overall=NAN), metrics(overall=0.5), thresholds(min_gain=-1.0))
    assert not d.blessed


def test_nan_baseline_fails_the_comparison():
    d = decide(metrics(), metrics(overall=NAN), ALL)
    assert not d.blessed
    assert failed(d) == {("min_gain", "overall")}
    assert "baseline accuracy on slice overall is nan" in d.reasons[0]


def test_nan_slice_fails_floor_and_regression():
    d = decide(metrics(label_4=NAN), metrics(), ALL)
    assert failed(d) == {("slice_accuracy_floor", "label=4"), ("slice_max_regression", "label=4")}


def test_inf_candidate_is_rejected():
    assert not decide(metrics(overall=INF), None, ALL).blessed


def test_negative_inf_baseline_does_not_make_any_gain_pass():
    d = decide(metrics(), metrics(overall=-INF), thresholds(accuracy_floor=0.5, min_gain=0.0))
    assert not d.blessed and failed(d) == {("min_gain", "overall")}


def test_non_finite_threshold_fails_closed():
    d = decide(metrics(), None, thresholds(accuracy_floor=NAN))
    assert not d.blessed and "threshold accuracy_floor is nan" in d.reasons[0]


# --- no thresholds ------------------------------------------------------------------------------

@pytest.mark.parametrize("limits", [NONE, {}, None])
def test_no_thresholds_is_not_blessed(limits):
    for baseline in (None, metrics()):
        d = decide(metrics(), baseline, limits)
        assert not d.blessed
        assert d.reasons == ["no thresholds configured"]


# --- per-label slices ---------------------------------------------------------------------------

def test_slice_below_floor_fails_naming_the_slice():
    d = decide(metrics(label_3=0.85), None, ALL)
    assert not d.blessed
    assert failed(d) == {("slice_accuracy_floor", "label=3")}
    assert "label=3 accuracy 0.8500 < slice_accuracy_floor 0.9000" in d.reasons[0]


def test_slice_regression_beyond_limit_fails():
    d = decide(metrics(label_3=0.93), metrics(label_3=0.98), ALL)
    assert failed(d) == {("slice_max_regression", "label=3")}
    check = next(c for c in d.checks if c.name == "slice_max_regression" and c.slice == "label=3")
    assert check.value == pytest.approx(0.05) and check.threshold == 0.02


def test_slice_regression_within_limit_passes():
    assert decide(metrics(label_3=0.97), metrics(label_3=0.98), ALL).blessed


def test_non_label_slices_are_not_gated():
    d = decide(metrics(), metrics(), ALL)
    assert d.blessed and not any(c.slice.startswith("ink_density") for c in d.checks)


# --- missing slices and metrics, zero examples ---------------------------------------------------

def test_slice_missing_in_candidate_but_in_baseline_fails():
    candidate = metrics()
    del candidate["label=7"]
    d = decide(candidate, metrics(), ALL)
    assert {("slice_accuracy_floor", "label=7"), ("slice_max_regression", "label=7")} == failed(d)
    assert any("slice label=7 missing from candidate metrics" in r for r in d.reasons)


def test_required_slice_missing_fails_on_first_run():
    candidate = metrics()
    del candidate["label=9"]
    assert decide(candidate, None, ALL).blessed  # nothing says label 9 must exist...
    d = decide(candidate, None, ALL, required_slices=[f"label={k}" for k in range(10)])
    assert not d.blessed and failed(d) == {("slice_accuracy_floor", "label=9")}


def test_missing_overall_fails():
    candidate = metrics()
    del candidate["overall"]
    d = decide(candidate, None, ALL)
    assert failed(d) == {("accuracy_floor", "overall")}


def test_missing_accuracy_metric_fails():
    candidate = metrics()
    del candidate["overall"]["accuracy"]
    d = decide(candidate, None, ALL)
    assert not d.blessed and "candidate metric accuracy missing on slice overall" in d.reasons[0]


def test_missing_example_count_fails():
    baseline = metrics()
    del baseline["overall"]["example_count"]
    d = decide(metrics(), baseline, ALL)
    assert failed(d) == {("min_gain", "overall")}
    assert "baseline metric example_count missing" in d.reasons[0]


def test_none_metric_value_fails():
    candidate = metrics()
    candidate["label=2"]["accuracy"] = None
    assert failed(decide(candidate, None, ALL)) == {("slice_accuracy_floor", "label=2")}


@pytest.mark.parametrize("slice_name", ["overall", "label=5"])
def test_zero_examples_fails(slice_name):
    candidate = metrics()
    candidate[slice_name]["example_count"] = 0
    d = decide(candidate, None, ALL)
    assert not d.blessed and any("has 0 examples" in r for r in d.reasons)


def test_no_label_slices_at_all_fails_slice_floor():
    d = decide({"overall": {"accuracy": 0.99, "example_count": 10}}, None, ALL)
    assert not d.blessed and "no label slices in candidate metrics" in d.reasons


def test_empty_baseline_fails_relative_checks():
    d = decide(metrics(), {}, ALL)
    assert not d.blessed
    assert ("min_gain", "overall") in failed(d)
    assert "no label slices in baseline metrics" in d.reasons


# --- reporting ----------------------------------------------------------------------------------

def test_decision_serialises_as_strict_json():
    d = decide(metrics(overall=NAN), metrics(), ALL)
    text = json.dumps(d.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert data["blessed"] is False and data["reasons"] == d.reasons
    assert {"name", "slice", "value", "threshold", "passed", "reason"} == set(data["checks"][0])


accuracy = st.one_of(st.floats(min_value=0, max_value=1), st.just(NAN), st.just(INF), st.none())


@settings(max_examples=300, deadline=None)
@given(cand_overall=accuracy, base_overall=accuracy, cand_slice=accuracy, base_slice=accuracy,
       with_baseline=st.booleans())
def test_blessed_only_when_every_check_passes_on_finite_values(cand_overall, base_overall, cand_slice,
                                                               base_slice, with_baseline):
    candidate = metrics(overall=cand_overall, label_0=cand_slice)
    baseline = metrics(overall=base_overall, label_0=base_slice) if with_baseline else None
    d = decide(candidate, baseline, ALL)
    assert d.blessed == (all(c.passed for c in d.checks) and bool(d.checks))
    assert d.reasons == [c.reason for c in d.checks if not c.passed]
    if d.blessed:
        assert cand_overall is not None and math.isfinite(cand_overall) and cand_overall >= 0.95 - 1e-9
        assert cand_slice is not None and math.isfinite(cand_slice)
        if with_baseline:
            assert math.isfinite(base_overall) and cand_overall >= base_overall - 1e-9
