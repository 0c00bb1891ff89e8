"""Every setting is checked by `load_config`, before anything runs.

`BAD` maps every config key to a value its section's parameter class refuses. The walk over
the config's dataclasses fails when a field is missing from the table (a new setting cannot
slip through unchecked) or when the table names a field that no longer exists; each entry must
then be refused by `load_config` with one line naming its key.
"""

import dataclasses
import math

import pytest

from pipeline.cli import main
from pipeline.config import PipelineConfig, load_config
from pipeline.core.errors import ConfigError
from pipeline.core.params import ANY, IN_VALIDATE, Params

# A wrong type: for settings where every value of their type is valid.
TYPE_ONLY = "type only"


@dataclasses.dataclass(frozen=True)
class Bad:
    """value: what the key is set to; fragment: in the error after "config key <key>: ";
    context: other settings the value needs to be wrong (e.g. backend = "mysql")."""

    value: object
    fragment: str
    context: dict = dataclasses.field(default_factory=dict)
    kind: str = "range"


MYSQL = {"metadata": {"backend": "mysql", "user": "mlmd"}}

BAD = {
    "pipeline_root": Bad("gs://bucket/root", "only local paths"),
    "beam_args": Bad(["runner=DirectRunner"], "'--name=value' option"),
    "allow_untested_runner": Bad("yes", "expected bool", kind=TYPE_ONLY),
    "lock_timeout_s": Bad(-1, "must be >= 0"),
    "data.data_root": Bad("", "must name a local path"),
    "data.span": Bad(-1, "must be >= 0 or unset"),
    "data.window_spans": Bad(0, "must be >= 1"),
    "data.span_ready_marker": Bad("span/_SUCCESS", "must be a plain file name"),
    "data.eval_hash_buckets": Bad(1, "must be >= 2"),
    "data.num_shards": Bad(0, "must be >= 1"),
    "data.ink_density_edges": Bad([0.2, 0.1], "must be increasing numbers"),
    "validation.schema_path": Bad("s3://bucket/schema.pbtxt", "only local paths"),
    "validation.infer_schema_report": Bad("yes", "expected bool", kind=TYPE_ONLY),
    "validation.reference_path": Bad("", "must name a local path"),
    "validation.label_drift_linf": Bad(0, "must be in (0, 1]"),
    "validation.pixel_drift_jsd": Bad(1.5, "must be in (0, 1]"),
    "validation.reference_check": Bad("no", "expected bool", kind=TYPE_ONLY),
    "validation.reference_label_drift_linf": Bad(0, "must be in (0, 1]"),
    "validation.reference_pixel_drift_jsd": Bad(2, "must be in (0, 1]"),
    "validation.leakage_max_exact": Bad(-1, "must be >= 0"),
    "validation.leakage_max_near_rate": Bad(1.5, "must be in [0, 1]"),
    "trainer.module_file": Bad("", "must name a local path"),
    "trainer.hparams": Bad("deep", "expected dict", kind=TYPE_ONLY),
    "trainer.train_steps": Bad(0, "must be >= 1"),
    "trainer.batch_size": Bad(0, "must be >= 1"),
    "trainer.learning_rate": Bad(0, "must be > 0"),
    "trainer.optimizer": Bad("rmsprop", "must be one of adam, sgd, got 'rmsprop'"),
    "trainer.learning_rate_decay": Bad("linear", "must be one of none, cosine"),
    "trainer.augment_max_shift": Bad(46, "must be a number in [0, 45]"),
    "trainer.augment_max_rotation": Bad(-1, "must be a number in [0, 45]"),
    "trainer.augment_max_scale": Bad(0.9, "must be a number in [0, 0.5]"),
    "trainer.augment_elastic_alpha": Bad(101, "must be a number in [0, 100]"),
    "trainer.augment_elastic_sigma": Bad(0.1, "must be a number in [0.5, 10]"),
    "trainer.precision": Bad("float16", "must be one of auto, float32, mixed_bfloat16"),
    "trainer.weight_averaging_decay": Bad(0.5, "must be 0 (off) or a number in [0.9, 0.99999]"),
    "trainer.label_smoothing": Bad(0.6, "must be a number in [0, 0.5]"),
    "trainer.test_time_augmentation": Bad("flips", "must be one of none, shifts, shifts_rotations"),
    "trainer.conv1_filters": Bad(0, "must be an integer >= 1"),
    "trainer.conv2_filters": Bad(0, "must be an integer >= 1"),
    "trainer.kernel_size": Bad(0, "must be an integer >= 1"),
    "trainer.dense_units": Bad(0, "must be an integer >= 1"),
    "trainer.dropout_rate": Bad(1.0, "must be in [0, 1)"),
    "trainer.eval_every_steps": Bad(0, "must be >= 1"),
    "trainer.eval_examples": Bad(0, "must be >= 1 or unset"),
    "trainer.early_stopping_evals": Bad(-1, "must be >= 0"),
    "trainer.best_checkpoint_tolerance": Bad(1.5, "must be in [0, 1]"),
    "trainer.keep_checkpoints": Bad(0, "must be >= 1"),
    "trainer.warm_start": Bad("yes", "expected bool", kind=TYPE_ONLY),
    "trainer.warm_start_steps": Bad(-1, "must be >= 0"),
    # Any int64 seeds TensorFlow; beyond it the graph cannot hold the seed.
    "trainer.random_seed": Bad(2**63, "must be a 64-bit integer"),
    "trainer.workers": Bad(-1, "must be >= 0"),
    "trainer.parameter_servers": Bad(1, "must be 0 when trainer.workers = 0"),
    "evaluator.accuracy_floor": Bad(1.5, "must be in [-1, 1] or unset"),
    "evaluator.promotion_policy": Bad("best_effort", "must be one of superiority, non_inferiority"),
    "evaluator.alpha": Bad(0.5, "must be in (0, 0.5)"),
    "evaluator.min_gain": Bad(-0.01, "must be in [0, 1] or unset"),
    "evaluator.non_inferiority_margin": Bad(math.nan, "must be in [0, 1]"),
    "evaluator.slice_accuracy_floor": Bad(-2, "must be in [-1, 1] or unset"),
    "evaluator.slice_max_regression": Bad(2, "must be in [0, 1] or unset"),
    "evaluator.max_examples": Bad(0, "must be >= 1 or unset"),
    "pusher.serving_dir": Bad("gs://bucket/serving", "only local paths"),
    "pusher.verify_examples": Bad(0, "must be >= 1"),
    "metadata.backend": Bad("postgres", "must be one of sqlite, mysql"),
    "metadata.host": Bad(" ", "must name the MySQL / MariaDB server", context=MYSQL),
    "metadata.port": Bad(0, "must be in 1..65535", context=MYSQL),
    "metadata.database": Bad("mlmd; DROP TABLE x", "must be 1 to 64 letters", context=MYSQL),
    "metadata.user": Bad("", "must name the database account", context=MYSQL),
    "metadata.skip_db_creation": Bad("no", "expected bool", kind=TYPE_ONLY),
    "metadata.pipeline_name": Bad("x" * 256, "must be at most 255 characters", context=MYSQL),
}


