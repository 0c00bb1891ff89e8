"""The pipeline's one typed configuration.

Defaults live in code (the dataclasses below). A config file (TOML or JSON) overrides any of
them section by section; command-line options override the file. Unknown sections or keys and
values of the wrong type are rejected with a `ConfigError` naming the key. The resolved config
is saved as JSON next to every run, so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.formats.blessing import PROMOTION_POLICIES
from pipeline.formats.examples import DEFAULT_INK_DENSITY_EDGES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = PROJECT_ROOT / "data" / "mnist"
DEFAULT_SCHEMA_PATH = PROJECT_ROOT / "schema" / "schema.pbtxt"
# Label and pixel histograms of the 60,000 MNIST training digits (scripts/make_reference.py).
DEFAULT_REFERENCE_PATH = PROJECT_ROOT / "data" / "reference" / "mnist_train_statistics.json"
# The network the trainer builds unless the config names another module (README "Bring your own model").
DEFAULT_MODULE_FILE = PROJECT_ROOT / "models" / "classic_cnn.py"


@dataclass(frozen=True)
class DataConfig:
    """Where the raw MNIST comes from and how it is split into TFRecords."""

    data_root: str = str(DEFAULT_DATA_ROOT)
    # None: the newest span-N/ folder (or the flat folder when there are no spans).
    span: int | None = None
    # How many of the newest spans to train on together (1 = the newest span only).
    window_spans: int = 1
    # Eval split = examples whose hash falls into 1 of `eval_hash_buckets` buckets.
    eval_hash_buckets: int = 12
    num_shards: int = 4
    # Bucket edges of the derived `ink_density` feature (fraction of pixels above 127).
    ink_density_edges: tuple = DEFAULT_INK_DENSITY_EDGES


@dataclass(frozen=True)
class ValidationConfig:
    """The data gate: the curated schema, drift limits against the previous span, and against
    the reference statistics for a first span."""

    schema_path: str = str(DEFAULT_SCHEMA_PATH)
    # L-infinity distance between label distributions of this span and the previous one.
    label_drift_linf: float = 0.05
    # Jensen-Shannon divergence between the pixel-value histograms of the two spans.
    pixel_drift_jsd: float = 0.01
    # Also infer a schema from the statistics and write its diff against the curated one.
    infer_schema_report: bool = True
    # A pipeline root's first span has no previous span: compare it with the reference
    # statistics instead (false: skip drift on the first span, for data that is not MNIST-like).
    reference_check: bool = True
    # The reference: label and pixel histograms as JSON (pipeline.formats.reference), read by
    # content digest, so editing it reruns the gate. Default: the shipped MNIST training set.
    reference_path: str = str(DEFAULT_REFERENCE_PATH)
    # Limits against the reference. One sample against a population is less noisy than two
    # spans against each other, but a first span can be small: measured in README "Reliability".
    reference_label_drift_linf: float = 0.07
    reference_pixel_drift_jsd: float = 0.02


@dataclass(frozen=True)
class TrainerConfig:
    """Hyperparameters passed to `model_fn` as `params`, and the training budget."""

    # The Python file defining the network: `model_fn(features, labels, mode, params)` or
    # `keras_model(params)` (components/trainer/module_contract.py has the contract). It is code:
    # the trainer imports and runs it. Read by content digest, so editing it retrains.
    module_file: str = str(DEFAULT_MODULE_FILE)
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
    # Start from the weights of the latest blessed model, when there is one.
    warm_start: bool = False
    random_seed: int = 42
    # Training on a local TensorFlow cluster (README "Training on a TensorFlow cluster"): a
    # chief, this many workers and `parameter_servers` parameter servers, each a process on a
    # loopback port. 0 = one process (no cluster).
    workers: int = 0
    # Parameter servers holding the variables; at least 1 when workers > 0.
    parameter_servers: int = 0


@dataclass(frozen=True)
class EvaluatorConfig:
    """The promotion gate. Every threshold that is set must pass; none set means no blessing."""

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


@dataclass(frozen=True)
class PusherConfig:
    """Publishing into the serving folder."""

    serving_dir: str = ""  # default: <pipeline_root>/serving
    # Test examples the staged copy must answer before it is published.
    verify_examples: int = 8


METADATA_BACKENDS = ("sqlite", "mysql")
# The only place a MySQL / MariaDB store's password is read from: never a config file.
MYSQL_PASSWORD_ENV = "MLMD_MYSQL_PASSWORD"


@dataclass(frozen=True)
class MetadataConfig:
    """Where ML Metadata lives (README "Shared metadata store (MySQL/MariaDB)")."""

    # "sqlite": <pipeline_root>/metadata.sqlite, embedded; "mysql": a MySQL / MariaDB database
    # that several pipeline roots and machines may share (the keys below apply to it only).
    backend: str = "sqlite"
    host: str = "127.0.0.1"
    port: int = 3306
    database: str = "mlmd"
    # The account must use mysql_native_password. Its password: the environment variable
    # MLMD_MYSQL_PASSWORD only.
    user: str = ""
    # true: the database must exist already; false: ML Metadata creates it on first use.
    skip_db_creation: bool = False
    # This pipeline's name in the database ("" = the pipeline root's absolute path). Runs with
    # the same name share lineage, caches, baselines and the run lock, on any machine.
    pipeline_name: str = ""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a run needs. Build with `load_config`, never from loose dicts."""

    pipeline_root: str = str(PROJECT_ROOT / "pipeline_output")
    # Extra Apache Beam pipeline options, passed through unchanged (e.g. "--runner=...").
    beam_args: tuple = ()
    # Seconds a run waits for another run on the same pipeline root before exiting (status 4).
    lock_timeout_s: float = 600.0
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    pusher: PusherConfig = field(default_factory=PusherConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)

    @property
    def serving_dir(self) -> str:
        """The serving folder: `pusher.serving_dir`, or `<pipeline_root>/serving`."""
        return self.pusher.serving_dir or os.path.join(self.pipeline_root, "serving")


