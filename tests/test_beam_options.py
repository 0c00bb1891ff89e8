"""Which Beam runner the data steps get: the DirectRunner's in-process engine unless one is named."""

import logging

import pytest
from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

from pipeline.core.beam_engines import with_default_runner
from pipeline.core.step import StepContext


def _options(beam_args):
    ctx = StepContext(
        step_name="example_gen",
        run_id="r",
        pipeline_root="/tmp/unused",
        inputs={},
        outputs={},
        params=None,
        beam_args=tuple(beam_args),
        log=logging.getLogger("t"),
    )
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
