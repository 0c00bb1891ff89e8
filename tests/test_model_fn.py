"""The trainer's model_fn: its TRAIN / EVAL / PREDICT contract and the Estimator around it."""

import math
import types

import numpy as np
import pytest
import tensorflow as tf

from components.trainer import augmentation, model
from components.trainer.exporters import BestAccuracyExporter, EvalHistory, choose, is_better
from components.trainer.hooks import NonFiniteLossHook, model_loss
from pipeline.core.errors import ConfigError, TrainingError

SMALL = dict(
    conv1_filters=4,
    conv2_filters=8,
    kernel_size=5,
    dense_units=16,
    dropout_rate=0.4,
    learning_rate=1e-3,
    optimizer="adam",
)
N = 6


def random_batch(n=N, seed=0, dtype=np.int64):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 784)).astype(dtype)
    labels = rng.integers(0, 10, size=n).astype(np.int64)
    return images, labels


def run_spec(mode, params=SMALL, images=None, labels=None):
    """Builds model_fn in a fresh graph, initialises it, returns (graph, spec, session)."""
    if images is None:
        images, labels = random_batch()
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.set_random_seed(1)
        features = {model.IMAGE_KEY: tf.constant(images)}
        label_tensor = None if mode == tf.estimator.ModeKeys.PREDICT else tf.constant(labels)
        if mode == tf.estimator.ModeKeys.TRAIN:
            tf.compat.v1.train.get_or_create_global_step()
        spec = model.model_fn(features, label_tensor, mode, params)
        session = tf.compat.v1.Session(graph=graph)
        session.run([tf.compat.v1.global_variables_initializer(), tf.compat.v1.local_variables_initializer()])
    return graph, spec, session


def test_train_mode_returns_train_op_and_finite_loss():
    graph, spec, session = run_spec(tf.estimator.ModeKeys.TRAIN)
    with graph.as_default(), session:
        assert spec.train_op is not None
        step_before = session.run(tf.compat.v1.train.get_global_step())
        losses = [session.run([spec.loss, spec.train_op])[0] for _ in range(3)]
        assert all(math.isfinite(loss) for loss in losses)
        assert session.run(tf.compat.v1.train.get_global_step()) == step_before + 3
        assert model_loss() is spec.loss


def test_sgd_optimizer_is_used_when_asked():
    graph, spec, session = run_spec(tf.estimator.ModeKeys.TRAIN, dict(SMALL, optimizer="sgd"))
    with graph.as_default(), session:
        names = [v.op.name for v in tf.compat.v1.global_variables()]
        assert not any("Adam" in name for name in names)
    graph, spec, session = run_spec(tf.estimator.ModeKeys.TRAIN, SMALL)
    with graph.as_default(), session:
        assert any("Adam" in v.op.name for v in tf.compat.v1.global_variables())


def test_eval_mode_returns_accuracy_matching_predictions():
    images, labels = random_batch(n=40, seed=3)
    graph, spec, session = run_spec(tf.estimator.ModeKeys.EVAL, images=images, labels=labels)
    with graph.as_default(), session:
        assert spec.train_op is None
        assert set(spec.eval_metric_ops) == {"accuracy", "mean_per_class_accuracy"}
        class_ids = graph.get_tensor_by_name("class_ids:0")
        updates = {k: op for k, (_, op) in spec.eval_metric_ops.items()}
        predicted, _ = session.run([class_ids, updates])
        accuracy = session.run(spec.eval_metric_ops["accuracy"][0])
        assert accuracy == pytest.approx(np.mean(predicted == labels))
        assert math.isfinite(session.run(spec.loss))


def test_predict_mode_returns_class_ids_and_probabilities():
    images, _ = random_batch(n=7)
    graph, spec, session = run_spec(tf.estimator.ModeKeys.PREDICT, images=images)
    with graph.as_default(), session:
        assert spec.loss is None and spec.train_op is None
        out = session.run(spec.predictions)
    assert set(out) == {"class_ids", "probabilities"}
    assert out["class_ids"].shape == (7,) and out["class_ids"].dtype == np.int64
    assert out["probabilities"].shape == (7, 10) and out["probabilities"].dtype == np.float32
    np.testing.assert_allclose(out["probabilities"].sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out["class_ids"], out["probabilities"].argmax(axis=1))
    serving = spec.export_outputs[tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY]
    assert isinstance(serving, tf.estimator.export.PredictOutput)
    assert set(serving.outputs) == {"class_ids", "probabilities"}


