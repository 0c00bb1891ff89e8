"""The contract between the runner and a step's executor.

A step is declared by a `StepSpec`: its name, the upstream outputs it reads, the outputs it
writes, its parameters (part of the cache key) and the executor function. The runner hands the
executor a `StepContext` and receives a `StepOutcome`. Executors never look around the file
system for what another step wrote: every path they read comes in `ctx.inputs`, every path they
write is in `ctx.outputs`.

Commit-on-completion: each output directory in `ctx.outputs` is a fresh, empty *staging*
directory. The runner renames it to its final `<root>/<step>/<output>/<execution_id>/` only when
the executor has returned; a step that raises or is killed leaves nothing a later run trusts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.beam_engines import runner_name, with_default_runner


@dataclass(frozen=True)
class Artifact:
    """An artifact handed to an executor as input.

    uri: directory holding the artifact's files (final, committed location).
    type_name: the MLMD artifact type (e.g. "Examples", "Model").
    properties: what the producing step recorded (digest, span, blessed, ...).
    id: the MLMD artifact id (0 for external inputs that are not in MLMD yet).
    """

    uri: str
    type_name: str
    properties: Mapping[str, Any] = field(default_factory=dict)
    id: int = 0


@dataclass
class StepContext:
    """What an executor gets.

    inputs: input key -> Artifact (only the keys the step declared; an optional input that has
        no artifact, like the baseline model on the first run, is absent).
    outputs: output key -> empty staging directory to write into.
    params: the step's parameters (frozen dataclass or mapping), as declared in the StepSpec.
    beam_args: Apache Beam pipeline options to pass to `beam.Pipeline` (see `with_default_runner`).
    run_id, pipeline_root: identify the run.
    log: the step's logger.
    """

    step_name: str
    run_id: str
    pipeline_root: str
    inputs: dict
    outputs: dict
    params: Any
    beam_args: Sequence[str]
    log: logging.Logger

    def beam_pipeline_options(self):
        """Returns `PipelineOptions` built from `beam_args` (FnApiRunner when none is named)."""
        from apache_beam.options.pipeline_options import PipelineOptions

        return PipelineOptions(with_default_runner(self.beam_args))

    def beam_runner(self) -> str:
        """The name of the Beam runner `beam_pipeline_options` selects (recorded by Beam steps
        as their `beam_runner` property)."""
        return runner_name(self.beam_args)


@dataclass
class StepOutcome:
    """What an executor returns.

    execution_properties: JSON-ready facts about the run (counts, metrics, decisions); recorded
        on the MLMD execution and copied into the run summary.
    output_properties: output key -> JSON-ready properties recorded on that output artifact
        (e.g. {"model": {"digest": "..."}}). The runner adds the directory digest itself.
    stop_run: a message when this step's result must stop the run (the data gate). The outputs
        are still committed (the anomaly report is kept) and the run ends with `stop_exit_code`.
    """

    execution_properties: dict = field(default_factory=dict)
    output_properties: dict = field(default_factory=dict)
    stop_run: str | None = None
    stop_exit_code: int = 3


# resolver(store, resolved) -> Artifact or None. `store` is the run's metadata store
# (pipeline.core.metadata.MetadataStore); `resolved` maps this step's producer inputs, already
# resolved, by input key.
Resolver = Callable[[Any, Mapping[str, Artifact]], Artifact | None]


@dataclass(frozen=True)
class InputSpec:
    """Where an input comes from: an upstream step's output, or a resolver.

    producer: "step_name.output_key" of an upstream step, or None when `resolver` is used.
    resolver: a `Resolver` for inputs found in the metadata store or outside the pipeline root
        (the serving model, raw data, a curated file). It runs after the step's producer inputs
        are resolved and sees them, so it needs no knowledge of the wiring.
    optional: the step runs without this input when nothing resolves (e.g. no baseline yet).
    """

    producer: str | None = None
    resolver: Resolver | None = None
    optional: bool = False


@dataclass(frozen=True)
class StepSpec:
    """A step's declaration.

    name: one of the pipeline's step names.
    inputs: input key -> InputSpec.
    outputs: output key -> MLMD artifact type name.
    executor: function(StepContext) -> StepOutcome, or its "module:function" path, imported only
        when the step runs (so building the pipeline does not import TensorFlow).
    params: parameters; their JSON form is part of the cache key.
    code_modules: importable module or package names whose source, and the source of every
        project module they import (transitively), is part of the cache key.
    cacheable: False for steps that must run every time (the pusher).
    summary: what the step contributes to the top level of the run summary:
        summary(report) -> dict, where `report` is the step's `StepReport` of this run (its
        state, properties, error and resolved inputs). None: nothing beyond `steps`.
    """

    name: str
    inputs: Mapping[str, InputSpec]
    outputs: Mapping[str, str]
    executor: Any
    params: Any = None
    code_modules: Sequence[str] = ()
    cacheable: bool = True
    summary: Callable[[Any], dict] | None = None


def declare(component, inputs: Mapping[str, InputSpec], params) -> StepSpec:
    """The StepSpec of the step whose declaration module is `component`.

    A declaration module (`<package>/component.py`, like a TFX ComponentSpec) holds:
    INPUTS (the input keys), OUTPUTS (output key -> artifact type), optionally
    CACHEABLE = False and `summary(report, params) -> dict` (its run-summary entry). The step's
    name is the package's last part, its executor `<package>.executor:run`, its code the package.
    inputs: input key -> InputSpec, exactly the keys of INPUTS (ConfigError otherwise).
    """
    from pipeline.core.errors import ConfigError

    package = component.__name__.rpartition(".")[0]
    name = package.rpartition(".")[2]
    if set(inputs) != set(component.INPUTS):
        raise ConfigError(
            f"step {name}: inputs {sorted(inputs)} do not match its declared "
            f"inputs {sorted(component.INPUTS)}"
        )
    summarize = getattr(component, "summary", None)
    return StepSpec(
        name=name,
        inputs=dict(inputs),
        outputs=dict(component.OUTPUTS),
        executor=f"{package}.executor:run",
        params=params,
        code_modules=(package,),
        cacheable=getattr(component, "CACHEABLE", True),
        summary=(lambda report: summarize(report, params)) if summarize else None,
    )
