"""The Trainer executor on real digits: training, best-model export, digest, warm start, failures."""

import dataclasses
import json
import logging
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf
from mnist_slices import TRAIN_IMAGES, TRAIN_LABELS, read_real
from model_fixtures import serialize_examples, tamper_with_variables
from step_context import step_context

from components.trainer import executor, precision
from pipeline.config import TrainerConfig
from pipeline.core.digest import directory_digest
from pipeline.core.errors import ConfigError, InputDataError, ModelIntegrityError, TrainingError
from pipeline.core.step import Artifact
from pipeline.formats.model import DIGEST_FILE, SERVING_SUBDIR

N_TRAIN, N_EVAL = 600, 200
# A small network keeps each run to seconds on two shared cores.
SMALL = dict(conv1_filters=8, conv2_filters=16, dense_units=64, batch_size=50, random_seed=7)
# SGD with a learning rate this small leaves float32 weights exactly as they are.
FROZEN = dict(optimizer="sgd", learning_rate=1e-12)

SCHEMA = """
feature { name: "image" type: INT value_count { min: 784 max: 784 } }
feature { name: "label" type: INT value_count { min: 1 max: 1 } }
feature { name: "ink_density" type: FLOAT value_count { min: 1 max: 1 } }
feature { name: "ink_density_bucket" type: INT value_count { min: 1 max: 1 } }
"""


def write_split(uri, split, records):
    split_dir = os.path.join(uri, f"Split-{split}")
    os.makedirs(split_dir, exist_ok=True)
    path = os.path.join(split_dir, "data_tfrecord-00000-of-00001.gz")
    with tf.io.TFRecordWriter(path, tf.io.TFRecordOptions(compression_type="GZIP")) as writer:
        for record in records:
            writer.write(record)


def real_records(count, offset):
    return serialize_examples(read_real(TRAIN_IMAGES, count, offset), read_real(TRAIN_LABELS, count, offset))


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    """An Examples artifact: 600 real training digits, the next 200 as the eval split."""
    uri = str(tmp_path_factory.mktemp("examples"))
    write_split(uri, "train", real_records(N_TRAIN, 0))
    write_split(uri, "eval", real_records(N_EVAL, N_TRAIN))
    return Artifact(
        uri=uri, type_name="Examples", properties={"split_counts": {"train": N_TRAIN, "eval": N_EVAL}}, id=1
    )


@pytest.fixture(scope="module")
def schema(tmp_path_factory):
    uri = str(tmp_path_factory.mktemp("schema"))
    with open(os.path.join(uri, "schema.pbtxt"), "w") as f:
        f.write(SCHEMA)
    return Artifact(uri=uri, type_name="Schema", id=2)


def make_ctx(tmp_path, examples, schema, base_model=None, **overrides):
    """The trainer's context: the SMALL network with `overrides`, outputs under `tmp_path`."""
    return step_context(
        "trainer",
        {"examples": examples, "schema": schema, "base_model": base_model},
        {key: str(tmp_path / key) for key in ("model", "model_run")},
        params=dataclasses.replace(TrainerConfig(), **{**SMALL, **overrides}),
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, examples, schema):
    """One real training run: 300 steps of 50, evaluated every 100 steps. Served without
    test-time augmentation, so the export scores exactly what the evaluations scored (the views
    are tested in tests/test_test_time_augmentation.py)."""
    tmp = tmp_path_factory.mktemp("trained")
    ctx = make_ctx(
        tmp,
        examples,
        schema,
        train_steps=300,
        eval_every_steps=100,
        early_stopping_evals=0,
        test_time_augmentation="none",
    )
    outcome = executor.run(ctx)
    return ctx, outcome


def model_artifact(ctx, outcome, model_id=5):
    return Artifact(
        uri=ctx.outputs["model"],
        type_name="Model",
        properties=dict(outcome.output_properties["model"]),
        id=model_id,
    )


def eval_records():
    return real_records(N_EVAL, N_TRAIN), read_real(TRAIN_LABELS, N_EVAL, N_TRAIN)


def test_training_learns_well_above_chance(trained):
    _, outcome = trained
    props = outcome.execution_properties
    assert props["best_eval_accuracy"] > 0.8  # measured about 0.92; chance is 0.1
    assert props["steps_trained"] == 300 and props["stopped_early"] is False
    assert props["evaluations_run"] == 3
    assert props["train_examples_per_sec"] > 0
    assert props["warm_started"] is False
    # "auto" is recorded as what it resolved to on this machine, and the graphs computed in it.
    assert props["precision"] == precision.resolve("auto")[0]
    assert outcome.stop_run is None