def test_params_shape_the_network():
    shapes = {}
    for name, params in {
        "default": SMALL,
        "wide": dict(SMALL, dense_units=32, conv1_filters=6, kernel_size=3),
    }.items():
        graph, _, session = run_spec(tf.estimator.ModeKeys.PREDICT, params)
        with graph.as_default(), session:
            shapes[name] = {v.op.name: v.shape.as_list() for v in tf.compat.v1.trainable_variables()}
    assert shapes["default"]["conv1/kernel"] == [5, 5, 1, 4]
    assert shapes["default"]["conv2/kernel"] == [5, 5, 4, 8]
    assert shapes["default"]["dense/kernel"] == [7 * 7 * 8, 16]
    assert shapes["default"]["logits/kernel"] == [16, 10]
    assert shapes["wide"]["conv1/kernel"] == [3, 3, 1, 6]
    assert shapes["wide"]["dense/kernel"] == [7 * 7 * 8, 32]


def test_images_are_scaled_inside_the_model():
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        ints = session.run(model.scale_images(tf.constant([[0] * 783 + [255]], tf.int64)))
        floats = session.run(model.scale_images(tf.constant([[0.0] * 783 + [255.0]])))
    assert ints.shape == (1, 28, 28, 1)
    assert ints[0, 27, 27, 0] == 1.0 and ints.max() == 1.0
    np.testing.assert_array_equal(ints, floats)


def test_dropout_applies_in_training_only():
    images, _ = random_batch(n=4)
    params = dict(SMALL, dropout_rate=0.5)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        tf.compat.v1.set_random_seed(7)
        x = tf.constant(images, tf.float32)
        train_logits = model.build_logits(x, params, training=True)
        with tf.compat.v1.variable_scope("infer"):
            infer_logits = model.build_logits(x, params, training=False)
        session.run(tf.compat.v1.global_variables_initializer())
        a, b = session.run(train_logits), session.run(train_logits)
        c, d = session.run(infer_logits), session.run(infer_logits)
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(c, d)


@pytest.mark.parametrize(
    "params, key",
    [
        ({k: v for k, v in SMALL.items() if k != "dense_units"}, "dense_units"),
        (dict(SMALL, optimizer="rmsprop"), "optimizer"),
        (dict(SMALL, dropout_rate=1.0), "dropout_rate"),
        (dict(SMALL, conv2_filters=0), "conv2_filters"),
        (dict(SMALL, label_smoothing=0.6), "label_smoothing"),
        (dict(SMALL, label_smoothing=-0.1), "label_smoothing"),
        (dict(SMALL, label_smoothing="0.1"), "label_smoothing"),
    ],
)
def test_bad_params_raise_config_error_naming_the_key(params, key):
    with tf.Graph().as_default(), pytest.raises(ConfigError, match=key):
        model.model_fn(
            {model.IMAGE_KEY: tf.zeros([1, 784])},
            tf.zeros([1], tf.int64),
            tf.estimator.ModeKeys.TRAIN,
            params,
        )


def _numpy_input_fn(images, labels, batch, repeat):
    def input_fn():
        dataset = tf.data.Dataset.from_tensor_slices(({model.IMAGE_KEY: images}, labels))
        dataset = dataset.repeat() if repeat else dataset
        return dataset.batch(batch)

    return input_fn


def test_estimator_trains_evaluates_and_predicts(tmp_path):
    images, labels = random_batch(n=12, seed=5, dtype=np.float32)
    estimator = tf.estimator.Estimator(model.model_fn, model_dir=str(tmp_path), params=SMALL)
    estimator.train(_numpy_input_fn(images, labels, 4, repeat=True), max_steps=2)
    assert estimator.get_variable_value("global_step") == 2
    metrics = estimator.evaluate(_numpy_input_fn(images, labels, 4, repeat=False))
    assert 0.0 <= metrics["accuracy"] <= 1.0 and math.isfinite(metrics["loss"])
    assert metrics["global_step"] == 2
    predictions = list(estimator.predict(_numpy_input_fn(images, labels, 4, repeat=False)))
    assert len(predictions) == 12
    assert predictions[0]["probabilities"].shape == (10,)
    assert predictions[0]["class_ids"] == predictions[0]["probabilities"].argmax()


