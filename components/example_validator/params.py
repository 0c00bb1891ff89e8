"""ExampleValidator's parameters (the drift and leakage half of `[validation]`), checked when an instance
is built (`pipeline.core.params`)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.core.params import ANY, Params, at_least, in_range, local_path

# Both distances lie in [0, 1]: a threshold above 1 would switch the drift check off.
_DISTANCE_LIMIT = in_range(0, 1, low_open=True)


@dataclass(frozen=True)
class ExampleValidatorParams(Params):
    """Drift limits against the previous span, and against the reference statistics for a
    first span."""

    SECTION = "validation"

    # The reference: label and pixel histograms as JSON (pipeline.formats.reference), read by
    # content digest, so editing it reruns the gate (the application supplies the default: the
    # shipped MNIST training set's).
    reference_path: str
    # L-infinity distance between label distributions of this span and the previous one.
    label_drift_linf: float = 0.05
    # Jensen-Shannon divergence between the pixel-value histograms of the two spans.
    pixel_drift_jsd: float = 0.01
    # A pipeline root's first span has no previous span: compare it with the reference
    # statistics instead (false: skip drift on the first span, for data that is not MNIST-like).
    reference_check: bool = True
    # Limits against the reference. One sample against a population is less noisy than two
    # spans against each other, but a first span can be small: measured in docs/reliability.md.
    reference_label_drift_linf: float = 0.07
    reference_pixel_drift_jsd: float = 0.02
    # Train/test leakage (components/example_validator/leakage.py): training and eval digits
    # equal to a test digit. Exact duplicates allowed (the shipped MNIST has none).
    leakage_max_exact: int = 0
    # Near duplicates (at most 10 pixels differ by more than 32 grey levels) allowed, as a
    # fraction of the training and eval digits. The full MNIST has none (11 of 60,000 within 15
    # pixels: benchmarks/bench_leakage.py); 0.001 lets a span of 1,000 digits hold one by chance.
    leakage_max_near_rate: float = 0.001

    CHECKS = {
        "reference_path": local_path(required=True),
        "label_drift_linf": _DISTANCE_LIMIT,
        "pixel_drift_jsd": _DISTANCE_LIMIT,
        "reference_check": ANY,  # true or false
        "reference_label_drift_linf": _DISTANCE_LIMIT,
        "reference_pixel_drift_jsd": _DISTANCE_LIMIT,
        "leakage_max_exact": at_least(0),
        "leakage_max_near_rate": in_range(0, 1),
    }