def test_history_records_every_evaluation(trained):
    ctx, outcome = trained
    with open(os.path.join(ctx.outputs["model_run"], "training_history.json")) as f:
        history = json.load(f)
    evaluations = history["evaluations"]
    assert [e["step"] for e in evaluations] == [100, 200, 300]
    assert all(0.0 <= e["accuracy"] <= 1.0 and np.isfinite(e["loss"]) for e in evaluations)
    # The default rule: the latest evaluation within best_checkpoint_tolerance of the best.
    tolerance = TrainerConfig().best_checkpoint_tolerance
    highest = max(e["accuracy"] for e in evaluations)
    chosen = [e for e in evaluations if e["accuracy"] >= highest - tolerance][-1]
    assert history["best_eval_step"] == chosen["step"]
    # The highest accuracy, ties to the lower loss (then the earliest): choose with tolerance 0.
    top = max(evaluations, key=lambda e: (e["accuracy"], -e["loss"]))
    assert history["top_eval_step"] == top["step"] and history["top_eval_accuracy"] == top["accuracy"]
    assert outcome.execution_properties["precision_reason"].startswith("auto: ")
    assert history["best_eval_accuracy"] == outcome.execution_properties["best_eval_accuracy"]


def test_model_run_holds_checkpoints_and_tensorboard_events(trained):
    ctx, _ = trained
    run_dir = ctx.outputs["model_run"]
    assert tf.train.latest_checkpoint(run_dir).endswith("model.ckpt-300")
    names = os.listdir(run_dir)
    assert any(n.startswith("events.out.tfevents") for n in names)
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(os.path.join(run_dir, "eval")))
    assert "export" not in names  # the best export was moved into the Model artifact


def test_export_layout_and_digest(trained):
    ctx, outcome = trained
    model_uri = ctx.outputs["model"]
    assert sorted(os.listdir(model_uri)) == sorted([SERVING_SUBDIR, DIGEST_FILE])
    serving = os.path.join(model_uri, SERVING_SUBDIR)
    assert sorted(os.listdir(serving)) == ["saved_model.pb", "variables"]
    digest = directory_digest(serving)
    from pipeline.config import DEFAULT_MODULE_FILE
    from pipeline.core.digest import file_digest

    # The model records the module that built it (the default: the classic CNN).
    assert outcome.output_properties == {
        "model": {
            "digest": digest,
            "module_file": str(DEFAULT_MODULE_FILE),
            "module_digest": file_digest(str(DEFAULT_MODULE_FILE)),
        }
    }
    with open(os.path.join(model_uri, DIGEST_FILE)) as f:
        assert json.load(f) == {"digest": digest, "algorithm": "sha256-tree"}


def test_exported_model_is_the_best_evaluation_and_serves_both_signatures(trained):
    ctx, outcome = trained
    loaded = tf.saved_model.load(os.path.join(ctx.outputs["model"], SERVING_SUBDIR))
    assert {"serving_default", "serving_images"} <= set(loaded.signatures)
    by_examples = loaded.signatures["serving_default"]
    by_images = loaded.signatures["serving_images"]
    spec = by_examples.structured_input_signature[1]
    assert list(spec) == ["examples"] and spec["examples"].dtype == tf.string
    assert spec["examples"].shape.as_list() == [None]
    spec = by_images.structured_input_signature[1]
    assert list(spec) == ["images"] and spec["images"].dtype == tf.float32
    assert spec["images"].shape.as_list() == [None, 784]
    for signature in (by_examples, by_images):
        outputs = signature.structured_outputs
        assert outputs["class_ids"].dtype == tf.int64
        assert outputs["class_ids"].shape.as_list() == [None]
        assert outputs["probabilities"].dtype == tf.float32
        assert outputs["probabilities"].shape.as_list() == [None, 10]

    records, labels = eval_records()
    answer = by_examples(examples=tf.constant(records))
    class_ids = answer["class_ids"].numpy()
    np.testing.assert_allclose(answer["probabilities"].numpy().sum(axis=1), 1.0, atol=1e-5)
    # The exported weights are those of the best evaluation, on this very eval split.
    assert np.mean(class_ids == labels) == pytest.approx(
        outcome.execution_properties["best_eval_accuracy"], abs=1e-6
    )
    images = read_real(TRAIN_IMAGES, N_EVAL, N_TRAIN).reshape(N_EVAL, 784).astype(np.float32)
    by_pixels = by_images(images=tf.constant(images))["class_ids"].numpy()
    np.testing.assert_array_equal(by_pixels, class_ids)