def _check_value(where: str, value: Any, annotation: Any) -> Any:
    """Returns `value` coerced to `annotation`, or raises ConfigError naming `where`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        non_none = [a for a in options if a is not type(None)]
        return _check_value(where, value, non_none[0])
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif annotation is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
    elif annotation is dict:
        if isinstance(value, Mapping):
            return _plain_table(where, value)
    else:
        raise ConfigError(f"config key {where}: unsupported type {annotation!r}")
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(f"config key {where}: expected {type_name}, got {value!r}")


def _plain_table(where: str, table: Mapping[str, Any]) -> dict:
    """A copy of `table` holding only JSON values (it becomes part of the cache key and of the
    run's config.json); ConfigError naming the first key that holds anything else."""

    def plain(path: str, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k): plain(f"{path}.{k}", v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(f"{path}[{i}]", v) for i, v in enumerate(value)]
        if value is None or isinstance(value, (str, int, float, bool)):
            return value
        raise ConfigError(
            f"config key {path}: expected a string, number, boolean, list or table, got {value!r}"
        )

    return plain(where, table)


def _merge(where: str, current: Any, overrides: Mapping[str, Any]) -> Any:
    """Returns a copy of dataclass `current` with `overrides` applied, checking every key."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"config section {where or '<top>'}: expected a table, got {overrides!r}")
    hints = typing.get_type_hints(type(current))
    known = {f.name for f in dataclasses.fields(current)}
    changes = {}
    for key, value in overrides.items():
        path = f"{where}.{key}" if where else key
        if path == "metadata.password":  # say where it goes, and never echo its value
            raise ConfigError(
                f"config key metadata.password: a password is never read from a config file; "
                f"set the environment variable {MYSQL_PASSWORD_ENV}"
            )
        if key not in known:
            raise ConfigError(f"unknown config key {path!r} (known: {', '.join(sorted(known))})")
        if dataclasses.is_dataclass(getattr(current, key)):
            changes[key] = _merge(path, getattr(current, key), value)
        else:
            changes[key] = _check_value(path, value, hints[key])
    return dataclasses.replace(current, **changes)


def read_config_file(path: str) -> dict:
    """Reads a TOML (.toml) or JSON (.json) config file into a dict; ConfigError if unreadable."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from e
    try:
        if path.endswith(".json"):
            return json.loads(raw)
        return tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"config file {path} is not valid {'JSON' if path.endswith('.json') else 'TOML'}: {e}"
        ) from e