def test_non_finite_loss_hook_names_the_step():
    with tf.Graph().as_default():
        global_step = tf.compat.v1.train.get_or_create_global_step()
        # Finite for the first two steps, NaN from the third on.
        loss = tf.where(global_step >= 2, tf.constant(np.nan), tf.constant(1.0))
        train_op = tf.compat.v1.assign_add(global_step, 1)
        hook = NonFiniteLossHook(loss)
        with tf.compat.v1.train.MonitoredSession(hooks=[hook]) as session:
            session.run(train_op)
            session.run(train_op)
            with pytest.raises(TrainingError, match=r"^NaN loss at step 3 "):
                session.run(train_op)


def test_diverging_estimator_training_raises_training_error(tmp_path):
    # Pixel values near float32's limit overflow the activations within a few steps.
    images, labels = random_batch(n=8, dtype=np.float32)
    images *= np.float32(1e36)
    estimator = tf.estimator.Estimator(
        model.model_fn, model_dir=str(tmp_path), params=SMALL, config=tf.estimator.RunConfig(tf_random_seed=1)
    )
    with pytest.raises(TrainingError, match=r"^(NaN|Inf) loss at step \d+ "):
        estimator.train(
            _numpy_input_fn(images, labels, 8, repeat=True), max_steps=20, hooks=[NonFiniteLossHook()]
        )
    # Training ended at the failing step: no final checkpoint was written after the initial one.
    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("model.ckpt-0")


def test_is_better_prefers_accuracy_then_lower_loss():
    assert is_better({"accuracy": 0.8, "loss": 0.1}, {"accuracy": 0.9, "loss": 0.5})
    assert not is_better({"accuracy": 0.9, "loss": 0.1}, {"accuracy": 0.8, "loss": 0.05})
    assert is_better({"accuracy": 0.9, "loss": 0.3}, {"accuracy": 0.9, "loss": 0.2})
    assert not is_better({"accuracy": 0.9, "loss": 0.2}, {"accuracy": 0.9, "loss": 0.2})
    with pytest.raises(ValueError, match="accuracy"):
        is_better({"loss": 0.2}, {"accuracy": 0.9, "loss": 0.2})


def test_eval_history_keeps_one_record_per_step_and_finds_the_best():
    import logging

    history = EvalHistory(logging.getLogger("test"), tolerance=0.0)
    for step, acc, loss in [(10, 0.5, 1.0), (20, 0.7, 0.8), (30, 0.7, 0.9), (30, 0.6, 0.9)]:
        history.export(None, "", "", {"global_step": step, "accuracy": acc, "loss": loss}, False)
    assert [r["step"] for r in history.evaluations] == [10, 20, 30]
    assert history.evaluations[-1]["accuracy"] == 0.6
    assert history.best()["step"] == 20


# Eval accuracies of an annealing run: a mid-schedule lead of one point over the annealed end.
ANNEALING = [
    (1, 0.950, 0.30),
    (2, 0.975, 0.20),
    (3, 0.970, 0.15),
    (4, 0.972, 0.12),
    (5, 0.971, 0.11),
    (6, 0.940, 0.40),
]


def _records(rows):
    return [{"step": s, "accuracy": a, "loss": loss} for s, a, loss in rows]


def test_choose_takes_the_latest_within_the_tolerance_of_the_best():
    records = _records(ANNEALING)
    assert choose(records, 0.005)["step"] == 5  # 0.971 >= 0.975 - 0.005; step 6 is not
    assert choose(records, 0.0035)["step"] == 4  # 0.971 < 0.9715 <= 0.972
    assert choose(records, 0.001)["step"] == 2  # nothing else is near the best
    assert choose(records, 1.0)["step"] == 6  # 1 = the last evaluation
    assert choose(records, 0.0)["step"] == 2
    assert choose([], 0.001) is None
    for tolerance in (0.0, 0.001):
        with pytest.raises(ValueError, match="accuracy"):
            choose([{"step": 1, "loss": 0.1}], tolerance)
        with pytest.raises(ValueError, match="non-finite"):
            choose([{"step": 1, "accuracy": float("nan"), "loss": 0.1}], tolerance)


