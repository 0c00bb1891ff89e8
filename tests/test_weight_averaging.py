"""Weight averaging (trainer.weight_averaging_decay): the shadows that training keeps, the
weights that evaluation, the export and warm starting use, and the setting's checks."""

import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf
from mnist_slices import TRAIN_IMAGES, read_real
from test_trainer import FROZEN, examples, make_ctx, model_artifact, schema  # noqa: F401 (fixtures)

from components.trainer import executor, model, warm_start, weight_averaging
from pipeline.core.errors import ConfigError
from pipeline.formats.model import SERVING_SUBDIR

DECAY = 0.9


@pytest.fixture(scope="module")
def averaged(tmp_path_factory, examples, schema):  # noqa: F811
    """A real training run with weight averaging: 60 steps of 50, evaluated every 30."""
    tmp = tmp_path_factory.mktemp("averaged")
    ctx = make_ctx(
        tmp,
        examples,
        schema,
        train_steps=60,
        eval_every_steps=30,
        early_stopping_evals=0,
        weight_averaging_decay=DECAY,
    )
    return ctx, executor.run(ctx)


def checkpoint_values(prefix):
    return {name: tf.train.load_variable(prefix, name) for name, _ in tf.train.list_variables(prefix)}


def probabilities_with(values, params, images):
    """The network's probabilities on `images` with its trainable weights set to `values`
    ({variable name: array}), built without averaging."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        features = {model.IMAGE_KEY: tf.constant(images)}
        spec = model.model_fn(
            features, None, tf.estimator.ModeKeys.PREDICT, dict(params, weight_averaging_decay=0.0)
        )
        for variable in tf.compat.v1.trainable_variables():
            variable.load(values[variable.op.name], session)
        return session.run(spec.predictions["probabilities"])


def test_training_keeps_a_shadow_of_every_weight_that_differs_from_it(averaged):
    ctx, _ = averaged
    values = checkpoint_values(tf.train.latest_checkpoint(ctx.outputs["model_run"]))
    weights = [
        name
        for name in values
        if name.split("/")[0] in ("conv1", "conv2", "dense", "logits")
        and "Adam" not in name
        and not name.endswith(weight_averaging.SHADOW_SUFFIX)
    ]
    assert len(weights) == 8
    for name in weights:
        shadow = values[name + weight_averaging.SHADOW_SUFFIX]
        assert shadow.shape == values[name].shape
    # 60 Adam steps move the weights; an average over ~10 steps lags behind them.
    assert not np.allclose(values["logits/kernel"], values["logits/kernel" + weight_averaging.SHADOW_SUFFIX])


def test_the_export_serves_the_averaged_weights(averaged):
    ctx, outcome = averaged
    serving = os.path.join(ctx.outputs["model"], SERVING_SUBDIR)
    exported = checkpoint_values(os.path.join(serving, "variables", "variables"))
    assert "logits/kernel" + weight_averaging.SHADOW_SUFFIX in exported
    assert "logits/kernel" not in exported
    best_step = outcome.execution_properties["best_eval_step"]
    run_values = checkpoint_values(os.path.join(ctx.outputs["model_run"], f"model.ckpt-{best_step}"))
    shadows = {
        name[: -len(weight_averaging.SHADOW_SUFFIX)]: value
        for name, value in run_values.items()
        if name.endswith(weight_averaging.SHADOW_SUFFIX)
    }
    raw = {name: run_values[name] for name in shadows}

    images = read_real(TRAIN_IMAGES, 50, 600).reshape(50, 784).astype(np.float32)
    served = (
        tf.saved_model.load(serving)
        .signatures["serving_images"](images=tf.constant(images))["probabilities"]
        .numpy()
    )
    np.testing.assert_allclose(
        served, probabilities_with(shadows, dataclasses.asdict(ctx.params), images), atol=1e-5
    )
    assert not np.allclose(served, probabilities_with(raw, dataclasses.asdict(ctx.params), images), atol=1e-4)


def test_periodic_evaluations_score_the_averaged_weights(averaged, examples):  # noqa: F811
    ctx, outcome = averaged
    from components.trainer import inputs

    best_step = outcome.execution_properties["best_eval_step"]
    checkpoint = os.path.join(ctx.outputs["model_run"], f"model.ckpt-{best_step}")
    params = dict(dataclasses.asdict(ctx.params))
    estimator = tf.estimator.Estimator(model.model_fn, params=params)
    input_fn = inputs.make_input_fn(examples.uri, "eval", 100, training=False)
    averaged_accuracy = estimator.evaluate(input_fn, checkpoint_path=checkpoint)["accuracy"]
    assert outcome.execution_properties["best_eval_accuracy"] == pytest.approx(averaged_accuracy, abs=1e-6)


@pytest.mark.parametrize("decay", [0.0, DECAY])
def test_warm_start_loads_the_averaged_weights_the_base_served(
    tmp_path,
    averaged,
    examples,  # noqa: F811
    schema,  # noqa: F811
    decay,
):
    ctx, outcome = averaged
    base = model_artifact(ctx, outcome)
    # Frozen weights: the eval accuracy is the base model's served one, whether this run
    # averages or not.
    warm_ctx = make_ctx(
        tmp_path,
        examples,
        schema,
        base_model=base,
        warm_start=True,
        warm_start_steps=5,
        eval_every_steps=5,
        weight_averaging_decay=decay,
        **FROZEN,
    )
    warm = executor.run(warm_ctx).execution_properties
    assert warm["warm_started"] is True
    # The same network in the same precision, so the same weights score the same.
    assert warm["precision"] == outcome.execution_properties["precision"]
    assert warm["best_eval_accuracy"] == pytest.approx(
        outcome.execution_properties["best_eval_accuracy"], abs=1e-6
    )


def test_a_warm_start_with_averaging_starts_every_shadow_at_the_base_weight(averaged):
    """Every time: the graph's initializers run in no fixed order, and a shadow left to its own
    initializer copied its weight before or after the warm start had set it (about 1 in 4)."""
    ctx, _ = averaged
    checkpoint = os.path.join(ctx.outputs["model"], SERVING_SUBDIR, "variables", "variables")
    params = dataclasses.asdict(ctx.params)
    shapes, variables = warm_start.train_graph_variables(params, model.model_fn)
    starts = warm_start.starting_values(warm_start.check_compatible(checkpoint, shapes), variables)
    assert len(starts) == 16  # 8 weights and their 8 shadows
    settings = warm_start.settings(checkpoint, starts)
    with tf.Graph().as_default():
        tf.compat.v1.set_random_seed(1)
        tf.compat.v1.train.get_or_create_global_step()
        model.model_fn({model.IMAGE_KEY: tf.zeros([2, 784])}, tf.zeros([2], tf.int64), "train", params)
        tf.compat.v1.train.warm_start(*settings)  # as the Estimator does
        initialize = tf.compat.v1.global_variables_initializer()
        set_by_warm_start = {v.op.name: v for v in tf.compat.v1.global_variables() if v.op.name in starts}
        base = {name: tf.train.load_variable(checkpoint, starts[name]) for name in set_by_warm_start}
        for _ in range(50):
            with tf.compat.v1.Session() as session:
                session.run(initialize)
                values = session.run(set_by_warm_start)
            for name, value in values.items():
                np.testing.assert_array_equal(value, base[name], err_msg=name)


@pytest.mark.parametrize("decay", [-0.1, 0.5, 1.0, "0.99", True])
def test_an_unusable_decay_is_refused_naming_the_setting(decay):
    params = dict(
        conv1_filters=4,
        conv2_filters=8,
        kernel_size=5,
        dense_units=16,
        dropout_rate=0.4,
        learning_rate=1e-3,
        optimizer="adam",
        weight_averaging_decay=decay,
    )
    with pytest.raises(ConfigError, match=r"^config key trainer.weight_averaging_decay: must be 0"):
        model.hyperparameters(params)


def test_averaging_off_builds_no_shadows_and_the_default_scaffold():
    params = dict(
        conv1_filters=4,
        conv2_filters=8,
        kernel_size=5,
        dense_units=16,
        dropout_rate=0.4,
        learning_rate=1e-3,
        optimizer="adam",
    )
    with tf.Graph().as_default():
        features = {model.IMAGE_KEY: tf.zeros([2, 784])}
        tf.compat.v1.train.get_or_create_global_step()
        model.model_fn(features, tf.zeros([2], tf.int64), tf.estimator.ModeKeys.TRAIN, params)
        assert not any(
            v.op.name.endswith(weight_averaging.SHADOW_SUFFIX) for v in tf.compat.v1.global_variables()
        )
    with tf.Graph().as_default():
        spec = model.model_fn(
            features={model.IMAGE_KEY: tf.zeros([2, 784])},
            labels=None,
            mode=tf.estimator.ModeKeys.PREDICT,
            params=params,
        )
        assert spec.scaffold.saver is None
