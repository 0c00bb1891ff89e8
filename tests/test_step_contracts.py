"""Typed step contracts: each component.py declares typed inputs, outputs and its parameter
class; building the pipeline refuses wiring of another artifact type, parameters of another
class, and a resolver finding an artifact of another type."""

import dataclasses
import importlib
import types

import pytest

from components.evaluator import component as evaluator
from components.evaluator.params import EvaluatorParams
from components.trainer import component as trainer
from pipeline.config import load_config
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.pipeline import Pipeline
from pipeline.core.step import Artifact, Input, InputSpec, declare
from pipeline.factory import STEP_NAMES, create_pipeline
from pipeline.formats import model as model_format


def _steps():
    return list(create_pipeline(load_config()).steps)


def _evaluator_wired(model_producer: str, params=None):
    return declare(
        evaluator,
        {
            "examples": InputSpec(producer="example_gen.examples"),
            "model": InputSpec(producer=model_producer),
            "baseline_model": InputSpec(resolver=lambda store, resolved: None),
        },
        EvaluatorParams() if params is None else params,
    )


def _replaced(steps, spec):
    return [spec if s.name == spec.name else s for s in steps]


def test_every_step_declares_typed_inputs_outputs_and_its_parameter_class():
    pipeline = create_pipeline(load_config())
    for spec in pipeline.steps:
        component = importlib.import_module(f"components.{spec.name}.component")
        assert set(spec.inputs) == set(component.INPUTS)
        for key, inp in spec.inputs.items():
            declared = component.INPUTS[key]
            assert (inp.type_name, inp.optional) == (declared.type_name, declared.optional)
        assert spec.outputs == component.OUTPUTS
        expected = type(None) if component.PARAMS is None else component.PARAMS
        assert isinstance(spec.params, expected), spec.name
    assert tuple(s.name for s in pipeline.steps) == STEP_NAMES


def test_wiring_an_input_to_an_output_of_another_type_is_refused_naming_both_ends():
    steps = _steps()
    Pipeline(steps=tuple(_replaced(steps, _evaluator_wired("trainer.model"))), root="/tmp/unused")  # control
    with pytest.raises(ConfigError) as caught:
        Pipeline(steps=tuple(_replaced(steps, _evaluator_wired("trainer.model_run"))), root="/tmp/unused")
    assert str(caught.value) == "evaluator.model expects Model but trainer.model_run produces ModelRun"


def test_parameters_of_another_class_are_refused():
    with pytest.raises(ConfigError, match=r"^step evaluator: parameters must be EvaluatorParams, got dict$"):
        _evaluator_wired("trainer.model", params={"alpha": 0.05})


def test_the_wiring_cannot_make_a_declared_input_optional_or_retype_it():
    wiring = {
        "examples": InputSpec(producer="example_gen.examples"),
        "model": InputSpec(producer="trainer.model", optional=True),
        "baseline_model": InputSpec(resolver=lambda store, resolved: None),
    }
    with pytest.raises(ConfigError, match=r"^evaluator.model: the step declares this input required"):
        declare(evaluator, wiring, EvaluatorParams())
    wiring["model"] = InputSpec(producer="trainer.model", type_name=model_format.RUN_ARTIFACT_TYPE)
    with pytest.raises(ConfigError, match=r"^evaluator.model expects Model but its wiring names ModelRun$"):
        declare(evaluator, wiring, EvaluatorParams())


def test_a_resolver_finding_another_artifact_type_fails_the_step():
    wrong = Artifact(uri="/runs/model_run/7", type_name=model_format.RUN_ARTIFACT_TYPE, id=7)
    right = Artifact(uri="/runs/model/7", type_name=model_format.ARTIFACT_TYPE, id=8)
    spec = declare(
        evaluator,
        {
            "examples": InputSpec(producer="example_gen.examples"),
            "model": InputSpec(producer="trainer.model"),
            "baseline_model": InputSpec(resolver=lambda store, resolved: resolved["found"]),
        },
        EvaluatorParams(),
    )
    resolve = spec.inputs["baseline_model"].resolver
    assert resolve(None, {"found": right}) is right
    assert resolve(None, {"found": None}) is None  # optional: nothing found is fine
    with pytest.raises(PipelineError) as caught:
        resolve(None, {"found": wrong})
    assert str(caught.value) == (
        "evaluator.baseline_model expects Model but its resolver found ModelRun at /runs/model_run/7"
    )


def test_a_declaration_with_untyped_inputs_or_without_params_is_malformed():
    module = types.ModuleType("steps_pkg.counter.component")
    module.INPUTS, module.OUTPUTS, module.PARAMS = ("numbers",), {"count": "Count"}, None
    with pytest.raises(TypeError, match="INPUTS must map input keys to pipeline.core.step.Input"):
        declare(module, {"numbers": InputSpec(producer="a.numbers")}, None)
    module.INPUTS = {"numbers": Input("Numbers")}
    del module.PARAMS
    with pytest.raises(TypeError, match="names no PARAMS"):
        declare(module, {"numbers": InputSpec(producer="a.numbers")}, None)


def test_the_trainer_gets_its_own_params_class_with_the_resolved_module_path():
    spec = next(s for s in _steps() if s.name == "trainer")
    assert isinstance(spec.params, trainer.PARAMS)
    assert dataclasses.asdict(spec.params)["module_file"].endswith("classic_cnn.py")
