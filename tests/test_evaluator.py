"""The evaluator step end to end on a tiny SavedModel and a few hundred real test digits."""

import glob
import hashlib
import json
import logging
import math
import os

import numpy as np
import pytest

import model_fixtures
from components.evaluator import analysis, executor
from pipeline.config import EvaluatorConfig
from pipeline.errors import InputDataError, ModelIntegrityError
from pipeline.step import Artifact, StepContext

N_TEST = 300
SLICES = {"overall"} | {f"label={k}" for k in range(10)}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluator_assets")
    good = str(root / "good")
    weak = str(root / "weak")
    return {
        "examples": model_fixtures.write_examples(str(root / "examples"), N_TEST),
        "good": (good, model_fixtures.build_model(good, steps=40)),
        "weak": (weak, model_fixtures.build_model(weak, steps=2)),
    }


def model_artifact(uri, digest, artifact_id):
    return Artifact(uri=uri, type_name="Model", properties={"digest": digest}, id=artifact_id)


def make_ctx(tmp_path, examples_uri, model, baseline=None, **params):
    outputs = {"evaluation": str(tmp_path / "evaluation"), "blessing": str(tmp_path / "blessing")}
    for path in outputs.values():
        os.makedirs(path)
    inputs = {"examples": Artifact(examples_uri, "Examples", {}, 1), "model": model}
    if baseline is not None:
        inputs["baseline_model"] = baseline
    return StepContext(step_name="evaluator", run_id="test", pipeline_root=str(tmp_path), inputs=inputs,
                       outputs=outputs, params=EvaluatorConfig(**params), beam_args=(),
                       log=logging.getLogger("test_evaluator"))


def read_decision(ctx):
    with open(os.path.join(ctx.outputs["blessing"], "decision.json")) as f:
        return json.load(f)


def test_first_run_writes_tfma_output_and_refuses_below_floor(tmp_path, assets):
    import tensorflow_model_analysis as tfma

    uri, digest = assets["good"]
    ctx = make_ctx(tmp_path, assets["examples"], model_artifact(uri, digest, 11),
                   accuracy_floor=0.99, max_examples=200)
    outcome = executor.run(ctx)

    result = tfma.load_eval_result(ctx.outputs["evaluation"])  # single model: keys carry no model name
    slice_names = {",".join(f"{c}={v}" for c, v in key) or "overall" for key, _ in result.slicing_metrics}
    assert SLICES <= slice_names
    assert any(name.startswith("ink_density_bucket=") for name in slice_names)
    assert list(tfma.load_plots(ctx.outputs["evaluation"]))  # the confusion matrix plot

    blessing_dir = ctx.outputs["blessing"]
    assert os.path.exists(os.path.join(blessing_dir, "NOT_BLESSED"))
    assert not os.path.exists(os.path.join(blessing_dir, "BLESSED"))
    decision = read_decision(ctx)
    assert decision["blessed"] is False
    assert any("accuracy_floor 0.9900" in r for r in decision["reasons"])
    assert decision["baseline_model"] is None and decision["metrics"]["baseline"] is None
    assert decision["candidate_model"] == {"id": 11, "uri": uri, "digest": digest}
    overall = decision["metrics"]["candidate"]["overall"]
    assert overall["example_count"] == 200  # max_examples honoured
    assert 0.6 < overall["accuracy"] < 0.99
    assert {"log_loss", "precision_class_3_top_1", "recall_class_3_top_1"} <= set(overall)
    # Per-class recall comes from the confusion matrix, accuracy from TFMA's own metric: the
    # digits each class got right add up to the digits right overall.
    by_label = decision["metrics"]["candidate"]
    right = sum(overall[f"recall_class_{k}_top_1"] * by_label[f"label={k}"]["example_count"]
                for k in range(10) if f"label={k}" in by_label)
    assert right == pytest.approx(overall["accuracy"] * 200, abs=1e-3)
    assert {c["name"] for c in decision["checks"]} == {"accuracy_floor", "slice_accuracy_floor"}

    assert outcome.output_properties == {"blessing": {"blessed": 0, "baseline_model_id": 0}}
    props = outcome.execution_properties
    assert props["blessed"] == 0 and props["reasons"] == decision["reasons"]
    assert props["examples_evaluated"] == 200 and props["examples_per_second"] > 0
    assert props["metrics"]["candidate"]["overall"]["accuracy"] == overall["accuracy"]
    json.dumps(props, allow_nan=False)
    logging.getLogger(__name__).warning("TFMA first run: %s examples/s", props["examples_per_second"])


@pytest.mark.parametrize("min_gain,blessed", [(0.0, True), (0.01, False)])
def test_same_model_as_baseline_is_equal(tmp_path, assets, min_gain, blessed):
    uri, digest = assets["good"]
    baseline_uri = str(tmp_path / "baseline_model")
    model_fixtures.copy_model(uri, baseline_uri)
    ctx = make_ctx(tmp_path, assets["examples"], model_artifact(uri, digest, 21),
                   model_artifact(baseline_uri, digest, 7),
                   accuracy_floor=0.5, min_gain=min_gain, slice_accuracy_floor=0.3, slice_max_regression=0.0)
    outcome = executor.run(ctx)

    assert outcome.output_properties == {"blessing": {"blessed": int(blessed), "baseline_model_id": 7}}
    assert os.path.exists(os.path.join(ctx.outputs["blessing"], "BLESSED" if blessed else "NOT_BLESSED"))
    import tensorflow_model_analysis as tfma
    for name in ("candidate", "baseline"):
        loaded = tfma.load_eval_result(ctx.outputs["evaluation"], model_name=name)
        assert len(loaded.slicing_metrics) >= len(SLICES)
    decision = read_decision(ctx)
    candidate, baseline = decision["metrics"]["candidate"], decision["metrics"]["baseline"]
    assert candidate["overall"]["example_count"] == baseline["overall"]["example_count"] == N_TEST
    for name in SLICES:
        assert candidate[name]["accuracy"] == baseline[name]["accuracy"]
    assert decision["metrics"]["diff"]["overall"]["accuracy"] == 0.0  # TFMA's own diff metric
    gain = next(c for c in decision["checks"] if c["name"] == "min_gain")
    assert gain["value"] == 0.0 and gain["passed"] is blessed
    regressions = [c for c in decision["checks"] if c["name"] == "slice_max_regression"]
    assert len(regressions) == 10 and all(c["passed"] for c in regressions)


