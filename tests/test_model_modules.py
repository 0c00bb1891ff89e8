"""Bring your own model: `trainer.module_file` with either entry point, its checks before and at
training time, its digest in the cache key and the records, warm start across modules, the
shipped modules in models/, and `run_local.py compare`."""

import dataclasses
import json
import os
import re

import pytest
from step_context import step_context
from tiny_examples import real_split, write_examples_artifact

from pipeline.cli import main
from pipeline.config import PROJECT_ROOT, TrainerConfig, load_config
from pipeline.core.digest import file_digest
from pipeline.core.errors import ConfigError
from pipeline.core.step import Artifact
from pipeline.formats.model import SERVING_SUBDIR

# A model_fn that leaves accuracy and class_ids to the trainer and sizes itself from hparams.
MODEL_FN_MODULE = """
import tensorflow as tf


def model_fn(features, labels, mode, params):
    hidden = params["hparams"].get("hidden", 16)
    x = tf.cast(features["image"], tf.float32) / 255.0
    x = tf.keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    logits = tf.keras.layers.Dense(10, name="out")(x)
    predictions = {"probabilities": tf.nn.softmax(logits)}
    if mode == tf.estimator.ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(mode, predictions=predictions)
    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
    step = tf.compat.v1.train.get_or_create_global_step()
    train_op = tf.compat.v1.train.GradientDescentOptimizer(params["learning_rate"]).minimize(loss, step)
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op, predictions=predictions)
"""

KERAS_MODULE = """
import tensorflow as tf


def keras_model(params):
    return tf.keras.Sequential([tf.keras.layers.Flatten(),
                                tf.keras.layers.Dense(params["hparams"].get("units", 16), activation="relu"),
                                tf.keras.layers.Dense(10)])
"""

SCHEMA = """
feature { name: "image" type: INT value_count { min: 784 max: 784 } }
feature { name: "label" type: INT value_count { min: 1 max: 1 } }
"""
TINY = dict(train_steps=20, batch_size=20, eval_every_steps=10, early_stopping_evals=0, random_seed=3)


def write_module(folder, name, source) -> str:
    path = os.path.join(str(folder), name)
    with open(path, "w") as f:
        f.write(source)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """(examples, schema) artifacts: 200 real training digits, the next 60 as the eval split."""
    base = tmp_path_factory.mktemp("module_inputs")
    examples = write_examples_artifact(
        str(base / "examples"), {"train": real_split(200), "eval": real_split(60, offset=200)}
    )
    os.makedirs(base / "schema")
    (base / "schema" / "schema.pbtxt").write_text(SCHEMA)
    return (
        Artifact(examples, "Examples", {"split_counts": {"train": 200, "eval": 60}}, id=1),
        Artifact(str(base / "schema"), "Schema", id=2),
    )


def train(tmp_path, inputs, module_path, base_model=None, **overrides):
    """Runs the trainer executor as the runner would (module_file input by content digest)."""
    from components.trainer import executor

    examples, schema = inputs
    ctx_inputs = {
        "examples": examples,
        "schema": schema,
        "module_file": Artifact(module_path, "TrainerModule", {"content_digest": file_digest(module_path)}),
        "base_model": base_model,
    }
    ctx = step_context(
        "trainer",
        ctx_inputs,
        {key: str(tmp_path / key) for key in ("model", "model_run")},
        params=dataclasses.replace(TrainerConfig(), module_file=module_path, **{**TINY, **overrides}),
    )
    return ctx, executor.run(ctx)


def as_base_model(ctx, outcome):
    return Artifact(ctx.outputs["model"], "Model", dict(outcome.output_properties["model"]), id=5)


# ---- both entry points ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_fn_run(tmp_path_factory, inputs):
    folder = tmp_path_factory.mktemp("model_fn_module")
    path = write_module(folder, "my_model.py", MODEL_FN_MODULE)
    return (path, *train(folder, inputs, path, hparams={"hidden": 24}, optimizer="sgd", learning_rate=0.5))


def test_a_model_fn_module_trains_exports_and_records_itself(model_fn_run):
    path, ctx, outcome = model_fn_run
    props = outcome.execution_properties
    assert props["model_entry_point"] == "model_fn"
    assert props["module_file"] == path and props["module_digest"] == file_digest(path)
    assert outcome.output_properties["model"]["module_digest"] == file_digest(path)
    # The module computes no accuracy: the trainer added it to every evaluation.
    with open(os.path.join(ctx.outputs["model_run"], "training_history.json")) as f:
        history = json.load(f)
    assert [e["step"] for e in history["evaluations"]] == [10, 20]
    assert props["best_eval_accuracy"] > 0.25  # measured 0.43; chance is 0.1 (6 of the 60 eval digits)
    # Both signatures served, checked before the export was moved in (class_ids derived).
    assert sorted(os.listdir(os.path.join(ctx.outputs["model"], SERVING_SUBDIR))) == [
        "saved_model.pb",
        "variables",
    ]