def load_config(config_file: str | None = None, overrides: Mapping[str, Any] | None = None) -> PipelineConfig:
    """Builds the config: code defaults, then `config_file`, then `overrides` (nested dicts).

    Raises ConfigError on unknown keys, wrong types or values out of range.
    """
    config = PipelineConfig()
    if config_file:
        config = _merge("", config, read_config_file(config_file))
    if overrides:
        config = _merge("", config, overrides)
    validate_config(config)
    return config


def validate_config(config: PipelineConfig) -> None:
    """Checks ranges and relations between settings; raises ConfigError naming the key."""

    def require(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"config key {key}: {why}")

    require(config.data.window_spans >= 1, "data.window_spans", "must be >= 1")
    require(config.data.eval_hash_buckets >= 2, "data.eval_hash_buckets", "must be >= 2")
    require(config.data.num_shards >= 1, "data.num_shards", "must be >= 1")
    edges = config.data.ink_density_edges
    require(
        all(isinstance(e, (int, float)) for e in edges) and list(edges) == sorted(edges),
        "data.ink_density_edges",
        "must be increasing numbers",
    )
    # Both distances lie in [0, 1]: a threshold above 1 would switch the drift check off.
    require(0 < config.validation.label_drift_linf <= 1, "validation.label_drift_linf", "must be in (0, 1]")
    require(0 < config.validation.pixel_drift_jsd <= 1, "validation.pixel_drift_jsd", "must be in (0, 1]")
    require(
        0 < config.validation.reference_label_drift_linf <= 1,
        "validation.reference_label_drift_linf",
        "must be in (0, 1]",
    )
    require(
        0 < config.validation.reference_pixel_drift_jsd <= 1,
        "validation.reference_pixel_drift_jsd",
        "must be in (0, 1]",
    )
    t = config.trainer
    require(t.train_steps >= 1, "trainer.train_steps", "must be >= 1")
    require(t.batch_size >= 1, "trainer.batch_size", "must be >= 1")
    require(t.learning_rate > 0, "trainer.learning_rate", "must be > 0")
    require(t.optimizer in ("adam", "sgd"), "trainer.optimizer", "must be 'adam' or 'sgd'")
    require(0 <= t.dropout_rate < 1, "trainer.dropout_rate", "must be in [0, 1)")
    require(t.eval_every_steps >= 1, "trainer.eval_every_steps", "must be >= 1")
    require(t.early_stopping_evals >= 0, "trainer.early_stopping_evals", "must be >= 0")
    require(
        0 <= t.best_checkpoint_tolerance <= 1,
        "trainer.best_checkpoint_tolerance",
        "must be in [0, 1] (0 = the best evaluation, 1 = the last)",
    )
    for key in ("conv1_filters", "conv2_filters", "kernel_size", "dense_units", "keep_checkpoints"):
        require(getattr(t, key) >= 1, f"trainer.{key}", "must be >= 1")
    require(t.eval_examples is None or t.eval_examples >= 1, "trainer.eval_examples", "must be >= 1 or unset")
    require(bool(t.module_file), "trainer.module_file", "must name a Python file")
    require(t.workers >= 0, "trainer.workers", "must be >= 0 (0 = one process, no cluster)")
    require(t.parameter_servers >= 0, "trainer.parameter_servers", "must be >= 0")
    require(
        t.workers == 0 or t.parameter_servers >= 1,
        "trainer.parameter_servers",
        f"must be >= 1 when trainer.workers > 0 (got workers = {t.workers}, "
        f"parameter_servers = {t.parameter_servers}): the workers share variables through them",
    )
    require(
        t.workers > 0 or t.parameter_servers == 0,
        "trainer.parameter_servers",
        "must be 0 when trainer.workers = 0 (one process has no parameter servers)",
    )
    for key in ("accuracy_floor", "slice_accuracy_floor"):
        value = getattr(config.evaluator, key)
        require(value is None or -1.0 <= value <= 1.0, f"evaluator.{key}", "must be in [-1, 1] or unset")
    for key in ("min_gain", "slice_max_regression"):
        value = getattr(config.evaluator, key)
        require(
            value is None or 0.0 <= value <= 1.0,
            f"evaluator.{key}",
            "must be in [0, 1] or unset (to accept a worse model, use promotion_policy = "
            '"non_inferiority" with non_inferiority_margin)',
        )
    require(
        config.evaluator.promotion_policy in PROMOTION_POLICIES,
        "evaluator.promotion_policy",
        f"must be one of {', '.join(PROMOTION_POLICIES)}, got {config.evaluator.promotion_policy!r}",
    )
    require(0.0 < config.evaluator.alpha < 0.5, "evaluator.alpha", "must be in (0, 0.5)")
    require(
        0.0 <= config.evaluator.non_inferiority_margin <= 1.0,
        "evaluator.non_inferiority_margin",
        "must be in [0, 1]",
    )
    require(
        config.evaluator.max_examples is None or config.evaluator.max_examples >= 1,
        "evaluator.max_examples",
        "must be >= 1 or unset",
    )
    require(config.pusher.verify_examples >= 1, "pusher.verify_examples", "must be >= 1")
    require(config.lock_timeout_s >= 0, "lock_timeout_s", "must be >= 0")
    _validate_metadata(config.metadata, require)
    require(bool(config.pipeline_root), "pipeline_root", "must not be empty")
    # Only local paths: a `gs://...` or `file://...` value would otherwise be joined into local
    # paths (or handed to TF's file systems) and written somewhere nobody meant.
    for key, value in (
        ("pipeline_root", config.pipeline_root),
        ("data.data_root", config.data.data_root),
        ("pusher.serving_dir", config.pusher.serving_dir),
        ("validation.schema_path", config.validation.schema_path),
        ("validation.reference_path", config.validation.reference_path),
        ("trainer.module_file", config.trainer.module_file),
    ):
        require("://" not in value, key, f"only local paths are supported, got {value!r}")
    for arg in config.beam_args:
        require(
            isinstance(arg, str) and arg.startswith("--"),
            "beam_args",
            f"each entry must be a '--name=value' option, got {arg!r}",
        )


def _validate_metadata(m: MetadataConfig, require) -> None:
    require(
        m.backend in METADATA_BACKENDS,
        "metadata.backend",
        f"must be one of {', '.join(METADATA_BACKENDS)}, got {m.backend!r}",
    )
    if m.backend != "mysql":
        return
    require(bool(m.host.strip()), "metadata.host", "must name the MySQL / MariaDB server")
    require(1 <= m.port <= 65535, "metadata.port", f"must be in 1..65535, got {m.port}")
    # MySQL's limits for an unquoted database name; ML Metadata puts it into SQL as it is.
    require(
        re.fullmatch(r"[A-Za-z0-9_$]{1,64}", m.database) is not None,
        "metadata.database",
        f"must be 1 to 64 letters, digits, '_' or '$', got {m.database!r}",
    )
    require(bool(m.user), "metadata.user", 'must name the database account (backend = "mysql")')
    require(len(m.pipeline_name) <= 255, "metadata.pipeline_name", "must be at most 255 characters")


def config_to_dict(config: PipelineConfig) -> dict:
    """The config as plain JSON-ready dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
