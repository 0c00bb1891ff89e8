"""The contract between the runner and a step's executor.

A step's package declares its contract in `component.py` (see `declare`): each input with its
artifact type and whether it is optional (`Input`), each output with its type, and its
parameter class. The application wires the inputs (an upstream output, or a resolver) and
`declare` turns declaration and wiring into a `StepSpec`: its name, typed inputs, outputs, its
parameters (part of the cache key) and the executor function. `check_wiring` refuses a
pipeline whose wired artifact types differ. The runner hands the
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
from types import ModuleType
from typing import Any, Generic, TypeVar

from pipeline.core.beam_engines import runner_name, with_default_runner
from pipeline.core.errors import EXIT_DATA_GATE, ConfigError, PipelineError

P = TypeVar("P")


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
class StepContext(Generic[P]):
    """What an executor gets (`StepContext[TheStepsParams]`).

    inputs: input key -> Artifact (only the keys the step declared; an optional input that has
        no artifact, like the baseline model on the first run, is absent).
    outputs: output key -> empty staging directory to write into.
    params: the step's parameters: an instance of its declared parameter class (already checked
        when it was built), as held in the StepSpec.
    beam_args: Apache Beam pipeline options to pass to `beam.Pipeline` (see `with_default_runner`).
    run_id, pipeline_root: identify the run.
    log: the step's logger.
    """

    step_name: str
    run_id: str
    pipeline_root: str
    inputs: dict
    outputs: dict
    params: P
    beam_args: Sequence[str]
    log: logging.Logger

    def beam_pipeline_options(self):
        """Returns `PipelineOptions` built from `beam_args` (FnApiRunner when none is named)."""
        # Beam takes seconds to import; the report and the CLI import the core without it.
        from apache_beam.options.pipeline_options import PipelineOptions  # noqa: PLC0415

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
    stop_exit_code: int = EXIT_DATA_GATE


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
    type_name: the artifact type the step expects (`declare` sets it from the step's `Input`;
        None only for a StepSpec built by hand, which then has no type check).
    """

    producer: str | None = None
    resolver: Resolver | None = None
    optional: bool = False
    type_name: str | None = None


@dataclass(frozen=True)
class Input:
    """One input as a step declares it (its component.py's INPUTS, like TFX's ChannelParameter).

    type_name: the artifact type it reads (a `pipeline.formats` module's ARTIFACT_TYPE).
    optional: the step runs without it when nothing resolves (e.g. no baseline yet).
    """

    type_name: str
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


def declare(component: ModuleType, wiring: Mapping[str, InputSpec], params: Any) -> StepSpec:
    """The StepSpec of the step whose declaration module is `component`, its inputs wired as
    `wiring` says.

    A declaration module (`<package>/component.py`, like a TFX ComponentSpec) holds:
    INPUTS (input key -> `Input`: artifact type, optional), OUTPUTS (output key -> artifact
    type), PARAMS (the step's parameter class, or None for a step without parameters),
    optionally CACHEABLE = False and `summary(report, params) -> dict` (its run-summary entry).
    The step's name is the package's last part, its executor `<package>.executor:run`, its code
    the package.
    wiring: input key -> InputSpec naming its source (producer or resolver), exactly the keys of
        INPUTS; its type and optionality come from the declaration. A resolver is wrapped so
        that an artifact of another type fails the step (PipelineError naming both).
    params: an instance of PARAMS (None when PARAMS is None).
    Raises ConfigError naming the step when wiring or params do not fit the declaration, or
    TypeError when the declaration module itself is malformed.
    """
    package = component.__name__.rpartition(".")[0]
    name = package.rpartition(".")[2]
    declared = _declared_inputs(name, component)
    outputs = getattr(component, "OUTPUTS", None)
    if not isinstance(outputs, Mapping) or not all(isinstance(t, str) for t in outputs.values()):
        raise TypeError(f"step {name}: OUTPUTS must map output keys to artifact type names")
    if set(wiring) != set(declared):
        raise ConfigError(
            f"step {name}: inputs {sorted(wiring)} do not match its declared inputs {sorted(declared)}"
        )
    if not hasattr(component, "PARAMS"):
        raise TypeError(f"step {name}: its declaration names no PARAMS (a class, or None)")
    params_class = component.PARAMS
    if params_class is not None and not isinstance(params_class, type):
        raise TypeError(f"step {name}: PARAMS must be a class or None, got {params_class!r}")
    if params_class is None and params is not None:
        raise ConfigError(f"step {name}: takes no parameters, got {type(params).__name__}")
    if params_class is not None and not isinstance(params, params_class):
        raise ConfigError(
            f"step {name}: parameters must be {params_class.__name__}, got {type(params).__name__}"
        )
    inputs = {key: _typed_input(name, key, wiring[key], declared[key]) for key in declared}
    summarize = getattr(component, "summary", None)
    return StepSpec(
        name=name,
        inputs=inputs,
        outputs=dict(outputs),
        executor=f"{package}.executor:run",
        params=params,
        code_modules=(package,),
        cacheable=getattr(component, "CACHEABLE", True),
        summary=(lambda report: summarize(report, params)) if summarize else None,
    )