def test_hparams_reach_the_module(model_fn_run):
    import tensorflow as tf

    _, ctx, _ = model_fn_run
    variables = os.path.join(ctx.outputs["model"], SERVING_SUBDIR, "variables", "variables")
    assert dict(tf.train.list_variables(variables))["hidden/kernel"] == [784, 24]


def test_a_keras_module_trains_with_the_trainers_settings(tmp_path, inputs):
    import tensorflow as tf

    path = write_module(tmp_path, "keras_net.py", KERAS_MODULE)
    ctx, outcome = train(
        tmp_path, inputs, path, hparams={"units": 12}, learning_rate=0.01, train_steps=80, eval_every_steps=40
    )
    props = outcome.execution_properties
    assert props["model_entry_point"] == "keras_model"
    assert props["best_eval_accuracy"] > 0.25  # measured 0.42 to 0.60 at 60 steps; chance is 0.1
    variables = os.path.join(ctx.outputs["model"], SERVING_SUBDIR, "variables", "variables")
    shapes = dict(tf.train.list_variables(variables))
    assert shapes["sequential/dense/kernel"] == [784, 12] and shapes["sequential/dense_1/kernel"] == [12, 10]
    # The trainer's optimizer (Adam by default), not the module's, trained it.
    checkpoint = tf.train.latest_checkpoint(ctx.outputs["model_run"])
    assert any("Adam" in name for name, _ in tf.train.list_variables(checkpoint))


def test_a_keras_module_is_served_with_its_averaged_weights(tmp_path, inputs):
    import numpy as np
    import tensorflow as tf

    from components.trainer.weight_averaging import SHADOW_SUFFIX

    path = write_module(tmp_path, "keras_net.py", KERAS_MODULE)
    ctx, outcome = train(
        tmp_path,
        inputs,
        path,
        hparams={"units": 12},
        learning_rate=0.01,
        train_steps=40,
        eval_every_steps=40,
        weight_averaging_decay=0.9,
    )
    variables = os.path.join(ctx.outputs["model"], SERVING_SUBDIR, "variables", "variables")
    exported = dict(tf.train.list_variables(variables))
    kernel = "sequential/dense/kernel"
    assert exported[kernel + SHADOW_SUFFIX] == [784, 12] and kernel not in exported
    checkpoint = tf.train.latest_checkpoint(ctx.outputs["model_run"])
    # The served kernel is the shadow (the average), which 40 steps have moved away from the weight.
    served = tf.train.load_variable(variables, kernel + SHADOW_SUFFIX)
    np.testing.assert_array_equal(served, tf.train.load_variable(checkpoint, kernel + SHADOW_SUFFIX))
    assert not np.allclose(served, tf.train.load_variable(checkpoint, kernel))


# ---- errors at training time: clear, naming the module, nothing exported ----------------------------
@pytest.mark.parametrize(
    "name, source, message",
    [
        (
            "import_error.py",
            "import not_a_module_anywhere\n\ndef model_fn(features, labels, mode, params):\n    pass\n",
            r"import failed: ModuleNotFoundError: No module named 'not_a_module_anywhere'",
        ),
        (
            "five_logits.py",
            KERAS_MODULE.replace("Dense(10)", "Dense(5)"),
            r"must map \[N, 28, 28, 1\] images to float logits \[N, 10\], got float32 \[None, 5\]",
        ),
        (
            "five_probabilities.py",
            MODEL_FN_MODULE.replace("Dense(10, ", "Dense(5, "),
            r"PREDICT 'probabilities' must be float32 \[N, 10\], got float32 \[None, 5\]",
        ),
        (
            "returns_dict.py",
            "def model_fn(features, labels, mode, params):\n    return {'loss': 0.0}\n",
            r"model_fn returned dict, expected a tf.estimator.EstimatorSpec",
        ),
        (
            "returns_function.py",
            "def keras_model(params):\n    return lambda x: x\n",
            r"keras_model\(params\) returned function, expected a tf.keras.Model",
        ),
    ],
)
def test_a_broken_module_is_a_config_error_naming_it_and_nothing_is_exported(
    tmp_path, inputs, name, source, message
):
    path = write_module(tmp_path, name, source)
    # float32: the messages name the logits' dtype, which under bfloat16 is bfloat16.
    with pytest.raises(ConfigError, match=rf"^trainer.module_file {re.escape(path)}: .*{message}") as error:
        train(tmp_path, inputs, path, precision="float32")
    assert error.value.exit_code == 2
    assert os.listdir(tmp_path / "model") == [] and os.listdir(tmp_path / "model_run") == []


