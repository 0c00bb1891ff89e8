"""Paired statistics for the promotion gate: checked against scipy, published values and brute force."""

import dataclasses
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from components.evaluator.paired_stats import (
    Comparison,
    PairedTable,
    compare,
    compare_slices,
    decide,
    describe,
    holm_adjusted_alphas,
    holm_reject,
    mcnemar_exact_p,
    newcombe_difference_interval,
    wilson_interval,
)


def table(candidate_only, baseline_only, n, both_wrong=None):
    """A table of n examples; the concordant rest split 95/5 between both right and both wrong."""
    rest = n - candidate_only - baseline_only
    wrong = rest // 20 if both_wrong is None else both_wrong
    return PairedTable(rest - wrong, candidate_only, baseline_only, wrong)


def gate(overall, policy, slices=(), alpha=0.05, min_gain=0.0, margin=0.005, slice_max=0.0):
    return decide(
        compare("overall", overall, alpha), list(slices), policy, alpha, min_gain, margin, slice_max
    )


# --- PairedTable ---------------------------------------------------------------------------------


def test_table_properties_and_from_correctness():
    cand = [True, True, False, False, True, False]
    base = [True, False, True, False, False, False]
    t = PairedTable.from_correctness(np.array(cand), base)
    assert (t.both_correct, t.candidate_only, t.baseline_only, t.both_wrong) == (1, 2, 1, 2)
    assert t.n == 6
    assert t.candidate_accuracy == pytest.approx(3 / 6)
    assert t.baseline_accuracy == pytest.approx(2 / 6)
    assert t.difference == pytest.approx(1 / 6)


def test_from_correctness_length_mismatch_names_lengths():
    with pytest.raises(ValueError, match="3.*2"):
        PairedTable.from_correctness([True, False, True], [True, False])


def test_empty_table_is_nan_and_negative_counts_rejected():
    t = PairedTable(0, 0, 0, 0)
    assert t.n == 0
    assert all(math.isnan(x) for x in (t.candidate_accuracy, t.baseline_accuracy, t.difference))
    with pytest.raises(ValueError, match="baseline_only"):
        PairedTable(1, 0, -1, 0)


# --- McNemar -------------------------------------------------------------------------------------


@pytest.mark.parametrize("b,c", [(9, 12), (0, 10), (10, 0), (1, 0), (50, 20), (300, 250), (7, 7)])
def test_mcnemar_matches_scipy_binomtest(b, c):
    assert mcnemar_exact_p(b, c) == pytest.approx(stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-12)


def test_mcnemar_known_values_and_no_discordant_pairs():
    assert mcnemar_exact_p(9, 12) == pytest.approx(0.6636, abs=1e-4)
    assert mcnemar_exact_p(0, 10) == pytest.approx(2 / 1024)
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(1, 0) == 1.0


def test_mcnemar_mid_p():
    # mid-p = exact p minus the probability of the observed count (two-sided: counted twice / 2).
    b, c = 3, 12
    expected = 2 * (stats.binom.cdf(3, 15, 0.5) - 0.5 * stats.binom.pmf(3, 15, 0.5))
    assert mcnemar_exact_p(b, c, mid_p=True) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact_p(b, c, mid_p=True) < mcnemar_exact_p(b, c)
    assert mcnemar_exact_p(5, 5, mid_p=True) == pytest.approx(1.0)


# --- Wilson --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "k,n,alpha",
    [
        (0, 10, 0.05),
        (10, 10, 0.05),
        (3, 7, 0.05),
        (0, 1, 0.05),
        (1, 1, 0.01),
        (981, 1000, 0.05),
        (9812, 10000, 0.005),
        (50, 100, 0.2),
    ],
)
def test_wilson_matches_scipy(k, n, alpha):
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    assert wilson_interval(k, n, alpha) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_wilson_empty_and_bounds():
    assert all(math.isnan(x) for x in wilson_interval(0, 0, 0.05))
    low, high = wilson_interval(0, 5, 0.05)
    assert low == 0.0 and 0 < high < 1
    with pytest.raises(ValueError):
        wilson_interval(6, 5, 0.05)


# --- Newcombe method 10 --------------------------------------------------------------------------


