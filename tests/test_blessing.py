"""The blessing gate's pure logic: every rule, and failing closed on bad or missing metrics."""

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.evaluator.blessing import THRESHOLD_NAMES, decide
from components.evaluator.paired_stats import PairedTable
from pipeline.config import EvaluatorConfig

NAN = float("nan")
INF = float("inf")

ALL = EvaluatorConfig(accuracy_floor=0.95, min_gain=0.0, slice_accuracy_floor=0.90, slice_max_regression=0.02)
NONE = EvaluatorConfig(
    accuracy_floor=None, min_gain=None, slice_accuracy_floor=None, slice_max_regression=None
)


def thresholds(**kw):
    return {**{name: None for name in THRESHOLD_NAMES}, **kw}


def metrics(overall=0.97, per_label=0.96, count=1000, **slices):
    """Overall plus label=0..9 slices; `label_3=0.5` overrides one slice's accuracy."""
    out = {"overall": {"accuracy": overall, "example_count": count}}
    for k in range(10):
        out[f"label={k}"] = {"accuracy": slices.get(f"label_{k}", per_label), "example_count": count // 10}
    out["ink_density_bucket=2"] = {"accuracy": 0.1, "example_count": 50}  # not gated
    return out


def _table(candidate: float, baseline: float, n: int, swaps: int = 0) -> PairedTable:
    """n examples with the given accuracies; `swaps` more examples each model alone gets right."""
    cand, base = round(candidate * n), round(baseline * n)
    candidate_only, baseline_only = max(cand - base, 0) + swaps, max(base - cand, 0) + swaps
    both = min(cand, base) - swaps
    return PairedTable(both, candidate_only, baseline_only, n - both - candidate_only - baseline_only)


def paired(candidate=0.97, baseline=0.97, per_label=(0.96, 0.96), count=1000, swaps=0, **slices):
    """Paired tables matching `metrics()`: overall, label=0..9 and one ink density slice."""
    tables = {"overall": _table(candidate, baseline, count, swaps)}
    for k in range(10):
        tables[f"label={k}"] = _table(*slices.get(f"label_{k}", per_label), count // 10)
    tables["ink_density_bucket=2"] = _table(0.1, 0.1, 50)
    return tables


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
    d = decide(
        metrics(overall=0.99), metrics(overall=0.97), thresholds(min_gain=0.0), paired=paired(0.99, 0.97)
    )
    assert d.blessed and [c.name for c in d.checks] == ["superiority"]


def test_a_baseline_without_paired_outcomes_fails_closed():
    d = decide(metrics(overall=0.99), metrics(overall=0.97), ALL)
    assert not d.blessed and failed(d) == {("paired_outcomes", "overall")}
    assert "no paired outcomes" in d.reasons[0]


# --- the promotion policy against the baseline ---------------------------------------------------


def test_better_candidate_passes_min_gain():
    d = decide(metrics(overall=0.98), metrics(overall=0.97), ALL, paired=paired(0.98, 0.97))
    assert d.blessed, d.reasons
    gain = next(c for c in d.checks if c.name == "superiority")
    assert gain.value == pytest.approx(0.01) and gain.passed and gain.threshold == 0.0
    assert (d.policy, d.alpha, d.margin) == ("superiority", 0.05, 0.005)
    overall = d.comparisons[0]
    assert overall["slice"] == "overall" and overall["candidate_only"] == 10 and overall["baseline_only"] == 0
    assert overall["difference_ci"][0] > 0 and overall["p_value"] < 0.01


def test_worse_candidate_fails_min_gain():
    d = decide(metrics(overall=0.96), metrics(overall=0.97), ALL, paired=paired(0.96, 0.97))
    assert not d.blessed
    assert failed(d) == {("superiority", "overall")}
    assert d.reasons[0].startswith("overall accuracy -0.0100 (95% CI ")
    assert "McNemar p = " in d.reasons[0] and "under superiority" in d.reasons[0]


def test_equal_fails_under_superiority_and_passes_under_non_inferiority():
    equal = paired(0.97, 0.97, swaps=5)
    d = decide(metrics(), metrics(), ALL, paired=equal)
    assert not d.blessed and failed(d) == {("superiority", "overall")}
    assert "not better than the serving model" in d.reasons[0]
    lenient = dataclasses.replace(ALL, promotion_policy="non_inferiority", non_inferiority_margin=0.02)
    assert decide(metrics(), metrics(), lenient, paired=equal).blessed


def test_a_point_gain_equal_to_min_gain_is_not_enough():
    # The interval's lower bound must clear min_gain: a point gain of exactly min_gain cannot.
    d = decide(
        metrics(overall=0.99),
        metrics(overall=0.97),
        thresholds(accuracy_floor=0.5, min_gain=0.02),
        paired=paired(0.99, 0.97),
    )
    assert not d.blessed and failed(d) == {("superiority", "overall")}


# --- NaN and Inf --------------------------------------------------------------------------------


def test_nan_candidate_fails_every_check_it_touches():
    d = decide(metrics(overall=NAN), metrics(), ALL, paired=paired(0.98, 0.97))
    assert not d.blessed
    assert {("accuracy_floor", "overall"), ("paired_outcomes", "overall")} <= failed(d)
    assert all("not a finite number" in r for r in d.reasons if "McNemar" not in r)


def test_nan_is_never_better_even_with_the_widest_margin():
    lenient = thresholds(promotion_policy="non_inferiority", non_inferiority_margin=1.0, min_gain=0.0)
    d = decide(metrics(overall=NAN), metrics(overall=0.5), lenient, paired=paired(0.5, 0.5))
    assert not d.blessed


def test_nan_baseline_fails_the_comparison():
    d = decide(metrics(overall=0.98), metrics(overall=NAN), ALL, paired=paired(0.98, 0.97))
    assert not d.blessed
    assert ("paired_outcomes", "overall") in failed(d)
    assert "baseline accuracy on slice overall is nan" in d.reasons[0]


def test_nan_slice_fails_the_floor_and_a_slice_without_paired_outcomes_fails_regression():
    tables = paired(0.98, 0.97)
    del tables["label=4"]
    d = decide(metrics(overall=0.98, label_4=NAN), metrics(), ALL, paired=tables)
    assert failed(d) == {("slice_accuracy_floor", "label=4"), ("slice_max_regression", "label=4")}


def test_inf_candidate_is_rejected():
    assert not decide(metrics(overall=INF), None, ALL).blessed


def test_negative_inf_baseline_does_not_make_any_gain_pass():
    d = decide(
        metrics(overall=0.98),
        metrics(overall=-INF),
        thresholds(accuracy_floor=0.5, min_gain=0.0),
        paired=paired(0.98, 0.97),
    )
    assert not d.blessed and failed(d) == {("paired_outcomes", "overall")}


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
    # 1,000 digits of label 3: a 5-point loss is significant even at Holm's alpha / 10.
    d = decide(
        metrics(overall=0.99, label_3=0.93, count=10000),
        metrics(overall=0.97, label_3=0.98, count=10000),
        ALL,
        paired=paired(0.99, 0.97, label_3=(0.93, 0.98), count=10000),
    )
    assert failed(d) == {("slice_max_regression", "label=3")}
    check = next(c for c in d.checks if c.name == "slice_max_regression" and c.slice == "label=3")
    assert check.value == pytest.approx(0.05) and check.threshold == 0.02
    assert "(Holm step-down, p = " in check.reason and "McNemar p = " in check.reason
    compared = next(c for c in d.comparisons if c["slice"] == "label=3")
    assert compared["alpha"] < 0.05  # the smallest p gets alpha / 10 under Holm


def test_a_slice_loss_too_small_to_be_significant_passes():
    # 100 digits of label 3: 5 of them lost is within what chance gives at Holm's level.
    d = decide(
        metrics(overall=0.99, label_3=0.93),
        metrics(overall=0.97, label_3=0.98),
        ALL,
        paired=paired(0.99, 0.97, label_3=(0.93, 0.98)),
    )
    assert d.blessed, d.reasons


def test_slice_regression_within_limit_passes():
    d = decide(
        metrics(overall=0.99, label_3=0.97),
        metrics(overall=0.97, label_3=0.98),
        ALL,
        paired=paired(0.99, 0.97, label_3=(0.97, 0.98)),
    )
    assert d.blessed, d.reasons


def test_non_label_slices_are_not_gated():
    d = decide(metrics(overall=0.99), metrics(overall=0.97), ALL, paired=paired(0.99, 0.97))
    assert d.blessed and not any(c.slice.startswith("ink_density") for c in d.checks)
    assert any(c["slice"] == "ink_density_bucket=2" for c in d.comparisons)  # reported, not gated


# --- missing slices and metrics, zero examples ---------------------------------------------------


def test_slice_missing_in_candidate_but_in_baseline_fails():
    candidate = metrics(overall=0.99)
    del candidate["label=7"]
    tables = paired(0.99, 0.97)
    del tables["label=7"]
    d = decide(candidate, metrics(), ALL, paired=tables)
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
    d = decide(metrics(overall=0.99), baseline, ALL, paired=paired(0.99, 0.97))
    assert failed(d) == {("paired_outcomes", "overall")}
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
    d = decide(metrics(), {}, ALL, paired=paired(0.97, 0.97))
    assert not d.blessed
    assert ("paired_outcomes", "overall") in failed(d)
    assert "no label slices in baseline metrics" in d.reasons


# --- reporting ----------------------------------------------------------------------------------


def test_decision_serialises_as_strict_json():
    d = decide(metrics(overall=NAN), metrics(), ALL, paired=paired(0.98, 0.97))
    text = json.dumps(d.to_dict(), allow_nan=False)
    data = json.loads(text)
    assert data["blessed"] is False and data["reasons"] == d.reasons
    assert {"name", "slice", "value", "threshold", "passed", "reason"} == set(data["checks"][0])


accuracy = st.one_of(st.floats(min_value=0, max_value=1), st.just(NAN), st.just(INF), st.none())


@settings(max_examples=300, deadline=None)
@given(
    cand_overall=accuracy,
    base_overall=accuracy,
    cand_slice=accuracy,
    base_slice=accuracy,
    with_baseline=st.booleans(),
)
def test_blessed_only_when_every_check_passes_on_finite_values(
    cand_overall, base_overall, cand_slice, base_slice, with_baseline
):
    candidate = metrics(overall=cand_overall, label_0=cand_slice)
    baseline = metrics(overall=base_overall, label_0=base_slice) if with_baseline else None
    usable = lambda v: v is not None and math.isfinite(v) and 0 <= v <= 1  # noqa: E731
    tables = paired(
        cand_overall if usable(cand_overall) else 0.97, base_overall if usable(base_overall) else 0.97
    )
    d = decide(candidate, baseline, ALL, paired=tables)
    assert d.blessed == (all(c.passed for c in d.checks) and bool(d.checks))
    assert d.reasons == [c.reason for c in d.checks if not c.passed]
    if d.blessed:
        assert cand_overall is not None and math.isfinite(cand_overall) and cand_overall >= 0.95 - 1e-9
        assert cand_slice is not None and math.isfinite(cand_slice)
        if with_baseline:
            assert math.isfinite(base_overall) and cand_overall > base_overall


def test_the_gate_defaults_for_a_bare_mapping_are_the_configs_defaults():
    from components.evaluator.blessing import POLICY_DEFAULTS

    assert POLICY_DEFAULTS == {name: getattr(EvaluatorConfig(), name) for name in POLICY_DEFAULTS}


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ({"promotion_policy": "Superiority"}, "policy must be one of"),
        ({"min_gain": -0.5}, "min_gain must be"),
        ({"alpha": 0.9}, "alpha must be in"),
        ({"non_inferiority_margin": float("nan")}, "non_inferiority_margin must be"),
    ],
)
def test_settings_the_gate_cannot_apply_promote_nothing(setting, fragment):
    """Config validation stops these first; the gate itself still fails closed on them."""
    limits = {**thresholds(accuracy_floor=0.9, min_gain=0.0), **setting}
    d = decide(metrics(overall=0.99), metrics(overall=0.97), limits, paired=paired(0.99, 0.97))
    assert not d.blessed and failed(d) == {("promotion_settings", "overall")}
    assert fragment in d.reasons[0]