def _config_keys(section, prefix: str = "") -> list:
    """Every setting's dotted key, walking nested sections (dataclasses) recursively."""
    keys = []
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            keys += _config_keys(value, f"{key}.")
        else:
            keys.append(key)
    return keys


def _nested(key: str, value) -> dict:
    section, _, name = key.rpartition(".")
    return {section: {name: value}} if section else {name: value}


def _merged(*overrides: dict) -> dict:
    merged: dict = {}
    for override in overrides:
        for key, value in override.items():
            if isinstance(value, dict):
                merged.setdefault(key, {}).update(value)
            else:
                merged[key] = value
    return merged


def test_every_setting_of_the_config_has_a_bad_value_in_the_table():
    keys = _config_keys(PipelineConfig())
    assert len(keys) == len(set(keys)) > 50
    assert sorted(set(keys) - set(BAD)) == [], "settings without a bad value in BAD (add one)"
    assert sorted(set(BAD) - set(keys)) == [], "BAD names settings the config no longer has"


@pytest.mark.parametrize("key", sorted(BAD))
def test_load_config_refuses_each_bad_value_naming_the_key(key):
    bad = BAD[key]
    load_config(overrides=bad.context)  # control: the context alone is fine
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=_merged(bad.context, _nested(key, bad.value)))
    message = str(caught.value)
    assert message.startswith(f"config key {key}: ") and "\n" not in message, message
    assert bad.fragment in message, message


