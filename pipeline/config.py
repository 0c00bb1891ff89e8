"""The pipeline's one typed configuration.

Defaults live in code: each step's section is that step's own parameter class
(components/<step>/params.py), composed here with this project's default paths; the top level
and `[metadata]` are the application's. A config file (TOML or JSON) overrides any of them
section by section; command-line options override the file. Every setting is checked when its
section is built (`pipeline.core.params`), so unknown keys, wrong types and values out of range
are rejected with a one-line `ConfigError` naming the key before anything runs. The resolved
config is saved as JSON next to every run, so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from components.evaluator.params import EvaluatorParams
from components.example_gen.params import DataParams
from components.example_validator.params import ExampleValidatorParams
from components.pusher.params import PusherParams
from components.schema_gen.params import SchemaGenParams
from components.trainer.params import TrainerParams
from pipeline.core import beam_engines
from pipeline.core.errors import ConfigError
from pipeline.core.params import ANY, IN_VALIDATE, Params, at_least, local_path, one_of

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = PROJECT_ROOT / "data" / "mnist"
DEFAULT_SCHEMA_PATH = PROJECT_ROOT / "schema" / "schema.pbtxt"
# Label and pixel histograms of the 60,000 MNIST training digits (scripts/make_reference.py).
DEFAULT_REFERENCE_PATH = PROJECT_ROOT / "data" / "reference" / "mnist_train_statistics.json"
# The network the trainer builds unless the config names another module (docs/models.md).
DEFAULT_MODULE_FILE = PROJECT_ROOT / "models" / "classic_cnn.py"


# The `[data]`, `[validation]`, `[trainer]`, `[evaluator]` and `[pusher]` sections are the steps'
# own parameter classes (each checks its fields, components/<step>/params.py); the config
# supplies the defaults that name this project's files.


@dataclass(frozen=True)
class DataConfig(DataParams):
    """`[data]`: ExampleGen's parameters, reading the shipped data/mnist by default."""

    data_root: str = str(DEFAULT_DATA_ROOT)


@dataclass(frozen=True)
class ValidationConfig(ExampleValidatorParams, SchemaGenParams):
    """`[validation]`, the data gate: SchemaGen's parameters (the curated schema) and
    ExampleValidator's (drift limits against the previous span, and against the reference
    statistics for a first span), with the shipped schema and reference by default."""

    schema_path: str = str(DEFAULT_SCHEMA_PATH)
    reference_path: str = str(DEFAULT_REFERENCE_PATH)

    CHECKS = {**SchemaGenParams.CHECKS, **ExampleValidatorParams.CHECKS}

    def validate(self) -> None:
        """Both steps' relations between their fields."""
        SchemaGenParams.validate(self)
        ExampleValidatorParams.validate(self)

    def schema_gen(self) -> SchemaGenParams:
        """SchemaGen's part of the section."""
        return _part(SchemaGenParams, self)

    def example_validator(self) -> ExampleValidatorParams:
        """ExampleValidator's part of the section."""
        return _part(ExampleValidatorParams, self)


@dataclass(frozen=True)
class TrainerConfig(TrainerParams):
    """`[trainer]`: the Trainer's parameters, training the shipped classic CNN by default."""

    module_file: str = str(DEFAULT_MODULE_FILE)


EvaluatorConfig = EvaluatorParams
PusherConfig = PusherParams

_PartT = TypeVar("_PartT", bound=Params)


def _part(part: type[_PartT], section: Params) -> _PartT:
    """The `part` class built from the fields of `section` it has."""
    return part(**{f.name: getattr(section, f.name) for f in dataclasses.fields(part)})


METADATA_BACKENDS = ("sqlite", "mysql")
# The only place a MySQL / MariaDB store's password is read from: never a config file.
MYSQL_PASSWORD_ENV = "MLMD_MYSQL_PASSWORD"


