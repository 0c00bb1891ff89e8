"""Only engines that give the pipeline's results run it (pipeline/core/beam_engines.py).

Beam's DaskRunner is refused in every spelling, whatever the config says; the engines whose
results tests/test_beam_engines.py compares with the in-process engine's run silently; Flink,
Spark and Dataflow run with one warning; any other runner only with `allow_untested_runner`.
Each refusal happens while the config is checked: exit 2, one line, nothing written.
"""

import json
import logging

import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.runners.runner import _RUNNER_MAP

from pipeline.cli import main
from pipeline.config import load_config
from pipeline.core import beam_engines
from pipeline.core.errors import ConfigError
from pipeline.factory import create_pipeline

DASK_SPELLINGS = [
    "DaskRunner",
    "dask",
    "daskrunner",
    "DASK",
    "apache_beam.runners.dask.dask_runner.DaskRunner",
]


class InProcessRunnerOfOurOwn(FnApiRunner):
    """A runner class this project has never compared: Beam builds it from its dotted name."""


OUR_OWN_RUNNER = f"{__name__}.{InProcessRunnerOfOurOwn.__name__}"


def _errors(capsys) -> list:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def test_the_runner_table_is_the_installed_beams():
    """Beam's name table is copied so that checking a config does not import Beam."""
    assert beam_engines.BEAM_RUNNER_MAP == _RUNNER_MAP


@pytest.mark.parametrize("spelling", DASK_SPELLINGS)
def test_dask_is_refused_before_anything_is_written(tmp_path, tiny_mnist, capsys, spelling):
    root = tmp_path / "root"
    code = main(["--data-root", tiny_mnist, "--pipeline-root", str(root), f"--beam-arg=--runner={spelling}"])
    assert code == 2
    errors = _errors(capsys)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"error: config key beam_args: --runner={spelling} is refused: ")
    assert "DaskRunner gives wrong results" in errors[0] and "2,973 of 3,000" in errors[0]
    assert not root.exists()


def test_dask_is_refused_even_with_the_opt_in_and_when_named_last(tmp_path, tiny_mnist, capsys):
    """Beam takes the last --runner; the opt-in is for untested engines, not wrong ones."""
    config = tmp_path / "c.toml"
    config.write_text('allow_untested_runner = true\nbeam_args = ["--runner=FnApiRunner"]\n')
    root = tmp_path / "root"
    argv = ["--config", str(config), "--data-root", tiny_mnist, "--pipeline-root", str(root)]
    assert main(argv + ["--beam-arg=--runner=DaskRunner"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "DaskRunner gives wrong results" in errors[0], errors
    assert not root.exists()


@pytest.mark.parametrize("runner", ["DirectRunner", "PrismRunner", "BundleBasedDirectRunner", OUR_OWN_RUNNER])
def test_an_untested_runner_is_refused_unless_the_config_opts_in(runner):
    with pytest.raises(ConfigError) as refused:
        load_config(overrides={"beam_args": [f"--runner={runner}"]})
    message = str(refused.value)
    assert message.startswith(f"config key beam_args: --runner={runner} is refused: ") and "\n" not in message
    assert "set allow_untested_runner = true" in message

    config = load_config(overrides={"beam_args": [f"--runner={runner}"], "allow_untested_runner": True})
    warning = beam_engines.runner_warning(config.beam_args, config.allow_untested_runner)
    assert warning is not None and "allow_untested_runner = true" in warning
    assert beam_engines.runner_refusal(config.beam_args, False) is not None  # the opt-in is what lets it


def test_a_name_beam_does_not_know_is_refused_with_or_without_the_opt_in():
    for opt_in in (False, True):
        with pytest.raises(ConfigError, match="Beam knows no runner 'FastRunner' .known: .*FlinkRunner"):
            load_config(overrides={"beam_args": ["--runner=FastRunner"], "allow_untested_runner": opt_in})


def test_an_opted_in_runner_of_our_own_runs_the_step_after_one_warning(tmp_path, tiny_mnist, capsys):
    root = tmp_path / "root"
    argv = [
        "--data-root",
        tiny_mnist,
        "--pipeline-root",
        str(root),
        "--to",
        "example_gen",
        f"--beam-arg=--runner={OUR_OWN_RUNNER}",
    ]
    assert main(argv) == 2
    assert "allow_untested_runner" in _errors(capsys)[0]
    assert not root.exists()

    config = tmp_path / "c.toml"
    config.write_text("allow_untested_runner = true\n")
    summary = tmp_path / "summary.json"
    assert main(["--config", str(config), "--summary-json", str(summary)] + argv) == 0
    # The CLI's log handler writes to stderr (the "pipeline" loggers do not propagate to pytest's).
    warnings = [line for line in capsys.readouterr().err.splitlines() if " WARNING " in line]
    assert len(warnings) == 1, warnings
    assert (
        "pipeline.factory: InProcessRunnerOfOurOwn runs the data steps (allow_untested_runner" in warnings[0]
    )
    step = json.loads(summary.read_text())["steps"]["example_gen"]
    assert step["state"] == "ran"
    assert step["properties"]["beam_runner"] == "InProcessRunnerOfOurOwn"


@pytest.mark.parametrize(
    "beam_args, runner",
    [
        (
            ["--runner=FlinkRunner", "--flink_master=[local]", "--flink_job_server_jar=/opt/flink-js.jar"],
            "FlinkRunner",
        ),
        (["--runner=spark", "--spark_job_server_jar=/opt/spark-js.jar"], "SparkRunner"),
        (["--runner=DataflowRunner", "--project=p", "--region=r"], "DataflowRunner"),
    ],
)
def test_an_engine_that_cannot_be_tried_here_runs_with_one_warning(tmp_path, caplog, beam_args, runner):
    with caplog.at_level(logging.WARNING):
        config = load_config(overrides={"pipeline_root": str(tmp_path / "root"), "beam_args": beam_args})
        assert caplog.records == []  # checking the config (again and again) does not warn
        pipeline = create_pipeline(config)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert message.startswith(f"{runner} runs the data steps, but its results have not been compared")
    assert pipeline.beam_args == tuple(beam_args)
    assert not (tmp_path / "root").exists()


@pytest.mark.parametrize(
    "beam_args",
    [
        [],
        ["--direct_num_workers=2"],
        ["--runner=FnApiRunner"],
        ["--runner=PortableRunner", "--job_endpoint=embed"],
    ],
)
def test_the_compared_engines_run_without_a_warning(tmp_path, caplog, beam_args):
    with caplog.at_level(logging.WARNING):
        create_pipeline(
            load_config(overrides={"pipeline_root": str(tmp_path / "root"), "beam_args": beam_args})
        )
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert beam_engines.classify_runner(beam_args) is beam_engines.Engine.COMPARED