def reference_newcombe(a, b, c, d, alpha):
    """Method 10 written out plainly from Newcombe (1998), on scipy's Wilson intervals."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    ci1 = stats.binomtest(a + b, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    ci2 = stats.binomtest(a + c, n).proportion_ci(confidence_level=1 - alpha, method="wilson")
    l1, u1, l2, u2 = ci1.low, ci1.high, ci2.low, ci2.high
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        phi = 0.0
    else:
        cross = a * d - b * c
        if cross > n / 2:
            numerator = cross - n / 2
        elif cross >= 0:
            numerator = 0.0
        else:
            numerator = cross
        phi = numerator / math.sqrt(margins)
    theta = p1 - p2
    lower = theta - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = theta + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def test_newcombe_published_example():
    # Fagerland, Lydersen & Laake, Statistical Analysis of Contingency Tables (2017), ch. 8: Cavo
    # et al. (2012) complete response, 59/6/16/80 -> -0.0621 (95% CI -0.1186 to -0.0046), the
    # value the authors' R package `contingencytables` also asserts for Newcombe's method 10.
    t = PairedTable(59, 6, 16, 80)
    assert t.difference == pytest.approx(-0.0621, abs=5e-5)
    assert newcombe_difference_interval(t, 0.05) == pytest.approx((-0.1186, -0.0046), abs=5e-5)


def test_newcombe_36_12_2_0():
    # Recomputed from the formula (the 0.0528 / 0.3382 sometimes quoted for this table is not
    # what method 10 gives; it is not asserted here).
    t = PairedTable(36, 12, 2, 0)
    assert t.difference == pytest.approx(0.2)
    assert newcombe_difference_interval(t, 0.05) == pytest.approx((0.0569, 0.3404), abs=5e-5)


def random_tables():
    rng = np.random.default_rng(20240607)
    tables = [(a, b, c, d) for a, b, c, d in itertools.product(range(3), repeat=4) if a + b + c + d > 0]
    tables += [
        (2, 0, 0, 2),
        (9000, 0, 0, 1000),
        (10000, 0, 0, 0),
        (0, 0, 0, 7),
        (0, 5, 5, 0),
        (0, 30, 0, 0),
        (0, 0, 30, 0),
        (36, 12, 2, 0),
        (5, 5, 0, 0),
    ]
    for _ in range(200):
        n = int(rng.integers(1, 5000))
        probs = rng.dirichlet([4.0, 0.5, 0.5, 1.0])
        tables.append(tuple(int(x) for x in rng.multinomial(n, probs)))
    return tables


@pytest.mark.parametrize("alpha", [0.05, 0.005])
def test_newcombe_matches_plain_reference_on_grid(alpha):
    for a, b, c, d in random_tables():
        got = newcombe_difference_interval(PairedTable(a, b, c, d), alpha)
        assert got == pytest.approx(reference_newcombe(a, b, c, d, alpha), abs=1e-9), (a, b, c, d)
        low, high = got
        assert -1.0 <= low <= (b - c) / (a + b + c + d) <= high <= 1.0


def test_newcombe_zero_discordant_is_finite_and_not_degenerate():
    for t in (PairedTable(2, 0, 0, 2), PairedTable(9000, 0, 0, 1000), PairedTable(10000, 0, 0, 0)):
        low, high = newcombe_difference_interval(t, 0.05)
        assert low < 0.0 < high and high - low < 1.0


def test_newcombe_empty_table_is_nan():
    assert all(math.isnan(x) for x in newcombe_difference_interval(PairedTable(0, 0, 0, 0), 0.05))


# --- Holm ----------------------------------------------------------------------------------------


def closed_bonferroni(p_values, alpha):
    """Holm by definition: closed testing with Bonferroni local tests over every subset."""
    m = len(p_values)
    out = []
    for i in range(m):
        out.append(
            all(
                min(p_values[j] for j in s) <= alpha / len(s)
                for r in range(1, m + 1)
                for s in itertools.combinations(range(m), r)
                if i in s
            )
        )
    return out


def test_holm_textbook_example():
    p = [0.01, 0.04, 0.03, 0.005]
    assert holm_reject(p, 0.05) == [True, False, False, True]
    assert holm_adjusted_alphas(p, 0.05) == pytest.approx([0.05 / 3, 0.05, 0.05 / 2, 0.05 / 4])


def test_holm_matches_closed_testing_on_random_vectors():
    rng = np.random.default_rng(7)
    for _ in range(300):
        m = int(rng.integers(1, 8))
        p = list(rng.beta(0.4, 3.0, size=m))
        if rng.random() < 0.3:
            p[0] = p[-1]  # ties
        assert holm_reject(p, 0.05) == closed_bonferroni(p, 0.05), p


def test_holm_nan_never_rejects_and_sorts_last():
    p = [float("nan"), 0.001, 0.2]
    assert holm_reject(p, 0.05) == [False, True, False]
    assert holm_adjusted_alphas(p, 0.05) == pytest.approx([0.05, 0.05 / 3, 0.05 / 2])
    assert holm_reject([], 0.05) == [] and holm_adjusted_alphas([], 0.05) == []


def test_holm_stops_at_first_failure():
    # 0.03 > 0.05/2 stops the procedure even though 0.04 <= 0.05 would pass its own threshold.
    assert holm_reject([0.001, 0.04, 0.03], 0.05) == [True, False, False]


# --- Comparison, describe, compare_slices --------------------------------------------------------


def test_compare_and_to_json():
    c = compare("overall", table(12, 9, 10000), 0.05)
    assert isinstance(c, Comparison)
    j = c.to_json()
    assert list(j) == [
        "slice",
        "n",
        "candidate_only",
        "baseline_only",
        "candidate_accuracy",
        "baseline_accuracy",
        "candidate_ci",
        "baseline_ci",
        "difference",
        "difference_ci",
        "p_value",
        "alpha",
        "regression_p_value",
    ]
    assert j["n"] == 10000 and j["difference"] == 0.0003 and j["alpha"] == 0.05
    assert isinstance(j["difference_ci"], list) and len(j["difference_ci"]) == 2
    assert j["p_value"] == float(f"{stats.binomtest(12, 21).pvalue:.6g}")
    assert j["regression_p_value"] is None  # computed for label slices only (compare_slices)
    tiny = compare("overall", table(0, 60, 10000), 0.05).to_json()["p_value"]
    assert 0 < tiny == float(f"{stats.binomtest(0, 60).pvalue:.6g}")  # a tiny p is not rounded to 0
    empty = compare("label=3", PairedTable(0, 0, 0, 0), 0.05).to_json()
    assert empty["difference"] is None and empty["difference_ci"] == [None, None]
    assert empty["p_value"] == 1.0


def test_describe_format_and_level():
    c = compare("overall", table(12, 9, 10000), 0.05)
    low, high = c.difference_ci
    assert describe(c) == f"+0.0003 (95% CI {low:+.4f} to {high:+.4f}, McNemar p = 0.66)"
    assert "99.5% CI" in describe(compare("overall", table(12, 9, 10000), 0.005))
    assert describe(compare("x", PairedTable(0, 0, 0, 0), 0.05)).startswith("nan (95% CI nan to nan")


def test_compare_slices_uses_holm_alpha_in_key_order():
    tables = {"label=0": table(10, 10, 1000), "label=1": table(5, 80, 1000), "label=2": table(10, 20, 1000)}
    out = compare_slices(tables, 0.05)
    assert [c.slice for c in out] == list(tables)
    assert [c.alpha for c in out] == pytest.approx([0.05, 0.05 / 3, 0.05 / 2])


# --- policy --------------------------------------------------------------------------------------

CLEARLY_BETTER = table(80, 10, 1000)
EQUAL = table(9, 12, 10000)
SLIGHTLY_WORSE = table(20, 30, 10000)
CLEARLY_WORSE = table(20, 200, 10000)
NO_DISCORDANT = table(0, 0, 10000)


@pytest.mark.parametrize("policy", ["superiority", "non_inferiority"])
def test_clearly_better_is_promoted(policy):
    assert gate(CLEARLY_BETTER, policy) == []


@pytest.mark.parametrize("t", [EQUAL, SLIGHTLY_WORSE, NO_DISCORDANT])
def test_not_better_is_refused_under_superiority_but_non_inferior(t):
    reasons = gate(t, "superiority")
    assert len(reasons) == 1 and "under superiority" in reasons[0]
    assert gate(t, "non_inferiority", margin=0.005) == []


@pytest.mark.parametrize("policy", ["superiority", "non_inferiority"])
def test_clearly_worse_is_refused(policy):
    reasons = gate(CLEARLY_WORSE, policy)
    assert len(reasons) == 1 and f"under {policy}" in reasons[0]


def test_zero_discordant_superiority_refused_even_with_zero_min_gain():
    c = compare("overall", NO_DISCORDANT, 0.05)
    assert c.difference == 0.0 and c.difference_ci[0] < 0 < c.difference_ci[1]
    assert decide(c, [], "superiority", 0.05, 0.0, 0.005, 0.0) != []


def test_min_gain_and_margin_are_respected():
    # CLEARLY_BETTER: +0.07 with lower bound about +0.05.
    assert gate(CLEARLY_BETTER, "superiority", min_gain=0.03) == []
    assert gate(CLEARLY_BETTER, "superiority", min_gain=0.06) != []
    # SLIGHTLY_WORSE: -0.001 with lower bound about -0.0024.
    assert gate(SLIGHTLY_WORSE, "non_inferiority", margin=0.001) != []


def test_reason_strings_carry_the_statistics():
    c = compare("overall", table(12, 9, 10000), 0.05)
    [reason] = decide(c, [], "superiority", 0.05, 0.0, 0.005, 0.0)
    assert reason == (
        f"overall accuracy {describe(c)}: not better than the serving model by more "
        "than min_gain 0.0000 under superiority"
    )
    assert "+0.0003" in reason and "95% CI" in reason and "McNemar p = 0.66" in reason
    c = compare("overall", CLEARLY_WORSE, 0.05)
    [reason] = decide(c, [], "non_inferiority", 0.05, 0.0, 0.005, 0.0)
    assert reason == (
        f"overall accuracy {describe(c)}: may be worse than the serving model by more "
        "than non_inferiority_margin 0.0050 under non_inferiority"
    )
    assert "-0.0180" in reason


@pytest.mark.parametrize("policy", ["superiority", "non_inferiority"])
def test_empty_overall_fails_closed(policy):
    [reason] = gate(PairedTable(0, 0, 0, 0), policy)
    assert "cannot be computed" in reason and "no examples" in reason


def test_empty_slice_fails_closed():
    slices = compare_slices({"label=2": table(1, 1, 100), "label=3": PairedTable(0, 0, 0, 0)}, 0.05)
    assert gate(CLEARLY_BETTER, "superiority", slices) == ["slice label=3 has no examples"]


def test_significantly_worse_slice_is_refused_by_name():
    tables = {f"label={k}": table(10, 11, 1000) for k in range(10)}
    tables["label=7"] = table(5, 80, 1000)
    slices = compare_slices(tables, 0.05, limit=0.01)
    [reason] = gate(CLEARLY_BETTER, "superiority", slices, slice_max=0.01)
    assert reason.startswith("slice label=7 accuracy -0.0750 (99.5% CI")
    assert "McNemar p = " in reason and "slice_max_regression 0.0100" in reason
    lenient = compare_slices(tables, 0.05, limit=0.08)
    assert gate(CLEARLY_BETTER, "superiority", lenient, slice_max=0.08) == []


def test_ten_noisy_slices_do_not_refuse():
    rng = np.random.default_rng(3)
    tables = {}
    for k in range(10):
        b, c = rng.poisson(15, size=2)
        tables[f"label={k}"] = table(int(b), int(c), 1000)
    slices = compare_slices(tables, 0.05)
    assert not any(holm_reject([s.p_value for s in slices], 0.05))
    assert gate(CLEARLY_BETTER, "superiority", slices) == []


def test_holm_keeps_a_marginal_slice_among_ten_from_refusing():
    marginal = table(10, 25, 1000)  # McNemar p ~ 0.017
    assert compare("label=0", marginal, 0.05).difference_ci[1] < 0  # would refuse unadjusted
    tables = {"label=0": marginal, **{f"label={k}": table(15, 15, 1000) for k in range(1, 10)}}
    slices = compare_slices(tables, 0.05)
    assert slices[0].alpha == pytest.approx(0.005)
    assert gate(CLEARLY_BETTER, "superiority", slices) == []


def test_slice_check_can_be_disabled():
    slices = compare_slices({"label=3": PairedTable(0, 0, 0, 0)}, 0.05)
    assert gate(CLEARLY_BETTER, "superiority", slices, slice_max=None) == []


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"policy": "bogus"}, "policy"),
        ({"alpha": 0.5}, "alpha"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"min_gain": -0.01}, "min_gain"),
        ({"non_inferiority_margin": -0.01}, "non_inferiority_margin"),
        ({"non_inferiority_margin": float("inf")}, "non_inferiority_margin"),
        ({"slice_max_regression": -0.01}, "slice_max_regression"),
    ],
)
def test_invalid_inputs_raise_naming_the_parameter(kwargs, name):
    args = {
        "policy": "superiority",
        "alpha": 0.05,
        "min_gain": 0.0,
        "non_inferiority_margin": 0.005,
        "slice_max_regression": 0.0,
        **kwargs,
    }
    overall = compare("overall", CLEARLY_BETTER, 0.05)
    with pytest.raises(ValueError, match=name):
        decide(overall, [], **args)


def test_overall_built_at_another_alpha_is_rejected():
    with pytest.raises(ValueError, match="alpha"):
        decide(compare("overall", CLEARLY_BETTER, 0.01), [], "superiority", 0.05, 0.0, 0.005, 0.0)


def test_tables_by_slice_counts_each_slice_and_keeps_required_empty_slices():
    from components.evaluator.paired_stats import tables_by_slice

    cand = [True, False, True, True, False]
    base = [True, True, False, True, False]
    tables = tables_by_slice(
        cand,
        base,
        {"label": [0, 1, 1, 2, 2], "ink_density_bucket": [3, 3, 3, 3, 4]},
        required={"label": range(4)},
    )
    assert tables["overall"] == PairedTable(2, 1, 1, 1)
    assert tables["label=1"] == PairedTable(0, 1, 1, 0)
    assert tables["label=2"] == PairedTable(1, 0, 0, 1)
    assert tables["label=3"].n == 0  # required, absent: present and empty, so the gate fails closed
    assert tables["ink_density_bucket=4"] == PairedTable(0, 0, 0, 1)
    with pytest.raises(ValueError, match="feature label has 2 rows, the outcomes 5"):
        tables_by_slice(cand, base, {"label": [0, 1]})


def test_slices_are_refused_by_holm_step_down_on_their_regression_p_values():
    from components.evaluator.paired_stats import regression_p_value, verdicts

    # Ranked by the test of "worse by more than the limit", not by McNemar's test of "no difference".
    tables = {"label=0": PairedTable(900, 0, 15, 85), "label=1": PairedTable(160, 0, 15, 25)}
    slices = compare_slices(tables, 0.05, limit=0.02)
    assert slices[1].regression_p_value < slices[0].regression_p_value
    assert slices[1].alpha == pytest.approx(0.025) and slices[0].alpha == pytest.approx(0.05)
    overall = compare("overall", CLEARLY_BETTER, 0.05)
    _, results = verdicts(overall, slices, "superiority", 0.05, 0.0, 0.005, 0.02)
    assert [reason is not None for _, reason in results] == [False, True]
    # The p-value inverts the interval: at level p the upper bound sits on -limit.
    p = slices[1].regression_p_value
    assert newcombe_difference_interval(tables["label=1"], p * 1.01)[1] < -0.02
    assert newcombe_difference_interval(tables["label=1"], p * 0.99)[1] >= -0.02
    assert regression_p_value(PairedTable(0, 0, 0, 0), 0.02) != regression_p_value(
        PairedTable(0, 0, 0, 0), 0.02
    )

    # Step-down stops at the first slice it cannot refuse: the next one is kept even though its
    # own p is below the level it would have had (0.0053 <= 0.05 / 9).
    base = compare("label=0", table(10, 10, 1000), 0.05)
    ranked = [
        dataclasses.replace(base, slice=f"label={k}", regression_p_value=p)
        for k, p in enumerate([0.0052, 0.0053] + [0.9] * 8)
    ]
    _, results = verdicts(overall, ranked, "superiority", 0.05, 0.0, 0.005, 0.02)
    assert all(reason is None for _, reason in results)