@dataclass(frozen=True)
class MetadataConfig(Params):
    """`[metadata]`: where ML Metadata lives (docs/shared-metadata-store.md)."""

    SECTION = "metadata"

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

    CHECKS = {
        "backend": one_of(METADATA_BACKENDS),
        # The MySQL settings apply, and are checked, only with backend = "mysql".
        "host": IN_VALIDATE,
        "port": IN_VALIDATE,
        "database": IN_VALIDATE,
        "user": IN_VALIDATE,
        "skip_db_creation": ANY,  # true or false
        "pipeline_name": IN_VALIDATE,
    }

    def validate(self) -> None:
        """The MySQL settings, when the backend is "mysql" (ignored with "sqlite")."""
        if self.backend != "mysql":
            return
        if not self.host.strip():
            self.fail("host", "must name the MySQL / MariaDB server")
        if not 1 <= self.port <= 65535:
            self.fail("port", f"must be in 1..65535, got {self.port}")
        # MySQL's limits for an unquoted database name; ML Metadata puts it into SQL as it is.
        if not re.fullmatch(r"[A-Za-z0-9_$]{1,64}", self.database):
            self.fail("database", f"must be 1 to 64 letters, digits, '_' or '$', got {self.database!r}")
        if not self.user:
            self.fail("user", 'must name the database account (backend = "mysql")')
        if len(self.pipeline_name) > 255:
            self.fail("pipeline_name", "must be at most 255 characters")


def _beam_options(args: tuple) -> str | None:
    for arg in args:
        if not (isinstance(arg, str) and arg.startswith("--")):
            return f"each entry must be a '--name=value' option, got {arg!r}"
    return None


@dataclass(frozen=True)
class PipelineConfig(Params):
    """Everything a run needs. Build with `load_config`, never from loose dicts."""

    pipeline_root: str = str(PROJECT_ROOT / "pipeline_output")
    # Extra Apache Beam pipeline options, passed through unchanged (e.g. "--runner=...").
    beam_args: tuple = ()
    # true: a Beam runner whose results this project never compared with the in-process engine's
    # (DirectRunner, PrismRunner, a class of your own) may run the data steps. Never DaskRunner.
    allow_untested_runner: bool = False
    # Seconds a run waits for another run on the same pipeline root before exiting (status 4).
    lock_timeout_s: float = 600.0
    data: DataConfig = field(default_factory=DataConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    evaluator: EvaluatorConfig = field(default_factory=EvaluatorConfig)
    pusher: PusherConfig = field(default_factory=PusherConfig)
    metadata: MetadataConfig = field(default_factory=MetadataConfig)

    CHECKS = {
        "pipeline_root": local_path(required=True),
        "beam_args": _beam_options,
        "allow_untested_runner": ANY,  # true or false; the runner's rule is in validate()
        "lock_timeout_s": at_least(0),
        # Each section checks its own fields when it is built.
        **{name: ANY for name in ("data", "validation", "trainer", "evaluator", "pusher", "metadata")},
    }

    def validate(self) -> None:
        """The Beam runner `beam_args` selects must be one whose results can be trusted
        (`pipeline.core.beam_engines.runner_refusal`): DaskRunner never runs, an untested
        runner only with `allow_untested_runner`."""
        problem = beam_engines.runner_refusal(self.beam_args, self.allow_untested_runner)
        if problem:
            self.fail("beam_args", problem)

    @property
    def serving_dir(self) -> str:
        """The serving folder: `pusher.serving_dir`, or `<pipeline_root>/serving`."""
        return self.pusher.serving_dir or os.path.join(self.pipeline_root, "serving")


def _merge(where: str, current: Any, overrides: Mapping[str, Any]) -> Any:
    """Returns a copy of dataclass `current` with `overrides` applied; building it checks every
    field (`pipeline.core.params`)."""
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"config section {where or '<top>'}: expected a table, got {overrides!r}")
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
            changes[key] = value
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

    Every setting is checked here, by the parameter class of its section, so a value any step
    would refuse is refused before anything runs. Raises ConfigError (one line naming the key)
    on unknown keys, wrong types or values out of range.
    """
    config = PipelineConfig()
    if config_file:
        config = _merge("", config, read_config_file(config_file))
    if overrides:
        config = _merge("", config, overrides)
    return config


def validate_config(config: PipelineConfig) -> None:
    """Checks every setting of `config` again (e.g. after `dataclasses.replace` on a copy that
    bypassed nothing, or one built field by field); raises ConfigError naming the key."""
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        if isinstance(value, Params):
            dataclasses.replace(value)
    dataclasses.replace(config)


def config_to_dict(config: PipelineConfig) -> dict:
    """The config as plain JSON-ready dicts (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
