"""The Evaluator's parameters (`[evaluator]`): the promotion gate's thresholds and policy, each
checked when an instance is built (`pipeline.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.params import Params, at_least, in_range, one_of, unset_or
from pipeline.formats.blessing import PROMOTION_POLICIES

_FLOOR = unset_or(in_range(-1, 1))


def _gain_or_regression(value: float) -> str | None:
    if 0.0 <= value <= 1.0:
        return None
    return (
        "must be in [0, 1] or unset (to accept a worse model, use promotion_policy = "
        '"non_inferiority" with non_inferiority_margin)'
    )


@dataclass(frozen=True)
class EvaluatorParams(Params):
    """The promotion gate. Every threshold that is set must pass; none set means no blessing."""

    SECTION = "evaluator"

    # Absolute floor on overall accuracy; applies on every run, also the first.
    accuracy_floor: float | None = 0.95
    # How the candidate must compare with the serving model on the same test digits (paired
    # interval of the accuracy difference at level 1 - alpha): "superiority" = its lower bound
    # above min_gain; "non_inferiority" = its lower bound above -non_inferiority_margin.
    promotion_policy: str = "superiority"
    alpha: float = 0.05
    # Under superiority: how much better, with confidence 1 - alpha (0.0 = "better at all").
    min_gain: float | None = 0.0
    # Under non_inferiority: the largest accuracy loss the team accepts for fresh data.
    non_inferiority_margin: float = 0.005
    # No per-label slice may fall below this accuracy.
    slice_accuracy_floor: float | None = 0.90
    # No per-label slice may be significantly worse than the serving model by more than this
    # (Holm-adjusted over the ten label slices).
    slice_max_regression: float | None = 0.02
    # Examples of the test split to evaluate on (None = all).
    max_examples: int | None = None

    CHECKS = {
        "accuracy_floor": _FLOOR,
        "promotion_policy": one_of(PROMOTION_POLICIES),
        "alpha": in_range(0, 0.5, low_open=True, high_open=True),
        "min_gain": _gain_or_regression,
        "non_inferiority_margin": in_range(0, 1),
        "slice_accuracy_floor": _FLOOR,
        "slice_max_regression": _gain_or_regression,
        "max_examples": unset_or(at_least(1)),
    }
