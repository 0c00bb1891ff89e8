"""Which Beam runner the data steps get: the DirectRunner's in-process engine unless one is named."""

import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions
from step_context import step_context

from pipeline.core.beam_engines import with_default_runner


def _options(beam_args):
    ctx = step_context("example_gen", {}, {}, beam_args=beam_args, pipeline_root="/tmp/unused")
    return ctx.beam_pipeline_options()


def test_no_runner_named_runs_in_process_and_keeps_the_other_options():
    options = _options(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert options.view_as(StandardOptions).runner == "FnApiRunner"
    assert options.view_as(DirectOptions).direct_running_mode == "multi_processing"
    assert options.view_as(DirectOptions).direct_num_workers == 2


@pytest.mark.parametrize(
    "beam_args, runner",
    [
        (["--runner=PortableRunner", "--job_endpoint=localhost:8099"], "PortableRunner"),
        (["--job_endpoint=localhost:8099", "--runner", "FlinkRunner"], "FlinkRunner"),
        (["--runner=DirectRunner"], "DirectRunner"),
    ],
)
def test_a_runner_the_user_names_is_kept(beam_args, runner):
    assert with_default_runner(beam_args) == beam_args
    assert _options(beam_args).view_as(StandardOptions).runner == runner