def test_weaker_candidate_loses_against_baseline(tmp_path, assets):
    weak_uri, weak_digest = assets["weak"]
    good_uri, good_digest = assets["good"]
    ctx = make_ctx(tmp_path, assets["examples"], model_artifact(weak_uri, weak_digest, 31),
                   model_artifact(good_uri, good_digest, 30),
                   accuracy_floor=0.1, min_gain=0.0, slice_accuracy_floor=None, slice_max_regression=0.05)
    outcome = executor.run(ctx)

    decision = read_decision(ctx)
    cand = decision["metrics"]["candidate"]["overall"]["accuracy"]
    base = decision["metrics"]["baseline"]["overall"]["accuracy"]
    assert cand < base  # the candidate is the weak model: names not swapped
    assert decision["metrics"]["diff"]["overall"]["accuracy"] == pytest.approx(cand - base, abs=1e-6)
    assert outcome.output_properties["blessing"]["blessed"] == 0
    assert any(c["name"] == "min_gain" and not c["passed"] for c in decision["checks"])
    assert any(c["name"] == "slice_max_regression" and not c["passed"] for c in decision["checks"])


@pytest.fixture
def no_tfma(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("TFMA must not run when a model fails its integrity check")
    monkeypatch.setattr(executor, "run_analysis", refuse)


@pytest.mark.parametrize("tampered", ["candidate", "baseline"])
def test_tampered_model_is_refused_before_tfma(tmp_path, assets, no_tfma, tampered):
    uri, digest = assets["good"]
    copy = str(tmp_path / "copy")
    model_fixtures.copy_model(uri, copy)
    model_fixtures.tamper_with_variables(copy)
    candidate = model_artifact(copy if tampered == "candidate" else uri, digest, 41)
    baseline = model_artifact(copy if tampered == "baseline" else uri, digest, 40)
    ctx = make_ctx(tmp_path, assets["examples"], candidate, baseline)
    with pytest.raises(ModelIntegrityError, match=f"{tampered} model .*copy/Format-Serving"):
        executor.run(ctx)
    assert os.listdir(ctx.outputs["evaluation"]) == [] and os.listdir(ctx.outputs["blessing"]) == []


def test_model_without_recorded_digest_is_refused(tmp_path, assets, no_tfma):
    uri, _ = assets["good"]
    ctx = make_ctx(tmp_path, assets["examples"], Artifact(uri, "Model", {}, 5))
    with pytest.raises(ModelIntegrityError, match="no recorded digest"):
        executor.run(ctx)


def test_missing_test_split_is_an_input_error(tmp_path, assets, no_tfma):
    uri, digest = assets["good"]
    ctx = make_ctx(tmp_path, str(tmp_path / "no_examples"), model_artifact(uri, digest, 5))
    with pytest.raises(InputDataError, match="Split-test"):
        executor.run(ctx)


def test_subsample_is_deterministic_and_content_defined(tmp_path, assets):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    pattern = analysis.split_pattern(assets["examples"])
    records = model_fixtures.read_records(glob.glob(pattern))
    expected = sorted(records, key=lambda r: hashlib.sha256(r).digest())[:25]
    with beam.Pipeline() as p:
        kept = p | analysis.ReadExamples(pattern, 25)
        assert_that(kept, equal_to(expected))


def test_empty_test_split_is_an_input_error(tmp_path, assets):
    import tensorflow as tf

    split = tmp_path / "empty_examples" / "Split-test"
    split.mkdir(parents=True)
    with tf.io.TFRecordWriter(str(split / "data_tfrecord-00000-of-00001.gz"), "GZIP"):
        pass
    uri, digest = assets["good"]
    ctx = make_ctx(tmp_path, str(tmp_path / "empty_examples"), model_artifact(uri, digest, 5))
    with pytest.raises(InputDataError, match="no test examples were evaluated"):
        executor.run(ctx)


def test_per_class_precision_and_recall_come_from_the_confusion_matrix():
    from components.evaluator import metrics as metrics_lib

    matrix = np.zeros((3, 3))
    matrix[0] = [8, 2, 0]   # 10 zeros: 8 right, 2 taken for ones
    matrix[1] = [1, 4, 0]   # 5 ones: 4 right
    matrix[2] = [0, 0, 0]   # no twos at all, and none predicted
    found = metrics_lib.per_class_metrics(matrix)
    assert found["precision_class_0_top_1"] == pytest.approx(8 / 9)
    assert found["recall_class_0_top_1"] == pytest.approx(8 / 10)
    assert found["precision_class_1_top_1"] == pytest.approx(4 / 6)
    assert found["recall_class_1_top_1"] == pytest.approx(4 / 5)
    assert math.isnan(found["precision_class_2_top_1"]) and math.isnan(found["recall_class_2_top_1"])
