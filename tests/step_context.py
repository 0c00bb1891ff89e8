"""The one StepContext builder for tests that call a step's executor directly, as the runner would."""

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.core.step import StepContext

# No --runner: executors get the pipeline's own default (pipeline.core.beam_engines.with_default_runner),
# the engine users get too; in_memory is Beam's own default mode, named so a test's options are explicit.
TEST_BEAM_ARGS = ("--direct_running_mode=in_memory",)


def step_context(
    name: str,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, str],
    params: Any = None,
    beam_args: Sequence[str] = TEST_BEAM_ARGS,
    pipeline_root: str | None = None,
) -> StepContext:
    """A StepContext for step `name` (run id "test", logger "test.<name>").

    inputs: input key -> Artifact; a key whose value is None is left out, as the runner leaves out
        an optional input that resolved to nothing (a first run's baseline model).
    outputs: output key -> staging directory; each is created here and must not exist yet (a
        staging directory starts empty). At least one is needed unless `pipeline_root` is given.
    pipeline_root: the run's root; default: the folder that holds the first output directory.
    Raises FileExistsError when an output directory exists already.
    """
    for path in outputs.values():
        os.makedirs(path)
    if pipeline_root is None:
        pipeline_root = os.path.dirname(os.path.normpath(next(iter(outputs.values()))))
    return StepContext(
        step_name=name,
        run_id="test",
        pipeline_root=str(pipeline_root),
        inputs={key: artifact for key, artifact in inputs.items() if artifact is not None},
        outputs=dict(outputs),
        params=params,
        beam_args=list(beam_args),
        log=logging.getLogger(f"test.{name}"),
    )