def test_choose_counts_a_lead_of_exactly_the_tolerance_as_within_it():
    # 2,000 eval digits: tolerance 0.001 is 2 digits. TensorFlow reports float32 accuracies,
    # whose difference rounds either way of 0.001 depending on the values.
    n = 2000
    for correct in range(1800, 1998):
        top, near = np.float32((correct + 2) / n), np.float32(correct / n)
        records = [
            {"step": 1, "accuracy": top, "loss": 0.1},
            {"step": 2, "accuracy": near, "loss": 0.1},
            {"step": 3, "accuracy": np.float32((correct - 1) / n), "loss": 0.1},
        ]
        assert choose(records, 0.001)["step"] == 2, correct


def test_choose_with_no_tolerance_is_the_best_with_ties_to_lower_loss_then_earliest():
    records = _records([(1, 0.9, 0.3), (2, 0.9, 0.2), (3, 0.9, 0.2), (4, 0.8, 0.1)])
    assert choose(records, 0.0)["step"] == 2
    assert choose(records, 1e-9)["step"] == 3  # any tolerance: the latest of the equals


def test_eval_history_best_uses_its_tolerance():
    import logging

    history = EvalHistory(logging.getLogger("test"), tolerance=0.005)
    for step, acc, loss in ANNEALING:
        history.export(None, "", "", {"global_step": step, "accuracy": acc, "loss": loss}, False)
    assert history.best()["step"] == 5


class _FakeSavedModelExporter:
    """Stands in for BestExporter's SavedModel writer: records which steps were exported."""

    def __init__(self):
        self.steps = []

    def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
        self.steps.append(eval_result["global_step"])
        return f"{export_path}/{eval_result['global_step']}".encode()


@pytest.mark.parametrize("tolerance", [0.0, 0.001, 0.0035, 0.005, 1.0])
def test_best_exporter_exports_what_choose_picks_over_the_whole_run(tmp_path, tolerance):
    import logging

    history = EvalHistory(logging.getLogger("test"), tolerance=tolerance)
    exporter = BestAccuracyExporter(lambda: None, history)
    writer = exporter._saved_model_exporter = _FakeSavedModelExporter()
    exporter._garbage_collect_exports = lambda export_path: None
    # A step evaluated again (EvalHistory keeps one record of it) is not exported twice.
    estimator = types.SimpleNamespace(model_dir=str(tmp_path))
    for step, acc, loss in ANNEALING + [ANNEALING[-1]]:
        # In the EvalSpec's order: the history records, then the exporter exports.
        for each in (history, exporter):
            each.export(
                estimator,
                str(tmp_path),
                "",
                {"global_step": step, "accuracy": acc, "loss": loss},
                is_the_final_export=False,
            )
    picked = choose(_records(ANNEALING), tolerance)["step"]
    assert exporter.best_eval_result["global_step"] == picked
    assert exporter.best_export_dir == f"{tmp_path}/{picked}"
    assert writer.steps[-1] == picked and len(writer.steps) == len(set(writer.steps))


def test_best_exporter_refuses_to_run_before_the_history():
    import logging

    history = EvalHistory(logging.getLogger("test"), tolerance=0.001)
    exporter = BestAccuracyExporter(lambda: None, history)
    with pytest.raises(RuntimeError, match="before the EvalHistory"):
        exporter.export(
            types.SimpleNamespace(model_dir=""),
            "",
            "",
            {"global_step": 1, "accuracy": 0.5, "loss": 1.0},
            False,
        )


def _transform(image, angle=0.0, shift_x=0.0, shift_y=0.0):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        batch = tf.constant(image[None, :, :, None], tf.float32)
        out = augmentation.transform_images(
            batch,
            tf.constant([angle], tf.float32),
            tf.constant([shift_x], tf.float32),
            tf.constant([shift_y], tf.float32),
        )
        return session.run(out)[0, :, :, 0]


