"""The Trainer's parameters (`[trainer]`): hyperparameters passed to the module's network as
`params`, and the training budget, each checked when an instance is built (`pipeline.core.params`).

Light on purpose (no TensorFlow): the application's config composes this class, and a cluster
task rebuilds it from the JSON it is handed (`TrainerParams.from_dict`). The network's own
modules read their allowed values from here, so each rule has one home.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from components.trainer import precision
from components.trainer.precision import CHOICES as PRECISIONS
from pipeline.core.params import (
    ANY,
    Params,
    at_least,
    describing_type,
    in_range,
    local_path,
    one_of,
    unset_or,
)

OPTIMIZERS = ("adam", "sgd")
DECAYS = ("none", "cosine")
# test_time_augmentation's view sets (components/trainer/test_time_augmentation.py: VIEW_SETS).
TEST_TIME_AUGMENTATIONS = ("none", "shifts", "shifts_rotations")
MAX_LABEL_SMOOTHING = 0.5
# Accepted weight-averaging decays besides 0 (off): below 0.9 the average spans fewer than 10 steps.
MIN_AVERAGING_DECAY, MAX_AVERAGING_DECAY = 0.9, 0.99999
# The largest distortion each augmentation setting accepts (pixels, degrees, zoom, pixels).
AUGMENT_LIMITS = {
    "augment_max_shift": 45.0,
    "augment_max_rotation": 45.0,
    "augment_max_scale": 0.5,
    "augment_elastic_alpha": 100.0,
}
AUGMENT_ELASTIC_SIGMA_RANGE = (0.5, 10.0)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@describing_type
def _weight_averaging_decay(value: Any) -> str | None:
    if _real(value) and (value == 0 or MIN_AVERAGING_DECAY <= value <= MAX_AVERAGING_DECAY):
        return None
    return f"must be 0 (off) or a number in [{MIN_AVERAGING_DECAY}, {MAX_AVERAGING_DECAY}], got {value!r}"


@describing_type
def _label_smoothing(value: Any) -> str | None:
    if _real(value) and 0 <= value <= MAX_LABEL_SMOOTHING:
        return None
    return f"must be a number in [0, {MAX_LABEL_SMOOTHING}], got {value!r}"


def _augment_limit(top: float):
    return describing_type(
        lambda value: (
            None if _real(value) and 0 <= value <= top else f"must be a number in [0, {top:g}], got {value!r}"
        )
    )


@describing_type
def _augment_elastic_sigma(value: Any) -> str | None:
    low, high = AUGMENT_ELASTIC_SIGMA_RANGE
    if _real(value) and low <= value <= high:
        return None
    return f"must be a number in [{low:g}, {high:g}], got {value!r}"


def _seed(value: int) -> str | None:
    # TensorFlow holds seeds as int64.
    return None if -(2**63) <= value < 2**63 else "must be a 64-bit integer (-2**63 to 2**63 - 1)"


def _network_size(value: Any) -> str | None:
    return None if value >= 1 else f"must be an integer >= 1, got {value!r}"


@dataclass(frozen=True)
class TrainerParams(Params):
    """Hyperparameters passed to `model_fn` as `params`, and the training budget."""

    SECTION = "trainer"

    # The Python file defining the network: `model_fn(features, labels, mode, params)` or
    # `keras_model(params)` (components/trainer/module_contract.py has the contract). It is code:
    # the trainer imports and runs it. Read by content digest, so editing it retrains. The
    # application supplies the default (the classic CNN it ships).
    module_file: str
    # The module's own settings, passed through in params["hparams"] unchecked (the module
    # checks them): any TOML table of strings, numbers, booleans, lists and tables.
    hparams: dict = field(default_factory=dict)
    train_steps: int = 11500
    batch_size: int = 100
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    # "cosine": the learning rate decays to 1% of learning_rate over train_steps; "none".
    learning_rate_decay: str = "cosine"
    # Training digits are randomly shifted by up to this many pixels and rotated by up to this
    # many degrees (0 = off); evaluation and serving see the digits as they are.
    augment_max_shift: float = 2.0
    augment_max_rotation: float = 10.0
    # ... zoomed by a factor in 1 +- augment_max_scale, then elastically distorted: a random
    # displacement field smoothed over augment_elastic_sigma pixels, scaled by
    # augment_elastic_alpha pixels (components/trainer/augmentation.py; 0 = off).
    augment_max_scale: float = 0.1
    augment_elastic_alpha: float = 0.0
    augment_elastic_sigma: float = 4.0
    # "auto": mixed_bfloat16 where this CPU has AVX512-BF16 or AMX-BF16 and a probe measures
    # bfloat16 faster, float32 elsewhere (components/trainer/precision.py); or "float32", or
    # "mixed_bfloat16" (bfloat16 compute, float32 weights).
    precision: str = "auto"
    # Evaluate, choose and serve an exponential moving average of the weights (Polyak averaging)
    # rather than the last step's weights: each step, average = d * average + (1 - d) * weight,
    # so it spans about 1 / (1 - d) steps (components/trainer/weight_averaging.py; 0 = off).
    weight_averaging_decay: float = 0.0
    # Train towards smoothed targets: 1 - e on the label plus e / 10 on every class (0 = plain
    # one-hot); evaluation losses stay plain cross-entropy.
    label_smoothing: float = 0.1
    # Serve each digit as the mean of the probabilities of it and moved copies of it: "none",
    # "shifts" (1 pixel each way: 5 forward passes) or "shifts_rotations" (and +-6 degrees: 7)
    # (components/trainer/test_time_augmentation.py). Checkpoints are still chosen on the digit alone.
    test_time_augmentation: str = "shifts_rotations"
    conv1_filters: int = 32
    conv2_filters: int = 64
    kernel_size: int = 5
    dense_units: int = 1024
    dropout_rate: float = 0.4
    # Evaluate on the eval split (and checkpoint) every this many steps.
    eval_every_steps: int = 1000
    # Examples of the eval split used by each periodic evaluation (None = all).
    eval_examples: int | None = None
    # Stop when eval accuracy has not improved for this many evaluations in a row (0 = never:
    # the default, as the cosine schedule is planned to its end; early stopping suits a
    # constant learning rate).
    early_stopping_evals: int = 0
    # Export the latest evaluated checkpoint whose eval accuracy is within this of the best
    # one (0.001 = 5 digits of the 5,071 eval digits, the spread of the annealed checkpoints of
    # one run; with eval_examples under 1,000 it is under one digit: the latest of the equal
    # best); 0 = the best itself (ties: lower loss); 1 = the last evaluation.
    best_checkpoint_tolerance: float = 0.001
    keep_checkpoints: int = 3
    # Start from the weights of the latest pushed model of earlier spans, when there is one and
    # its weights fit this network (same module file, same shapes); from scratch otherwise.
    warm_start: bool = True
    # A warm-started run's own schedule: this many steps, never more than train_steps (the
    # learning rate rises back to learning_rate and decays over them as learning_rate_decay
    # says); 0 = the whole train_steps schedule. The default is about a sixth of a cold
    # training's (docs/models.md#warm-start has the evidence).
    warm_start_steps: int = 2000
    random_seed: int = 42
    # Training on a local TensorFlow cluster (docs/cluster-training.md): a
    # chief, this many workers and `parameter_servers` parameter servers, each a process on a
    # loopback port. 0 = one process (no cluster).
    workers: int = 0
    # Parameter servers holding the variables; at least 1 when workers > 0.
    parameter_servers: int = 0

    CHECKS = {
        "module_file": local_path(required=True),
        "hparams": ANY,  # the module checks its own settings; the type check keeps it plain JSON
        "train_steps": at_least(1),
        "batch_size": at_least(1),
        "learning_rate": lambda value: None if value > 0 else f"must be > 0, got {value!r}",
        "optimizer": one_of(OPTIMIZERS),
        "learning_rate_decay": one_of(DECAYS),
        **{key: _augment_limit(top) for key, top in AUGMENT_LIMITS.items()},
        "augment_elastic_sigma": _augment_elastic_sigma,
        "precision": one_of(PRECISIONS),
        "weight_averaging_decay": _weight_averaging_decay,
        "label_smoothing": _label_smoothing,
        "test_time_augmentation": one_of(TEST_TIME_AUGMENTATIONS),
        "conv1_filters": _network_size,
        "conv2_filters": _network_size,
        "kernel_size": _network_size,
        "dense_units": _network_size,
        "dropout_rate": in_range(0, 1, high_open=True),
        "eval_every_steps": at_least(1),
        "eval_examples": unset_or(at_least(1)),
        "early_stopping_evals": at_least(0),
        "best_checkpoint_tolerance": lambda value: (
            None if 0 <= value <= 1 else "must be in [0, 1] (0 = the best evaluation, 1 = the last)"
        ),
        "keep_checkpoints": at_least(1),
        "warm_start": ANY,  # true or false
        "warm_start_steps": at_least(0),
        "random_seed": _seed,
        "workers": lambda value: None if value >= 0 else "must be >= 0 (0 = one process, no cluster)",
        "parameter_servers": at_least(0),
    }

    def validate(self) -> None:
        """The cluster's shape: parameter servers exactly when there are workers."""
        if self.workers > 0 and self.parameter_servers < 1:
            self.fail(
                "parameter_servers",
                f"must be >= 1 when trainer.workers > 0 (got workers = {self.workers}, "
                f"parameter_servers = {self.parameter_servers}): the workers share variables through them",
            )
        if self.workers == 0 and self.parameter_servers != 0:
            self.fail(
                "parameter_servers",
                "must be 0 when trainer.workers = 0 (one process has no parameter servers)",
            )

    def for_warm_start(self) -> TrainerParams:
        """These settings as a warm-started run trains: its own schedule of `warm_start_steps`
        (at most train_steps) in place of train_steps; unchanged when warm_start_steps is 0."""
        if self.warm_start_steps == 0:
            return self
        return dataclasses.replace(self, train_steps=min(self.train_steps, self.warm_start_steps))

    def cache_key_params(self) -> dict:
        """These settings as the trainer's cache key holds them: precision "auto" as this machine
        decided it, so a run in another precision is no cache hit (components/trainer/precision.py)."""
        settings = dataclasses.asdict(self)
        if self.precision == precision.AUTO:
            settings["precision"] = precision.resolve(precision.AUTO)[0]
        return settings
