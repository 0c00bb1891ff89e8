"""The evaluator step end to end on a tiny SavedModel and a few hundred real test digits."""

import glob
import hashlib
import json
import logging
import math
import os
import re

import model_fixtures
import numpy as np
import pytest
from step_context import step_context

from components.evaluator import analysis, executor
from pipeline.config import EvaluatorConfig
from pipeline.core.errors import InputDataError, ModelIntegrityError
from pipeline.core.step import Artifact
from pipeline.formats import evaluation
from pipeline.formats import examples as examples_format
from pipeline.formats.model import SERVING_SUBDIR

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
    return step_context(
        "evaluator",
        {"examples": Artifact(examples_uri, "Examples", {}, 1), "model": model, "baseline_model": baseline},
        {"evaluation": str(tmp_path / "evaluation"), "blessing": str(tmp_path / "blessing")},
        params=EvaluatorConfig(**params),
    )


def read_decision(ctx):
    with open(os.path.join(ctx.outputs["blessing"], "decision.json")) as f:
        return json.load(f)


def test_first_run_writes_tfma_output_and_refuses_below_floor(tmp_path, assets):
    import tensorflow_model_analysis as tfma

    uri, digest = assets["good"]
    ctx = make_ctx(
        tmp_path, assets["examples"], model_artifact(uri, digest, 11), accuracy_floor=0.99, max_examples=200
    )
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
    right = sum(
        overall[f"recall_class_{k}_top_1"] * by_label[f"label={k}"]["example_count"]
        for k in range(10)
        if f"label={k}" in by_label
    )
    assert right == pytest.approx(overall["accuracy"] * 200, abs=1e-3)
    assert {c["name"] for c in decision["checks"]} == {"accuracy_floor", "slice_accuracy_floor"}

    # The same pass wrote the per-example files: consistent with TFMA's own numbers.
    out = ctx.outputs["evaluation"]
    assert evaluation.missing_per_example_files(out) == []
    outcomes = evaluation.read_outcomes(out)
    assert set(outcomes) == {"label", "ink_density_bucket", "candidate_correct"}  # no baseline
    assert all(len(v) == 200 for v in outcomes.values())
    assert abs(outcomes["candidate_correct"].mean() - overall["accuracy"]) < 1e-6
    assert_outcomes_match_slices(outcomes, "candidate_correct", by_label)
    confusion = evaluation.read_confusion_matrices(out)
    assert set(confusion) == {"candidate"} and confusion["candidate"]["threshold"] <= 0.0
    matrix = np.array(confusion["candidate"]["matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == 200
    assert np.trace(matrix) == outcomes["candidate_correct"].sum()
    assert (matrix.sum(axis=1) == np.bincount(outcomes["label"], minlength=10)).all()
    mistakes = evaluation.read_mistakes(out)
    assert mistakes["scanned"] == 200 and mistakes["misclassified"] == 200 - np.trace(matrix) > 0
    assert len(mistakes["items"]) == min(48, mistakes["misclassified"])
    assert_mistakes_are_the_models_most_confident(mistakes, uri, assets["examples"], matrix)

    assert outcome.output_properties == {"blessing": {"blessed": 0, "baseline_model_id": 0}}
    props = outcome.execution_properties
    assert props["blessed"] == 0 and props["reasons"] == decision["reasons"]
    assert props["examples_evaluated"] == 200 and props["examples_per_second"] > 0
    assert props["metrics"]["candidate"]["overall"]["accuracy"] == overall["accuracy"]
    json.dumps(props, allow_nan=False)
    logging.getLogger(__name__).warning("TFMA first run: %s examples/s", props["examples_per_second"])


@pytest.mark.parametrize(
    "policy,min_gain,blessed",
    [
        ("superiority", 0.0, False),  # an equal model is not better: no churn
        ("superiority", 0.01, False),
        ("non_inferiority", 0.0, True),  # an equal model is not worse: fresh data ships
    ],
)
def test_same_model_as_baseline_is_equal(tmp_path, assets, policy, min_gain, blessed):
    uri, digest = assets["good"]
    baseline_uri = str(tmp_path / "baseline_model")
    model_fixtures.copy_model(uri, baseline_uri)
    ctx = make_ctx(
        tmp_path,
        assets["examples"],
        model_artifact(uri, digest, 21),
        model_artifact(baseline_uri, digest, 7),
        accuracy_floor=0.5,
        min_gain=min_gain,
        slice_accuracy_floor=0.3,
        slice_max_regression=0.0,
        promotion_policy=policy,
        non_inferiority_margin=0.02,
    )
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
    gain = next(c for c in decision["checks"] if c["name"] == policy)
    assert gain["value"] == 0.0 and gain["passed"] is blessed
    assert (decision["policy"], decision["alpha"], decision["margin"]) == (policy, 0.05, 0.02)
    overall = decision["comparisons"][0]
    assert overall["slice"] == "overall" and overall["n"] == N_TEST
    assert (overall["candidate_only"], overall["baseline_only"], overall["p_value"]) == (0, 0, 1.0)
    assert overall["difference"] == 0.0 and overall["difference_ci"][0] < 0 < overall["difference_ci"][1]
    assert outcome.execution_properties["comparisons"] == decision["comparisons"]
    regressions = [c for c in decision["checks"] if c["name"] == "slice_max_regression"]
    assert len(regressions) == 10 and all(c["passed"] for c in regressions)


def test_weaker_candidate_loses_against_baseline(tmp_path, assets):
    weak_uri, weak_digest = assets["weak"]
    good_uri, good_digest = assets["good"]
    ctx = make_ctx(
        tmp_path,
        assets["examples"],
        model_artifact(weak_uri, weak_digest, 31),
        model_artifact(good_uri, good_digest, 30),
        accuracy_floor=0.1,
        min_gain=0.0,
        slice_accuracy_floor=None,
        slice_max_regression=0.05,
    )
    outcome = executor.run(ctx)

    decision = read_decision(ctx)
    cand = decision["metrics"]["candidate"]["overall"]["accuracy"]
    base = decision["metrics"]["baseline"]["overall"]["accuracy"]
    assert cand < base  # the candidate is the weak model: names not swapped
    assert decision["metrics"]["diff"]["overall"]["accuracy"] == pytest.approx(cand - base, abs=1e-6)
    assert outcome.output_properties["blessing"]["blessed"] == 0
    assert any(c["name"] == "superiority" and not c["passed"] for c in decision["checks"])
    assert any(c["name"] == "slice_max_regression" and not c["passed"] for c in decision["checks"])
    overall = decision["comparisons"][0]
    assert overall["baseline_only"] > overall["candidate_only"] and overall["difference_ci"][1] < 0
    assert overall["difference"] == pytest.approx(cand - base, abs=1e-6)


def assert_outcomes_match_slices(outcomes, column, slices):
    """Per label and per ink density bucket, the outcomes count and score what TFMA's slices do."""
    for feature in ("label", "ink_density_bucket"):
        for value in np.unique(outcomes[feature]):
            rows = outcomes[feature] == value
            metrics = slices[f"{feature}={value}"]
            assert rows.sum() == metrics["example_count"]
            assert abs(outcomes[column][rows].mean() - metrics["accuracy"]) < 1e-6


def model_scores(model_uri, examples_uri):
    """(records in file order, pixels N x 784, labels N, probabilities N x 10) of the SavedModel
    at `model_uri` on every test example, computed here independently of the evaluator."""
    import tensorflow as tf

    records = model_fixtures.read_records(glob.glob(examples_format.split_pattern(examples_uri, "test")))
    parsed = [tf.train.Example.FromString(r).features.feature for r in records]
    pixels = np.array([list(f["image"].int64_list.value) for f in parsed], dtype=np.int64)
    labels = np.array([f["label"].int64_list.value[0] for f in parsed], dtype=np.int64)
    model = tf.saved_model.load(os.path.join(model_uri, SERVING_SUBDIR))
    probabilities = model.signatures["serving_images"](images=tf.constant(pixels, tf.float32))[
        "probabilities"
    ]
    return records, pixels, labels, probabilities.numpy().astype(np.float64)


def assert_mistakes_are_the_models_most_confident(mistakes, model_uri, examples_uri, matrix=None):
    """Every item is a real test digit the model gets wrong, with the model's own probabilities,
    most confident first, and no mistake left out is more confident than the last one kept."""
    _, pixels, labels, probabilities = model_scores(model_uri, examples_uri)
    items = mistakes["items"]
    assert [i["confidence"] for i in items] == sorted((i["confidence"] for i in items), reverse=True)
    for item in items:
        row = np.flatnonzero((pixels == np.array(item["pixels"])).all(axis=1))
        assert len(row) >= 1 and labels[row[0]] == item["label"] != item["predicted"]
        assert probabilities[row[0]].argmax() == item["predicted"]
        assert item["confidence"] == pytest.approx(probabilities[row[0], item["predicted"]], abs=1e-5)
        assert item["label_probability"] == pytest.approx(probabilities[row[0], item["label"]], abs=1e-5)
        assert item["confidence"] >= item["label_probability"]
        if matrix is not None:
            assert matrix[item["label"]][item["predicted"]] > 0
    wrong = probabilities.argmax(axis=1) != labels
    if len(items) == len(labels) or mistakes["scanned"] == len(labels):  # the whole split scanned
        assert mistakes["misclassified"] == wrong.sum()
        top = np.sort(probabilities.max(axis=1)[wrong])[::-1][: len(items)]
        assert [i["confidence"] for i in items] == pytest.approx(top.tolist(), abs=1e-5)


@pytest.mark.parametrize("candidate_name,baseline_name", [("weak", "good"), ("good", "good")])
def test_paired_outcomes_of_one_pass_agree_with_tfma(tmp_path, assets, candidate_name, baseline_name):
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.evaluator import metrics as metrics_lib

    candidate_uri, baseline_uri = assets[candidate_name][0], assets[baseline_name][0]
    if candidate_name == baseline_name:
        baseline_uri = str(tmp_path / "baseline_model")
        model_fixtures.copy_model(candidate_uri, baseline_uri)
    out = str(tmp_path / "evaluation")
    run = analysis.run_analysis(
        examples_format.split_pattern(assets["examples"], "test"),
        os.path.join(candidate_uri, SERVING_SUBDIR),
        os.path.join(baseline_uri, SERVING_SUBDIR),
        out,
        None,
        PipelineOptions([]),
    )
    by_model = metrics_lib.read_metrics(out, unnamed_model="candidate")
    assert (
        run.outcomes == run.examples_selected == by_model["candidate"]["overall"]["example_count"] == N_TEST
    )

    outcomes = evaluation.read_outcomes(out)
    assert set(outcomes) == {"label", "ink_density_bucket", "candidate_correct", "baseline_correct"}
    assert all(len(v) == N_TEST for v in outcomes.values())
    for model in ("candidate", "baseline"):
        assert abs(outcomes[f"{model}_correct"].mean() - by_model[model]["overall"]["accuracy"]) < 1e-6
        assert_outcomes_match_slices(outcomes, f"{model}_correct", by_model[model])
    diff = outcomes["candidate_correct"].mean() - outcomes["baseline_correct"].mean()
    assert diff == pytest.approx(by_model["candidate_diff"]["overall"]["accuracy"], abs=1e-6)
    # Rows are aligned: row i is the same example for every array (ordered by its sha256).
    records, _, labels, probabilities = model_scores(candidate_uri, assets["examples"])
    order = sorted(range(len(records)), key=lambda i: hashlib.sha256(records[i]).digest())
    assert (outcomes["label"] == labels[order]).all()
    assert (outcomes["candidate_correct"] == (probabilities.argmax(axis=1) == labels)[order]).all()
    if candidate_name == baseline_name:
        assert (outcomes["candidate_correct"] == outcomes["baseline_correct"]).all()
    else:
        assert outcomes["candidate_correct"].mean() < outcomes["baseline_correct"].mean()

    confusion = evaluation.read_confusion_matrices(out)
    assert set(confusion) == {"candidate", "baseline"}
    for model in ("candidate", "baseline"):
        matrix = np.array(confusion[model]["matrix"])
        assert matrix.sum() == N_TEST and np.trace(matrix) == outcomes[f"{model}_correct"].sum()
    # The per-class metrics the gate sees come from the same plots, read once.
    assert metrics_lib.per_class_from_confusion(run.confusion).keys() == {"candidate", "baseline"}
    mistakes = evaluation.read_mistakes(out)
    assert mistakes["scanned"] == N_TEST
    assert mistakes["misclassified"] == N_TEST - outcomes["candidate_correct"].sum()
    assert len(mistakes["items"]) == min(48, mistakes["misclassified"])
    assert_mistakes_are_the_models_most_confident(
        mistakes, candidate_uri, assets["examples"], confusion["candidate"]["matrix"]
    )


def _mistake(confidence, fingerprint, label=1, predicted=2):
    return {
        "fingerprint": fingerprint,
        "pixels": [0] * 784,
        "label": label,
        "predicted": predicted,
        "confidence": confidence,
        "label_probability": 0.0,
    }


def _partial(fingerprints, mistakes):
    n = len(fingerprints)
    return {
        "fingerprint": list(fingerprints),
        "label": np.array([f[0] for f in fingerprints], np.int64),
        "ink_density_bucket": np.zeros(n, np.int64),
        "candidate_correct": np.ones(n, bool),
        "mistakes": mistakes,
    }


def test_mistake_combiner_keeps_the_top_k_deterministically():
    confidences = [0.5, 0.9, 0.7, 0.9, 0.1, 0.7, 0.95, 0.3]
    mistakes = [_mistake(c, bytes([i])) for i, c in enumerate(confidences)]
    partials = [_partial([bytes([i])], [m]) for i, m in enumerate(mistakes)]
    combine = analysis.PerExampleCombineFn(keep=3)
    results = []
    for permutation in (partials, partials[::-1], partials[3:] + partials[:3]):
        # Two partitions merged, as Beam may do; inputs in different orders.
        left, right = combine.create_accumulator(), combine.create_accumulator()
        for i, partial in enumerate(permutation):
            target = left if i % 2 else right
            combine.add_input(target, partial)
            assert len(target["mistakes"]) <= 3  # memory for images stays bounded
        results.append(combine.extract_output(combine.compact(combine.merge_accumulators([left, right]))))
    kept = [(m["confidence"], m["fingerprint"]) for m in results[0]["mistakes"]]
    assert kept == [(0.95, bytes([6])), (0.9, bytes([1])), (0.9, bytes([3]))]  # ties: by fingerprint
    for result in results[1:]:
        assert [(m["confidence"], m["fingerprint"]) for m in result["mistakes"]] == kept
        for name, array in result["outcomes"].items():
            assert (array == results[0]["outcomes"][name]).all()
    assert (results[0]["outcomes"]["label"] == np.arange(len(confidences))).all()  # by fingerprint


def test_outcome_reader_refuses_inconsistent_files(tmp_path):
    good = {
        "label": np.array([1, 2, 3]),
        "ink_density_bucket": np.array([0, 1, 2]),
        "candidate_correct": np.array([True, False, True]),
    }
    evaluation.write_outcomes(str(tmp_path), good)
    assert {k: v.tolist() for k, v in evaluation.read_outcomes(str(tmp_path)).items()} == {
        k: v.tolist() for k, v in good.items()
    }
    path = os.path.join(str(tmp_path), evaluation.OUTCOMES_FILE)

    def write_raw(**arrays):
        np.savez(path, **arrays)

    write_raw(**good, baseline_correct=np.array([True, True]))
    with pytest.raises(InputDataError, match=r"outcomes\.npz: arrays of unequal length"):
        evaluation.read_outcomes(str(tmp_path))
    write_raw(**{**good, "candidate_correct": np.array([1.0, 0.0, 1.0])})
    with pytest.raises(
        InputDataError, match=r"outcomes\.npz: candidate_correct has dtype float64, expected bool"
    ):
        evaluation.read_outcomes(str(tmp_path))
    write_raw(**{**good, "label": np.array([1.5, 2.0, 3.0])})
    with pytest.raises(InputDataError, match=r"outcomes\.npz: label has dtype float64"):
        evaluation.read_outcomes(str(tmp_path))
    write_raw(**{**good, "label": np.array([[1], [2], [3]])})
    with pytest.raises(InputDataError, match="label has shape"):
        evaluation.read_outcomes(str(tmp_path))
    write_raw(**{k: v for k, v in good.items() if k != "ink_density_bucket"})
    with pytest.raises(InputDataError, match="no ink_density_bucket array"):
        evaluation.read_outcomes(str(tmp_path))
    write_raw(**{**good, "label": np.array([1, "x", None], dtype=object)})
    with pytest.raises(InputDataError, match="not a readable pickle-free"):
        evaluation.read_outcomes(str(tmp_path))
    os.unlink(path)
    with pytest.raises(InputDataError, match=r"outcomes\.npz: file not found"):
        evaluation.read_outcomes(str(tmp_path))
    with pytest.raises(InputDataError, match="unequal length"):
        evaluation.write_outcomes(str(tmp_path), {**good, "label": np.array([1])})
    assert not os.path.exists(path)  # a refused write leaves nothing behind
    assert evaluation.missing_per_example_files(str(tmp_path)) == list(evaluation.PER_EXAMPLE_FILES)


def test_mistakes_and_confusion_readers_refuse_malformed_files(tmp_path):
    item = {"pixels": [0] * 784, "label": 3, "predicted": 5, "confidence": 0.9, "label_probability": 0.05}
    evaluation.write_mistakes(str(tmp_path), 10, 2, [item, {**item, "confidence": 0.6}])
    assert evaluation.read_mistakes(str(tmp_path))["items"][1]["confidence"] == 0.6
    path = os.path.join(str(tmp_path), evaluation.MISTAKES_FILE)
    for bad, message in [
        ({"scanned": 10, "misclassified": 11, "items": []}, "misclassified <= scanned"),
        (
            {"scanned": 10, "misclassified": 2, "items": [item, {**item, "confidence": 0.95}]},
            "not ordered most confident first",
        ),
        (
            {"scanned": 10, "misclassified": 2, "items": [{**item, "predicted": 3}]},
            "must be different class ids",
        ),
        ({"scanned": 10, "misclassified": 2, "items": [{**item, "pixels": [256] * 784}]}, "784 ints 0..255"),
        ({"scanned": 10, "misclassified": 1, "items": [item, item]}, "at most"),
    ]:
        with open(path, "w") as f:
            json.dump(bad, f)
        with pytest.raises(InputDataError, match=message):
            evaluation.read_mistakes(str(tmp_path))
    with open(path, "w") as f:
        f.write("{")
    with pytest.raises(InputDataError, match=r"mistakes\.json: not valid JSON"):
        evaluation.read_mistakes(str(tmp_path))

    matrix = np.eye(10, dtype=int).tolist()
    evaluation.write_confusion_matrices(str(tmp_path), {"candidate": {"matrix": matrix, "threshold": 0.0}})
    assert evaluation.read_confusion_matrices(str(tmp_path)) == {
        "candidate": {"matrix": matrix, "threshold": 0.0}
    }
    with open(os.path.join(str(tmp_path), evaluation.CONFUSION_FILE), "w") as f:
        json.dump({"candidate": {"matrix": matrix[:9], "threshold": 0.0}}, f)
    with pytest.raises(InputDataError, match=r"confusion_matrix\.json: candidate: 'matrix' must be 10x10"):
        evaluation.read_confusion_matrices(str(tmp_path))


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
    with pytest.raises(ModelIntegrityError, match=f"{tampered} model .*copy/{SERVING_SUBDIR}"):
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

    pattern = examples_format.split_pattern(assets["examples"], "test")
    records = model_fixtures.read_records(glob.glob(pattern))
    expected = sorted(records, key=lambda r: hashlib.sha256(r).digest())[:25]
    with beam.Pipeline() as p:
        batches = p | analysis.ReadExamples(pattern, 25)  # SerializedBatch, as DecodeForEvaluation takes them
        assert_that(batches | beam.FlatMap(lambda batch: batch.records), equal_to(expected))


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
    matrix[0] = [8, 2, 0]  # 10 zeros: 8 right, 2 taken for ones
    matrix[1] = [1, 4, 0]  # 5 ones: 4 right
    matrix[2] = [0, 0, 0]  # no twos at all, and none predicted
    found = metrics_lib.per_class_metrics(matrix)
    assert found["precision_class_0_top_1"] == pytest.approx(8 / 9)
    assert found["recall_class_0_top_1"] == pytest.approx(8 / 10)
    assert found["precision_class_1_top_1"] == pytest.approx(4 / 6)
    assert found["recall_class_1_top_1"] == pytest.approx(4 / 5)
    assert math.isnan(found["precision_class_2_top_1"]) and math.isnan(found["recall_class_2_top_1"])


def _examples_with_recorded_count(tmp_path, source: str, test_count: int, truncate: bool) -> Artifact:
    """A copy of the examples at `source` recording `test_count` test examples; with
    `truncate`, its test shard cut to half its bytes."""
    import shutil

    copy = tmp_path / "recorded_examples"
    shutil.copytree(source, copy)
    if truncate:
        (shard,) = glob.glob(examples_format.split_pattern(str(copy), "test"))
        with open(shard, "rb") as f:
            data = f.read()
        with open(shard, "wb") as f:
            f.write(data[: len(data) // 2])
    return Artifact(str(copy), "Examples", {examples_format.SPLIT_COUNTS: {"test": test_count}}, 1)


@pytest.mark.parametrize("truncate, recorded_extra", [(True, 0), (False, 3)])
def test_test_split_that_lost_records_since_example_gen_is_refused(
    tmp_path, assets, truncate, recorded_extra
):
    # A truncated gzip shard reads as fewer records without an error: the count ExampleGen
    # recorded is what shows it. Nothing is blessed.
    uri, digest = assets["good"]
    ctx = make_ctx(tmp_path, assets["examples"], model_artifact(uri, digest, 5))
    ctx.inputs["examples"] = _examples_with_recorded_count(
        tmp_path, assets["examples"], N_TEST + recorded_extra, truncate
    )
    with pytest.raises(InputDataError, match=r"example_gen recorded|not a readable gzip"):
        executor.run(ctx)
    assert not os.listdir(ctx.outputs["blessing"])


def test_test_split_matching_its_recorded_count_is_evaluated(tmp_path, assets):
    uri, digest = assets["good"]
    ctx = make_ctx(tmp_path, assets["examples"], model_artifact(uri, digest, 5))
    ctx.inputs["examples"] = _examples_with_recorded_count(tmp_path, assets["examples"], N_TEST, False)
    assert executor.run(ctx).execution_properties["examples_evaluated"] == N_TEST


@pytest.mark.parametrize("max_examples", [None, 40])
def test_a_test_example_without_a_label_is_refused_naming_its_shard_and_record(
    tmp_path, assets, max_examples
):
    # Whether the evaluator reads every record or a fingerprint sample of them, the error says
    # where the bad record lies; nothing is blessed.
    import shutil

    import tensorflow as tf

    copy = tmp_path / "unlabelled_examples"
    shutil.copytree(assets["examples"], copy)
    (shard,) = glob.glob(examples_format.split_pattern(str(copy), "test"))
    records = model_fixtures.read_records([shard])

    def without_label(record):
        example = tf.train.Example.FromString(record)
        del example.features.feature[examples_format.LABEL_KEY]
        return example.SerializeToString()

    def met(records_written):  # what the evaluator reads: the smallest fingerprints, or all
        by_fingerprint = sorted(records_written, key=lambda r: hashlib.sha256(r).digest())
        return by_fingerprint[:max_examples] if max_examples else records_written

    for bad in range(5, len(records)):  # the first record from 5 on that the evaluator meets
        damaged = records[:bad] + [without_label(records[bad])] + records[bad + 1 :]
        if damaged[bad] in met(damaged):
            break
    assert damaged[bad] in met(damaged)
    with tf.io.TFRecordWriter(shard, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in damaged:
            writer.write(record)
    uri, digest = assets["good"]
    ctx = make_ctx(tmp_path, str(copy), model_artifact(uri, digest, 5), max_examples=max_examples)
    with pytest.raises(
        InputDataError, match=rf"^{re.escape(shard)}: record {bad}: a test example with no label"
    ):
        executor.run(ctx)
    assert not os.listdir(ctx.outputs["blessing"])