def poison_logits_bias(model_uri):
    """Rewrites the model's variables with a NaN logits bias; returns the new digest."""
    prefix = os.path.join(model_uri, SERVING_SUBDIR, "variables", "variables")
    values = {name: tf.train.load_variable(prefix, name) for name, _ in tf.train.list_variables(prefix)}
    values["logits/bias"] = np.full_like(values["logits/bias"], np.nan)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        variables = [tf.compat.v1.Variable(value, name=name) for name, value in values.items()]
        session.run(tf.compat.v1.global_variables_initializer())
        tf.compat.v1.train.Saver(variables).save(session, prefix, write_meta_graph=False, write_state=False)
    return directory_digest(os.path.join(model_uri, SERVING_SUBDIR))


def test_nan_loss_raises_training_error_and_exports_nothing(tmp_path, trained, examples, schema):
    ctx, outcome = trained
    base_uri = str(tmp_path / "nan_base")
    shutil.copytree(ctx.outputs["model"], base_uri)
    digest = poison_logits_bias(base_uri)
    base = Artifact(uri=base_uri, type_name="Model", properties={"digest": digest}, id=9)
    nan_ctx = make_ctx(
        tmp_path, examples, schema, base_model=base, warm_start=True, warm_start_steps=50, eval_every_steps=25
    )
    with pytest.raises(TrainingError, match=r"^NaN loss at step 1 of training"):
        executor.run(nan_ctx)
    assert os.listdir(nan_ctx.outputs["model"]) == []


def test_warm_start_loads_the_base_weights(tmp_path, trained, examples, schema):
    ctx, outcome = trained
    base = model_artifact(ctx, outcome)
    # Frozen weights: the eval accuracy is the base model's, not a fresh network's.
    warm_ctx = make_ctx(
        tmp_path,
        examples,
        schema,
        base_model=base,
        warm_start=True,
        warm_start_steps=5,
        eval_every_steps=5,
        **FROZEN,
    )
    warm = executor.run(warm_ctx).execution_properties
    assert warm["warm_started"] is True
    # Its own schedule: warm_start_steps, not the config's train_steps.
    assert warm["steps_trained"] == 5 != warm_ctx.params.train_steps
    assert warm["best_eval_accuracy"] == pytest.approx(
        outcome.execution_properties["best_eval_accuracy"], abs=1e-6
    )


def test_warm_start_refuses_a_tampered_base_model(tmp_path, trained, examples, schema):
    ctx, outcome = trained
    base_uri = str(tmp_path / "base")
    shutil.copytree(ctx.outputs["model"], base_uri)
    tamper_with_variables(base_uri)
    base = Artifact(
        uri=base_uri, type_name="Model", properties=dict(outcome.output_properties["model"]), id=5
    )
    bad_ctx = make_ctx(tmp_path, examples, schema, base_model=base, warm_start=True)
    with pytest.raises(ModelIntegrityError, match="does not match the recorded"):
        executor.run(bad_ctx)
    assert os.listdir(bad_ctx.outputs["model"]) == []


def test_warm_start_refuses_a_base_model_without_digest(tmp_path, trained, examples, schema):
    ctx, _ = trained
    base = Artifact(uri=ctx.outputs["model"], type_name="Model", properties={}, id=5)
    with pytest.raises(ModelIntegrityError, match="no recorded digest"):
        executor.run(make_ctx(tmp_path, examples, schema, base_model=base, warm_start=True))


def test_a_base_model_of_another_architecture_is_not_warm_started_from_and_says_why(
    tmp_path, trained, examples, schema, caplog
):
    ctx, outcome = trained
    wider = make_ctx(
        tmp_path,
        examples,
        schema,
        base_model=model_artifact(ctx, outcome),
        warm_start=True,
        dense_units=128,
        train_steps=6,
        warm_start_steps=3,
        eval_every_steps=6,
    )
    with caplog.at_level(logging.WARNING):
        props = executor.run(wider).execution_properties
    reason = r"base model .* has dense/bias of shape \[64\], this config needs \[128\]"
    assert props["warm_started"] is False and re.fullmatch(reason, props["warm_start_skipped"])
    assert props["steps_trained"] == 6  # the cold schedule, not warm_start_steps
    assert any(
        re.fullmatch(
            rf"not warm starting \(trainer.warm_start\): {reason}; training from scratch", r.getMessage()
        )
        for r in caplog.records
    )