def test_transform_shifts_and_rotates_as_documented():
    image = np.zeros((28, 28), np.float32)
    image[5:12, 9] = 1.0  # a vertical stroke
    image[5, 9:15] = 1.0  # with a bar to the right at its top
    np.testing.assert_allclose(_transform(image), image, atol=1e-6)
    shifted = np.zeros_like(image)
    shifted[7:, 3:] = image[:-7, :-3]
    np.testing.assert_allclose(_transform(image, shift_x=3, shift_y=7), shifted, atol=1e-6)
    # A quarter turn counter-clockwise, as np.rot90 turns an array as displayed.
    np.testing.assert_allclose(_transform(image, angle=math.pi / 2), np.rot90(image), atol=1e-5)


def test_augmentation_runs_in_training_only_and_leaves_serving_untouched():
    params = dict(SMALL, augment_max_shift=2.0, augment_max_rotation=10.0)

    def ops(mode):
        graph, _, _ = run_spec(mode, params)
        return {op.type for op in graph.get_operations()}

    assert "ImageProjectiveTransformV3" in ops(tf.estimator.ModeKeys.TRAIN)
    assert "ImageProjectiveTransformV3" not in ops(tf.estimator.ModeKeys.EVAL)
    assert "ImageProjectiveTransformV3" not in ops(tf.estimator.ModeKeys.PREDICT)


def test_cosine_decay_and_bfloat16_are_options_of_params():
    params = dict(SMALL, learning_rate_decay="cosine", train_steps=100, precision="mixed_bfloat16")
    graph, spec, session = run_spec(tf.estimator.ModeKeys.TRAIN, params)
    with graph.as_default():
        step = tf.compat.v1.train.get_global_step()
        rate = model.learning_rate(model.hyperparameters(params), step)
        assert session.run(rate) == pytest.approx(1e-3)
        session.run(step.assign(100))
        assert session.run(rate) == pytest.approx(1e-5)
        conv = [op for op in graph.get_operations() if op.type == "Conv2D"]
        assert conv and all(op.outputs[0].dtype == tf.bfloat16 for op in conv)
        assert spec.loss.dtype == tf.float32 and np.isfinite(session.run(spec.loss))
    with tf.Graph().as_default(), pytest.raises(ConfigError, match="train_steps"):
        model.model_fn(
            {model.IMAGE_KEY: tf.zeros([1, 784])},
            tf.zeros([1], tf.int64),
            tf.estimator.ModeKeys.TRAIN,
            dict(SMALL, learning_rate_decay="cosine"),
        )


def _cross_entropy(logits, targets):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(np.mean(-(targets * log_softmax).sum(axis=1)))


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_shapes_the_training_loss_only(smoothing):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(N, 10)).astype(np.float32) * 3
    labels = rng.integers(0, 10, size=N)
    one_hot = np.eye(10)[labels]
    hp = model.hyperparameters(dict(SMALL, label_smoothing=smoothing))
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        train, evaluate = session.run(
            [
                model.loss(tf.constant(labels), tf.constant(logits), hp, tf.estimator.ModeKeys.TRAIN),
                model.loss(tf.constant(labels), tf.constant(logits), hp, tf.estimator.ModeKeys.EVAL),
            ]
        )
    assert train == pytest.approx(
        _cross_entropy(logits, one_hot * (1 - smoothing) + smoothing / 10), rel=1e-5
    )
    assert evaluate == pytest.approx(_cross_entropy(logits, one_hot), rel=1e-5)


def test_model_fn_trains_on_the_smoothed_loss():
    images, labels = random_batch()
    losses = {}
    for smoothing in (0.0, 0.2):
        graph, spec, session = run_spec(
            tf.estimator.ModeKeys.TRAIN, dict(SMALL, label_smoothing=smoothing), images, labels
        )
        with graph.as_default(), session:
            losses[smoothing] = session.run(spec.loss)
            assert model_loss() is spec.loss
    # Same seed, same initial weights and batch: only the target differs.
    assert losses[0.2] != pytest.approx(losses[0.0], rel=1e-3)
