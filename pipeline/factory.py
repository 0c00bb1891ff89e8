"""Builds the MNIST pipeline's DAG from one `PipelineConfig`.

`create_pipeline` is the only place that knows which step feeds which. It takes every path and
threshold from the config, touches no file and imports no TensorFlow: wiring and configuration
errors surface here, before anything runs.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Sequence

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError
from pipeline.step import InputSpec, StepSpec

STEP_NAMES = (
    "example_gen",
    "statistics_gen",
    "schema_gen",
    "example_validator",
    "trainer",
    "evaluator",
    "pusher",
)


@dataclass(frozen=True)
class Pipeline:
    """An ordered, validated list of steps plus the config they were built from."""

    steps: tuple
    config: PipelineConfig

    def step(self, name: str) -> StepSpec:
        """Returns the step called `name`; ConfigError when there is none."""
        for spec in self.steps:
            if spec.name == name:
                return spec
        raise ConfigError(f"unknown step {name!r} (steps: {', '.join(STEP_NAMES)})")


def _step(name, inputs, outputs, params, cacheable=True) -> StepSpec:
    return StepSpec(
        name=name,
        inputs=inputs,
        outputs=outputs,
        executor=f"components.{name}.executor:run",
        params=params,
        code_modules=(f"components.{name}",),
        cacheable=cacheable,
    )


def create_pipeline(config: PipelineConfig) -> Pipeline:
    """Returns the pipeline for `config`, its steps in an order that respects dependencies.

    Raises ConfigError when the config names a path that cannot be used.
    """
    schema_path = config.validation.schema_path
    if not os.path.isfile(schema_path):
        raise ConfigError(f"config key validation.schema_path: no schema file at {schema_path}")
    produced = lambda ref: InputSpec(producer=ref)  # noqa: E731
    steps = (
        _step("example_gen", {"raw_data": InputSpec(resolver="raw_data")},
              {"examples": "Examples"}, config.data),
        _step("statistics_gen", {"examples": produced("example_gen.examples")},
              {"statistics": "ExampleStatistics"}, None),
        _step("schema_gen", {"statistics": produced("statistics_gen.statistics")},
              {"schema": "Schema"}, config.validation),
        _step("example_validator", {
            "statistics": produced("statistics_gen.statistics"),
            "schema": produced("schema_gen.schema"),
            "previous_statistics": InputSpec(resolver="previous_span_statistics", optional=True),
        }, {"anomalies": "ExampleAnomalies"}, config.validation),
        _step("trainer", {
            "examples": produced("example_gen.examples"),
            "schema": produced("schema_gen.schema"),
            "base_model": InputSpec(resolver="warm_start_model", optional=True),
        }, {"model": "Model", "model_run": "ModelRun"}, config.trainer),
        _step("evaluator", {
            "examples": produced("example_gen.examples"),
            "model": produced("trainer.model"),
            "baseline_model": InputSpec(resolver="baseline_model", optional=True),
        }, {"evaluation": "ModelEvaluation", "blessing": "ModelBlessing"}, config.evaluator),
        _step("pusher", {
            "model": produced("trainer.model"),
            "blessing": produced("evaluator.blessing"),
            "examples": produced("example_gen.examples"),
            "baseline_model": InputSpec(resolver="latest_pushed_model", optional=True),
        }, {"pushed_model": "PushedModel"},
              dataclasses.replace(config.pusher, serving_dir=config.serving_dir), cacheable=False),
    )
    _check_wiring(steps)
    return Pipeline(steps=steps, config=config)


def _check_wiring(steps: Sequence[StepSpec]) -> None:
    """Every producer reference must name an earlier step's declared output."""
    available = set()
    for spec in steps:
        for key, inp in spec.inputs.items():
            if inp.producer is not None and inp.producer not in available:
                raise ConfigError(f"step {spec.name}: input {key!r} reads {inp.producer!r}, "
                                  "which no earlier step produces")
        available.update(f"{spec.name}.{out}" for out in spec.outputs)