def test_early_stopping_when_accuracy_cannot_improve(tmp_path, examples, schema):
    # Frozen weights keep eval accuracy constant: after 2 evaluations without an increase
    # training stops, far before the 1000-step budget.
    ctx = make_ctx(
        tmp_path,
        examples,
        schema,
        train_steps=1000,
        eval_every_steps=10,
        early_stopping_evals=2,
        best_checkpoint_tolerance=0.0,
        **FROZEN,
    )
    props = executor.run(ctx).execution_properties
    assert props["stopped_early"] is True
    assert 30 <= props["steps_trained"] < 50
    assert props["best_eval_step"] == 10  # tolerance 0: the earliest of equal evaluations
    assert os.path.isdir(os.path.join(ctx.outputs["model"], SERVING_SUBDIR))


def test_a_tolerance_exports_the_latest_of_equal_evaluations(tmp_path, examples, schema):
    # Frozen weights score the same at every evaluation: any tolerance picks the last one,
    # and the published model is that checkpoint's export.
    ctx = make_ctx(
        tmp_path,
        examples,
        schema,
        train_steps=30,
        eval_every_steps=10,
        early_stopping_evals=0,
        best_checkpoint_tolerance=0.001,
        **FROZEN,
    )
    outcome = executor.run(ctx)
    props = outcome.execution_properties
    assert props["steps_trained"] == 30
    assert props["best_eval_step"] == 30
    with open(os.path.join(ctx.outputs["model_run"], "training_history.json")) as f:
        assert json.load(f)["best_eval_step"] == 30


def test_missing_eval_split_is_an_input_error(tmp_path, schema):
    uri = str(tmp_path / "examples")
    write_split(uri, "train", real_records(10, 0))
    ctx = make_ctx(tmp_path, Artifact(uri=uri, type_name="Examples"), schema)
    with pytest.raises(InputDataError, match=r"Split-eval: split folder missing"):
        executor.run(ctx)


def test_empty_eval_split_is_an_input_error_before_training(tmp_path, schema):
    uri = str(tmp_path / "examples")
    write_split(uri, "train", real_records(10, 0))
    write_split(uri, "eval", [])
    ctx = make_ctx(tmp_path, Artifact(uri=uri, type_name="Examples"), schema)
    with pytest.raises(InputDataError, match=r"Split-eval: no records"):
        executor.run(ctx)
    assert os.listdir(ctx.outputs["model_run"]) == []


def test_schema_without_the_trainers_features_is_an_input_error(tmp_path, examples):
    uri = str(tmp_path / "schema")
    os.makedirs(uri)
    with open(os.path.join(uri, "schema.pbtxt"), "w") as f:
        f.write(SCHEMA.replace('name: "image" type: INT', 'name: "image" type: FLOAT'))
    ctx = make_ctx(tmp_path, examples, Artifact(uri=uri, type_name="Schema"))
    with pytest.raises(InputDataError, match=r"schema .*schema.pbtxt: feature 'image' is FLOAT"):
        executor.run(ctx)


def test_records_of_the_wrong_shape_are_an_input_error(tmp_path, schema):
    uri = str(tmp_path / "examples")
    short = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image": tf.train.Feature(int64_list=tf.train.Int64List(value=[0] * 100)),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[3])),
            }
        )
    ).SerializeToString()
    write_split(uri, "train", real_records(20, 0) + [short])
    write_split(uri, "eval", real_records(20, 20))
    ctx = make_ctx(
        tmp_path,
        Artifact(uri=uri, type_name="Examples"),
        schema,
        batch_size=21,
        train_steps=3,
        eval_every_steps=3,
    )
    with pytest.raises(
        InputDataError,
        match=r"examples .*records do not fit the trainer's features"
        r".*Key: image, Index: \d+\.  Number of int64 values",
    ):
        executor.run(ctx)
    assert os.listdir(ctx.outputs["model"]) == []


@pytest.mark.parametrize(
    "key, value", [("dense_units", 0), ("kernel_size", 0), ("keep_checkpoints", 0), ("eval_examples", 0)]
)
def test_config_rejects_unusable_trainer_sizes(key, value):
    from pipeline.config import load_config

    with pytest.raises(ConfigError, match=f"trainer.{key}"):
        load_config(overrides={"trainer": {key: value}})


def test_a_tensorflow_error_is_told_by_its_reason_not_its_traceback_header():
    message = (
        "Graph execution error:\n\nDetected at node 'conv1/Relu' defined at (most recent "
        "call last):\n  File \"run.py\", line 1, in <module>\n    main()\nNode: 'conv1/Relu'\n"
        "Value for attr 'T' of bfloat16 is not in the list of allowed values: half, float\n"
        "\t [[{{node conv1/Relu}}]]"
    )
    error = tf.errors.InvalidArgumentError(None, None, message)
    assert executor._first_line(error) == (
        "Value for attr 'T' of bfloat16 is not in the list of allowed values: half, float"
    )
    assert executor._first_line(ValueError("")) == "ValueError"