def test_type_only_settings_are_exactly_those_without_a_value_check():
    """A setting marked TYPE_ONLY has the `ANY` check (every value of its type is valid);
    every other setting has a check of its own, or is checked with the fields its rule
    depends on (`IN_VALIDATE`, then it needs a context), which its bad value trips."""
    any_checked, in_validate = set(), set()

    def walk(section: Params) -> None:
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, Params):
                walk(value)
            elif type(section).CHECKS[f.name] is ANY:
                any_checked.add(type(section).key(f.name))
            elif type(section).CHECKS[f.name] is IN_VALIDATE:
                in_validate.add(type(section).key(f.name))

    walk(PipelineConfig())
    assert any_checked == {key for key, bad in BAD.items() if bad.kind == TYPE_ONLY}
    # The metadata.* MySQL settings apply only with backend = "mysql".
    assert in_validate == {
        "metadata.host",
        "metadata.port",
        "metadata.database",
        "metadata.user",
        "metadata.pipeline_name",
    }
    assert all(BAD[key].context for key in in_validate)


@pytest.mark.parametrize(
    "setting, fragment",
    [
        ('[trainer]\nprecision = "float16"', "config key trainer.precision: must be one of auto, float32"),
        ('[trainer]\ntest_time_augmentation = "flips"', "must be one of none, shifts, shifts_rotations"),
        ("[trainer]\nlabel_smoothing = 0.6", "config key trainer.label_smoothing: must be a number in"),
        ("[trainer]\naugment_elastic_sigma = 20", "config key trainer.augment_elastic_sigma:"),
        ("[trainer]\nweight_averaging_decay = 0.5", "config key trainer.weight_averaging_decay: must be 0"),
    ],
)
def test_settings_the_trainer_once_refused_late_exit_2_before_anything_runs(
    tmp_path, capsys, setting, fragment
):
    config = tmp_path / "c.toml"
    config.write_text(setting + "\n")
    root = tmp_path / "root"
    assert main(["--config", str(config), "--pipeline-root", str(root)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], errors
    # Refused before the lock: the pipeline root was not even created.
    assert not root.exists()


def test_a_parameter_class_cannot_have_a_field_without_a_check():
    @dataclasses.dataclass(frozen=True)
    class Partial(Params):
        SECTION = "partial"
        checked: int = 1
        unchecked: int = 2
        CHECKS = {"checked": ANY}

    with pytest.raises(TypeError, match=r"Partial.unchecked: no check declared"):
        Partial()

    @dataclasses.dataclass(frozen=True)
    class Stale(Params):
        SECTION = "stale"
        kept: int = 1
        CHECKS = {"kept": ANY, "removed": ANY}

    with pytest.raises(TypeError, match=r"Stale.CHECKS names no field: removed"):
        Stale()


def test_sections_rebuilt_from_their_json_form_are_checked_again():
    config = load_config()
    assert PipelineConfig.from_dict(config.to_dict()) == config
    data = config.to_dict()
    data["evaluator"]["alpha"] = 0.7
    with pytest.raises(ConfigError, match=r"^config key evaluator.alpha: must be in \(0, 0.5\), got 0.7$"):
        PipelineConfig.from_dict(data)
