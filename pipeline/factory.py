"""Builds the MNIST pipeline's DAG from one `PipelineConfig`.

`create_pipeline` is the only place that knows which step feeds which: it wires each input a
step declares (components/<step>/component.py: its artifact type, whether it is optional) to an
upstream output or a resolver, and hands each step its own parameter class from the config.
It takes every path and threshold from the config, touches no file and imports no TensorFlow:
wiring errors (an input wired to an output of another artifact type) and configuration errors
surface here, before anything runs.
"""

from __future__ import annotations

import dataclasses
import logging
import os

from components.evaluator import component as evaluator
from components.example_gen import component as example_gen
from components.example_validator import component as example_validator
from components.pusher import component as pusher
from components.schema_gen import component as schema_gen
from components.statistics_gen import component as statistics_gen
from components.trainer import component as trainer
from components.trainer.module_contract import check_module_file
from pipeline import report, resolvers
from pipeline.config import PipelineConfig, config_to_dict
from pipeline.core.beam_engines import runner_warning, with_job_server_jar
from pipeline.core.errors import ConfigError
from pipeline.core.external import external_file
from pipeline.core.pipeline import Pipeline
from pipeline.core.step import InputSpec, declare
from pipeline.formats import module_file as module_file_format
from pipeline.formats import reference as reference_format
from pipeline.formats import schema as schema_format
from pipeline.metadata_settings import back_up_after_run, store_settings

log = logging.getLogger("pipeline.factory")

STEP_NAMES = (
    "example_gen",
    "statistics_gen",
    "schema_gen",
    "example_validator",
    "trainer",
    "evaluator",
    "pusher",
)


def _produced(ref: str) -> InputSpec:
    return InputSpec(producer=ref)


def create_pipeline(config: PipelineConfig) -> Pipeline:
    """Returns the pipeline for `config`, its steps in an order that respects dependencies.

    Raises ConfigError when the config names a path that cannot be used, or a trainer module
    file that does not parse or does not define exactly one entry point.
    """
    if not os.path.isfile(config.validation.schema_path):
        raise ConfigError(
            f"config key validation.schema_path: no schema file at {config.validation.schema_path}"
        )
    curated_schema = external_file(
        schema_format.CURATED_TYPE, config.validation.schema_path, "validation.schema_path"
    )
    reference = None
    if config.validation.reference_check:
        if not os.path.isfile(config.validation.reference_path):
            raise ConfigError(
                "config key validation.reference_path: no reference statistics at "
                f"{config.validation.reference_path} (or set validation.reference_check = false)"
            )
        # By content digest, like the curated schema: editing the file reruns the gate.
        reference = external_file(
            reference_format.ARTIFACT_TYPE, config.validation.reference_path, "validation.reference_path"
        )
    # The module is code the trainer will import: checked from its source now (no import),
    # read by content digest at run time, so editing it retrains.
    module_path = os.path.abspath(config.trainer.module_file)
    check_module_file(module_path)
    trainer_params = dataclasses.replace(config.trainer, module_file=module_path)
    steps = (
        declare(
            example_gen,
            {
                "raw_data": example_gen.raw_data_input(
                    config.data.data_root,
                    config.data.span,
                    config.data.window_spans,
                    config.data.span_ready_marker,
                )
            },
            config.data,
        ),
        declare(statistics_gen, {"examples": _produced("example_gen.examples")}, None),
        declare(
            schema_gen,
            {
                "statistics": _produced("statistics_gen.statistics"),
                "curated_schema": InputSpec(resolver=curated_schema),
            },
            config.validation.schema_gen(),
        ),
        declare(
            example_validator,
            {
                "statistics": _produced("statistics_gen.statistics"),
                "examples": _produced("example_gen.examples"),
                "schema": _produced("schema_gen.schema"),
                "previous_statistics": InputSpec(
                    resolver=resolvers.statistics_of_previous_span("statistics")
                ),
                "reference_statistics": InputSpec(
                    resolver=resolvers.reference_for_first_span("statistics", reference)
                ),
            },
            config.validation.example_validator(),
        ),
        declare(
            trainer,
            {
                "examples": _produced("example_gen.examples"),
                "schema": _produced("schema_gen.schema"),
                "base_model": InputSpec(
                    resolver=resolvers.pushed_model_of_earlier_spans("examples", config.trainer.warm_start)
                ),
                "module_file": InputSpec(
                    resolver=external_file(
                        module_file_format.ARTIFACT_TYPE, module_path, "trainer.module_file"
                    )
                ),
            },
            trainer_params,
        ),
        declare(
            evaluator,
            {
                "examples": _produced("example_gen.examples"),
                "model": _produced("trainer.model"),
                "baseline_model": InputSpec(
                    resolver=resolvers.serving_model_unless("model", config.serving_dir)
                ),
            },
            config.evaluator,
        ),
        declare(
            pusher,
            {
                "model": _produced("trainer.model"),
                "blessing": _produced("evaluator.blessing"),
                "examples": _produced("example_gen.examples"),
                "baseline_model": InputSpec(resolver=resolvers.serving_model(config.serving_dir)),
            },
            dataclasses.replace(config.pusher, serving_dir=config.serving_dir),
        ),
    )
    beam_args = tuple(with_job_server_jar(config.beam_args))
    # The config refused the engines that must not run (pipeline.config.PipelineConfig.validate).
    engine_warning = runner_warning(config.beam_args, config.allow_untested_runner)
    if engine_warning:
        log.warning(engine_warning)
    return Pipeline(
        steps=steps,
        root=config.pipeline_root,
        lock_timeout_s=config.lock_timeout_s,
        beam_args=beam_args,
        run_config=config_to_dict(config),
        summary_fields={"serving_dir": config.serving_dir},
        after_run=_write_report,
        store_written=back_up_after_run,
        store=store_settings(config),
    )


def _write_report(summary: dict, run_dir: str):
    """The run's report.html."""
    return report.write_report(summary, run_dir)