# ---- warm start -----------------------------------------------------------------------------------
def test_warm_start_across_an_unchanged_module_loads_its_weights(tmp_path, inputs, model_fn_run):
    path, ctx, outcome = model_fn_run
    # A learning rate this small leaves the weights as they were: the base model's accuracy.
    warm = train(
        tmp_path,
        inputs,
        path,
        base_model=as_base_model(ctx, outcome),
        warm_start=True,
        hparams={"hidden": 24},
        optimizer="sgd",
        learning_rate=1e-12,
        warm_start_steps=5,
        eval_every_steps=5,
    )[1]
    assert warm.execution_properties["warm_started"] is True
    assert warm.execution_properties["best_eval_accuracy"] == pytest.approx(
        outcome.execution_properties["best_eval_accuracy"], abs=1e-6
    )


def test_a_changed_module_trains_from_scratch_saying_its_base_model_does_not_fit(
    tmp_path, inputs, model_fn_run
):
    path, ctx, outcome = model_fn_run
    # Same variables, other code: the module's digest decides, not the shapes.
    edited = write_module(
        tmp_path, "my_model.py", MODEL_FN_MODULE.replace('activation="relu"', 'activation="tanh"')
    )
    warm = train(
        tmp_path,
        inputs,
        edited,
        base_model=as_base_model(ctx, outcome),
        warm_start=True,
        hparams={"hidden": 24},
        train_steps=4,
        warm_start_steps=2,
        eval_every_steps=4,
    )[1].execution_properties
    assert warm["warm_started"] is False and warm["steps_trained"] == 4
    assert re.fullmatch(
        rf"base model .* was trained with {re.escape(path)} "
        rf"\(sha256 {file_digest(path)[:12]}\), this run's trainer.module_file "
        rf"{re.escape(edited)} has sha256 {file_digest(edited)[:12]}: the weights of another "
        "module would not fit its network",
        warm["warm_start_skipped"],
    )


# ---- through the pipeline ---------------------------------------------------------------------------
PIPELINE_CONFIG = """
[trainer]
module_file = "{module}"
train_steps = 20
batch_size = 20
eval_every_steps = 10
early_stopping_evals = 0

[trainer.hparams]
hidden = 8

[validation]
reference_check = false
"""
# Appended to the shipped configs: the drift check against the reference is not under test here.
SHIPPED_EXTRA = "\n[validation]\nreference_check = false\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, small_mnist):
    base = tmp_path_factory.mktemp("module_pipeline")
    return {"base": base, "data": small_mnist, "root": str(base / "root")}


def run(workspace, config_path, *extra, root=None):
    summary_path = str(workspace["base"] / "summary.json")
    if os.path.exists(summary_path):
        os.remove(summary_path)
    code = main(
        [
            "--config",
            str(config_path),
            "--data-root",
            workspace["data"],
            "--pipeline-root",
            root or workspace["root"],
            "--summary-json",
            summary_path,
            *extra,
        ]
    )
    summary = None
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
    return code, summary


def module_config(workspace, name, module_path) -> str:
    path = workspace["base"] / f"{name}.toml"
    path.write_text(PIPELINE_CONFIG.format(module=module_path))
    return str(path)


def test_editing_the_module_retrains_and_an_unchanged_module_stays_cached(workspace):
    module = write_module(workspace["base"], "edited_model.py", MODEL_FN_MODULE)
    config = module_config(workspace, "edited", module)
    code, first = run(workspace, config, "--to", "trainer")
    assert code == 0, first["message"]
    assert first["steps"]["trainer"]["state"] == "ran"
    assert first["model_module"] == {"path": module, "sha256": file_digest(module), "entry_point": "model_fn"}
    with open(first["report"]) as f:
        report = f.read()
    assert f'model module: <code title="{file_digest(module)}">{module}</code> (model_fn' in report

    code, again = run(workspace, config, "--to", "trainer")
    assert code == 0 and again["steps"]["trainer"]["state"] == "cached"

    with open(module, "a") as f:
        f.write("# a comment changes the bytes, so the digest, so the cache key\n")
    code, edited = run(workspace, config, "--to", "trainer")
    assert code == 0 and edited["steps"]["trainer"]["state"] == "ran"
    assert edited["model_module"]["sha256"] == file_digest(module) != first["model_module"]["sha256"]
    # ML Metadata: the model artifact records the module that made it.
    from pipeline.core.metadata import open_store

    store = open_store(workspace["root"])
    model_id = store.outputs_of(edited["steps"]["trainer"]["execution_id"])["model"]
    properties = store.artifact(model_id).properties
    assert properties["module_file"] == module and properties["module_digest"] == file_digest(module)


