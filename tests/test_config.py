"""The typed config: defaults, files, overrides, and every way it refuses bad input."""

import json

import pytest

from pipeline.cli import main
from pipeline.config import PipelineConfig, config_to_dict, load_config
from pipeline.core.errors import ConfigError
from pipeline.factory import STEP_NAMES, create_pipeline


def test_defaults_build_the_seven_step_pipeline():
    pipeline = create_pipeline(load_config())
    assert tuple(s.name for s in pipeline.steps) == STEP_NAMES
    assert pipeline.summary_fields["serving_dir"].endswith("serving")


def test_toml_file_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("lock_timeout_s = 5\n[trainer]\ntrain_steps = 10\nlearning_rate = 0.5\n")
    config = load_config(str(path), {"trainer": {"train_steps": 20}})
    assert config.trainer.train_steps == 20
    assert config.trainer.learning_rate == 0.5
    assert config.lock_timeout_s == 5.0
    assert config.trainer.batch_size == PipelineConfig().trainer.batch_size


def test_json_file_can_unset_a_threshold(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"evaluator": {"min_gain": None}}))
    assert load_config(str(path)).evaluator.min_gain is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("[trainer]\ntrain_stpes = 3\n", "unknown config key 'trainer.train_stpes'"),
        ("[nope]\nx = 1\n", "unknown config key 'nope'"),
        ("[trainer]\ntrain_steps = 'many'\n", "trainer.train_steps: expected int"),
        ("[trainer]\nwarm_start = 1\n", "trainer.warm_start: expected bool"),
        ("[trainer]\nlearning_rate = -1.0\n", "trainer.learning_rate: must be > 0"),
        ("[evaluator]\naccuracy_floor = 1.5\n", "evaluator.accuracy_floor"),
        (
            "[trainer]\nbest_checkpoint_tolerance = -0.001\n",
            "trainer.best_checkpoint_tolerance: must be in [0, 1]",
        ),
        (
            "[trainer]\nbest_checkpoint_tolerance = 1.5\n",
            "trainer.best_checkpoint_tolerance: must be in [0, 1]",
        ),
        ("trainer = 3\n", "config section trainer"),
        ("beam_args = ['runner=Direct']\n", "beam_args"),
        ("[trainer\n", "not valid TOML"),
    ],
)
def test_bad_config_is_refused_naming_the_key(tmp_path, content, message):
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(str(path))


def test_resolved_config_round_trips_as_json():
    data = config_to_dict(load_config())
    assert json.loads(json.dumps(data)) == data
    assert data["trainer"]["train_steps"] == PipelineConfig().trainer.train_steps


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--config", "/nonexistent/c.toml"], "cannot read config file /nonexistent/c.toml"),
        (["--pipeline-root", "gs://bucket/root"], "--pipeline-root: only local paths"),
        (["--from", "evaluator", "--to", "trainer"], "comes after"),
        (["--data-root", "/nonexistent/mnist", "--to", "example_gen"], "/nonexistent/mnist"),
    ],
)
def test_cli_usage_errors_exit_2_with_one_line(tmp_path, capsys, argv, fragment):
    if "--pipeline-root" not in argv:
        argv = argv + ["--pipeline-root", str(tmp_path / "root")]
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0]


def test_cli_rejects_unknown_step_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--from", "training"])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    "evaluator, key",
    [
        ('promotion_policy = "best_effort"', "evaluator.promotion_policy"),
        ("alpha = 0.0", "evaluator.alpha"),
        ("alpha = 0.5", "evaluator.alpha"),
        ("non_inferiority_margin = -0.01", "evaluator.non_inferiority_margin"),
        ("min_gain = -0.01", "evaluator.min_gain"),
        ("slice_max_regression = -0.01", "evaluator.slice_max_regression"),
    ],
)
def test_bad_promotion_policy_settings_exit_2_naming_the_key(tmp_path, capsys, evaluator, key):
    path = tmp_path / "c.toml"
    path.write_text(f"[evaluator]\n{evaluator}\n")
    assert main(["--config", str(path), "--pipeline-root", str(tmp_path / "root")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"config key {key}:" in errors[0]


def test_promotion_policy_defaults():
    evaluator = PipelineConfig().evaluator
    assert (
        evaluator.promotion_policy,
        evaluator.alpha,
        evaluator.non_inferiority_margin,
        evaluator.min_gain,
    ) == ("superiority", 0.05, 0.005, 0.0)


def test_a_warm_start_trains_its_own_schedule_never_longer_than_a_cold_one():
    cold = load_config().trainer
    assert (cold.train_steps, cold.warm_start_steps) == (11500, 2000)
    assert cold.for_warm_start().train_steps == 2000
    assert load_config(overrides={"trainer": {"train_steps": 30}}).trainer.for_warm_start().train_steps == 30
    whole = load_config(overrides={"trainer": {"warm_start_steps": 0}}).trainer
    assert whole.for_warm_start() == whole