def _declared_inputs(name: str, component: ModuleType) -> Mapping[str, Input]:
    """The component's INPUTS; TypeError unless it maps keys to `Input`s."""
    declared = getattr(component, "INPUTS", None)
    if not isinstance(declared, Mapping) or not all(isinstance(d, Input) for d in declared.values()):
        raise TypeError(
            f"step {name}: INPUTS must map input keys to pipeline.core.step.Input (artifact type, optional)"
        )
    return declared


def _typed_input(step: str, key: str, wire: InputSpec, declared: Input) -> InputSpec:
    """`wire` with the declared type and optionality; its resolver checks the type it finds."""
    if wire.type_name is not None and wire.type_name != declared.type_name:
        raise ConfigError(f"{step}.{key} expects {declared.type_name} but its wiring names {wire.type_name}")
    if wire.optional and not declared.optional:
        raise ConfigError(
            f"{step}.{key}: the step declares this input required; the wiring cannot make it optional"
        )
    resolver = wire.resolver
    if resolver is not None:
        resolver = _type_checked(resolver, f"{step}.{key}", declared.type_name)
    return InputSpec(
        producer=wire.producer, resolver=resolver, optional=declared.optional, type_name=declared.type_name
    )


def _type_checked(resolver: Resolver, where: str, type_name: str) -> Resolver:
    """`resolver`, raising PipelineError when what it finds is not a `type_name` artifact."""

    def resolve(store: Any, resolved: Mapping[str, Artifact]) -> Artifact | None:
        artifact = resolver(store, resolved)
        if artifact is not None and artifact.type_name != type_name:
            raise PipelineError(
                f"{where} expects {type_name} but its resolver found {artifact.type_name} at {artifact.uri}"
            )
        return artifact

    return resolve


def check_wiring(steps: Sequence[StepSpec]) -> None:
    """Step names are unique, every producer reference names an earlier step's output, and the
    type that output has is the type the reading input expects.

    Raises ConfigError in one line naming the step and input (and, for a type mismatch, both
    ends: "evaluator.model expects Model but trainer.model_run produces ModelRun").
    """
    available: dict[str, str] = {}
    names: set[str] = set()
    for spec in steps:
        if spec.name in names:
            raise ConfigError(f"step {spec.name!r} is declared twice")
        names.add(spec.name)
        for key, inp in spec.inputs.items():
            if (inp.producer is None) == (inp.resolver is None):
                raise ConfigError(
                    f"step {spec.name}: input {key!r} needs exactly one of producer and resolver"
                )
            if inp.producer is None:
                continue
            if inp.producer not in available:
                raise ConfigError(
                    f"step {spec.name}: input {key!r} reads {inp.producer!r}, which no earlier step produces"
                )
            produced = available[inp.producer]
            if inp.type_name is not None and produced != inp.type_name:
                raise ConfigError(
                    f"{spec.name}.{key} expects {inp.type_name} but {inp.producer} produces {produced}"
                )
        available.update({f"{spec.name}.{out}": type_name for out, type_name in spec.outputs.items()})