@pytest.mark.parametrize(
    "name, source, message",
    [
        (
            "syntax_error.py",
            "def model_fn(features, labels, mode, params)\n    pass\n",
            r"line 1: syntax error",
        ),
        (
            "no_entry.py",
            "def build(params):\n    pass\n",
            r"defines neither model_fn\(features, labels, mode, params\) nor keras_model\(params\)",
        ),
        (
            "both_entries.py",
            "def model_fn(f, l, m, p):\n    pass\n\ndef keras_model(params):\n    pass\n",
            r"defines both model_fn and keras_model; define exactly one",
        ),
    ],
)
def test_a_module_that_cannot_work_exits_2_before_any_step(
    workspace, tmp_path, capsys, name, source, message
):
    module = write_module(tmp_path, name, source)
    root = str(tmp_path / "root")
    code, summary = run(workspace, module_config(workspace, name[:-3], module), root=root)
    assert code == 2 and summary is None
    [line] = capsys.readouterr().err.strip().splitlines()
    assert re.match(rf"^error: config key trainer.module_file: {re.escape(module)}.*{message}", line), line
    assert not os.path.exists(root)  # nothing ran, nothing was written


def test_an_import_error_fails_the_trainer_with_exit_2_and_exports_nothing(workspace):
    module = write_module(
        workspace["base"], "needs_missing.py", "import not_installed_anywhere\n" + MODEL_FN_MODULE
    )
    code, summary = run(workspace, module_config(workspace, "needs_missing", module), "--to", "trainer")
    assert code == 2
    trainer = summary["steps"]["trainer"]
    assert trainer["state"] == "failed" and trainer["outputs"] == {}
    assert trainer["error"].startswith(f"trainer.module_file {module}: import failed: ModuleNotFoundError")
    assert not [
        name
        for name in os.listdir(os.path.join(workspace["root"], "trainer", "model"))
        if name.startswith(".staging")
    ]


def shipped_config(workspace, name) -> str:
    path = workspace["base"] / f"shipped_{name}.toml"
    path.write_text((PROJECT_ROOT / "models" / f"{name}.toml").read_text() + SHIPPED_EXTRA)
    return str(path)


def test_the_shipped_classic_cnn_config_trains_the_default_network(workspace, monkeypatch):
    monkeypatch.chdir(PROJECT_ROOT)  # the shipped configs name their modules from the repository root
    shipped = load_config(str(PROJECT_ROOT / "models" / "classic_cnn.toml")).trainer
    assert dataclasses.replace(shipped, module_file=os.path.abspath(shipped.module_file)) == TrainerConfig()
    code, summary = run(
        workspace, shipped_config(workspace, "classic_cnn"), "--to", "trainer", "--train-steps", "20"
    )
    assert code == 0, summary["message"]
    assert summary["model_module"]["path"] == str(PROJECT_ROOT / "models" / "classic_cnn.py")
    assert summary["steps"]["trainer"]["properties"]["steps_trained"] == 20


def test_compare_trains_the_shipped_keras_cnn_and_mlp_and_pairs_them(workspace, monkeypatch, capsys):
    monkeypatch.chdir(PROJECT_ROOT)
    code = main(
        [
            "compare",
            "--config",
            shipped_config(workspace, "keras_cnn"),
            "--config",
            shipped_config(workspace, "mlp"),
            "--data-root",
            workspace["data"],
            "--pipeline-root",
            workspace["root"],
            "--train-steps",
            "20",
        ]
    )
    assert code == 0
    page_path = capsys.readouterr().out.strip().splitlines()[-1]
    with open(os.path.join(os.path.dirname(page_path), "comparison.json")) as f:
        comparison = json.load(f)
    models = {m["name"]: m for m in comparison["models"]}
    assert set(models) == {"shipped_keras_cnn", "shipped_mlp"}
    assert models["shipped_keras_cnn"]["module_file"] == str(PROJECT_ROOT / "models" / "keras_cnn.py")
    assert models["shipped_mlp"]["entry_point"] == "keras_model"
    assert models["shipped_mlp"]["training"]["steps_trained"] == 20
    [pair] = comparison["pairs"]
    assert [c["slice"] for c in pair["comparisons"]] == ["overall"] + [f"label={d}" for d in range(10)]
    overall = pair["comparisons"][0]
    n = comparison["test_digits"]
    assert overall["n"] == n == models["shipped_mlp"]["n"] > 0
    # The statistics are the gate's, on these very outcomes.
    a, b = models["shipped_keras_cnn"], models["shipped_mlp"]
    assert overall["candidate_accuracy"] == pytest.approx(a["accuracy"], abs=1e-6)
    assert overall["baseline_accuracy"] == pytest.approx(b["accuracy"], abs=1e-6)
    assert overall["difference"] == pytest.approx(a["accuracy"] - b["accuracy"], abs=1e-6)
    assert overall["candidate_only"] - overall["baseline_only"] == a["correct"] - b["correct"]
    low, high = overall["difference_ci"]
    assert low <= overall["difference"] <= high
    # Holm over the ten digit slices: the smallest p gets alpha / 10.
    assert min(c["alpha"] for c in pair["comparisons"][1:]) == pytest.approx(comparison["alpha"] / 10)
    with open(page_path) as f:
        page = f.read()
    assert 'content="default-src &#x27;none&#x27;' in page and "<script" not in page
    assert "shipped_keras_cnn vs shipped_mlp" in page and pair["verdict"].split(":")[0] in page
    assert "McNemar p" in page and "<svg" in page and "models/keras_cnn.py" in page
    # Nothing was pushed: a comparison publishes nothing.
    assert not os.path.exists(os.path.join(workspace["root"], "serving"))


def test_compare_refuses_configs_that_test_on_different_digits(workspace, tmp_path):
    other = tmp_path / "other.toml"
    other.write_text("[evaluator]\nmax_examples = 10\n")
    with pytest.raises(ConfigError, match=rf"compare: {other} sets evaluator.max_examples = 10"):
        from pipeline.compare import load_entries

        load_entries([shipped_config(workspace, "mlp"), str(other)], {"pipeline_root": workspace["root"]})


def test_hparams_are_a_free_form_table_of_plain_values():
    import datetime

    table = {"filters": [8, 16], "head": {"units": 4, "act": "relu"}, "bn": True}
    assert load_config(overrides={"trainer": {"hparams": table}}).trainer.hparams == table
    with pytest.raises(ConfigError, match=r"config key trainer.hparams.head.when: expected a string, number"):
        load_config(overrides={"trainer": {"hparams": {"head": {"when": datetime.date(2026, 1, 1)}}}})
    with pytest.raises(ConfigError, match=r"config key trainer.hparams: expected dict"):
        load_config(overrides={"trainer": {"hparams": [1, 2]}})


def test_a_keras_module_trains_on_the_label_smoothed_loss_and_evaluates_on_the_plain_one():
    import numpy as np
    import tensorflow as tf

    from components.trainer import augmentation
    from components.trainer.keras_model_fn import keras_model_fn

    def seeded_model(params):  # the same weights in every graph
        return tf.keras.Sequential(
            [
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(
                    10, kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.05, seed=1)
                ),
            ]
        )

    wrapped = keras_model_fn(seeded_model, "seeded_module")
    images = np.random.default_rng(0).integers(0, 256, size=(8, 784))
    labels = np.arange(8) % 10
    losses = {}
    for mode in (tf.estimator.ModeKeys.TRAIN, tf.estimator.ModeKeys.EVAL):
        for smoothing in (0.0, 0.2):
            params = dict(
                dataclasses.asdict(TrainerConfig()),
                **augmentation.AUGMENTATION_OFF,
                label_smoothing=smoothing,
                hparams={},
                precision="float32",
            )
            with tf.Graph().as_default():
                tf.compat.v1.train.get_or_create_global_step()
                spec = wrapped({"image": tf.constant(images)}, tf.constant(labels), mode, params)
                with tf.compat.v1.Session() as session:
                    session.run(tf.compat.v1.global_variables_initializer())
                    losses[mode, smoothing] = session.run(spec.loss)
    train, evaluate = tf.estimator.ModeKeys.TRAIN, tf.estimator.ModeKeys.EVAL
    assert losses[train, 0.2] != pytest.approx(losses[train, 0.0], rel=1e-3)
    assert losses[evaluate, 0.2] == pytest.approx(losses[evaluate, 0.0], rel=1e-6)
    assert losses[evaluate, 0.0] == pytest.approx(losses[train, 0.0], rel=1e-6)  # same weights, no dropout
