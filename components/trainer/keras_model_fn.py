"""A module's `keras_model(params)` as an Estimator `model_fn`, with the trainer's settings.

The module builds only the network: a `tf.keras.Model` from float32 [N, 28, 28, 1] images in
[0, 1] to 10 logits. Everything else is the trainer's, configured in `[trainer]` and applied
outside the module's model, as for the classic network (`components.trainer.model`):

    image [N, 784] 0..255 -> scale to [0, 1], reshape [N, 28, 28, 1]
    -> (TRAIN) random rotation, shift, zoom and elastic distortion (the augment_* settings)
    -> the module's model, built under the `precision` policy (mixed_bfloat16: its layers
       compute in bfloat16) -> logits cast to float32 -> softmax
    TRAIN: cross-entropy (label-smoothed with `label_smoothing`) plus the model's own losses (regularizers), `optimizer` at
           `learning_rate` with `learning_rate_decay`, the model's update ops (batch norm)
    EVAL: loss, accuracy, mean_per_class_accuracy; PREDICT: class_ids, probabilities (with
    `test_time_augmentation`, averaged over moved copies of each digit).
    With `weight_averaging_decay`, TRAIN also keeps a moving average of the model's trainable
    weights, and EVAL and PREDICT restore those averages (components/trainer/weight_averaging.py).

Why a wrapper of our own rather than `tf.keras.estimator.model_to_estimator`: that converts a
*compiled* model, so the optimizer, its schedule and the loss would be the module's, the
augmentation would have to live inside the network (and so in the serving graph), and the
export would carry Keras' output names instead of the Model contract's `class_ids` and
`probabilities`. Here the network is the module's and the training is the pipeline's, so a
Keras module gets the same checkpoints, hooks, best export and signatures as the classic one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import tensorflow as tf

from components.trainer import augmentation, test_time_augmentation, weight_averaging
from components.trainer import model as trainer_model
from components.trainer.estimator_contract import MODEL_LOSS_COLLECTION, serving_outputs
from pipeline.core.errors import ConfigError
from pipeline.formats.examples import IMAGE_KEY, NUM_CLASSES
from pipeline.formats.model import CLASS_IDS, PROBABILITIES


@contextlib.contextmanager
def _global_policy(name: str):
    """Keras' global dtype policy set to `name` while the module builds its layers."""
    previous = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        tf.keras.mixed_precision.set_global_policy(previous)


def _logits(keras_model: Callable, params, images: tf.Tensor, hp: dict, training: bool, where: str):
    """float32 logits [N, 10] of the module's model on `images` [N, 784] (0..255), and the model."""
    x = trainer_model.scale_images(images)
    if training:
        x = augmentation.augment(x, hp)
    with _global_policy(hp["precision"]):
        network = keras_model(params)
    if not isinstance(network, tf.keras.Model):
        raise ConfigError(
            f"{where}: keras_model(params) returned {type(network).__name__}, expected a tf.keras.Model"
        )
    logits = network(x, training=training)
    if (
        not isinstance(logits, tf.Tensor)
        or not logits.dtype.is_floating
        or logits.shape.rank != 2
        or logits.shape[-1] != NUM_CLASSES
    ):
        got = (
            f"{logits.dtype.name} {logits.shape.as_list() if logits.shape.rank is not None else '?'}"
            if isinstance(logits, tf.Tensor)
            else type(logits).__name__
        )
        raise ConfigError(
            f"{where}: the keras_model must map [N, 28, 28, 1] images to float logits "
            f"[N, {NUM_CLASSES}], got {got}"
        )
    return tf.cast(logits, tf.float32), network


def keras_model_fn(keras_model: Callable, where: str) -> Callable:
    """The Estimator model_fn training `keras_model(params)` as the module docstring says.

    where: the module file, named in errors. The returned model_fn raises ConfigError when
    the module's model is not a tf.keras.Model or its output is not [N, 10] float logits, and
    for unusable trainer settings (`components.trainer.model.hyperparameters`).
    """

    def model_fn(features, labels, mode, params):
        hp = trainer_model.hyperparameters(params)
        training = mode == tf.estimator.ModeKeys.TRAIN
        images, views = test_time_augmentation.served_images(features[IMAGE_KEY], hp, mode)
        logits, network = _logits(keras_model, params, images, hp, training, where)
        probabilities, class_ids = trainer_model.probabilities_and_class_ids(logits, views)
        decay = hp["weight_averaging_decay"]
        scaffold = weight_averaging.restoring_scaffold(mode, decay, network.trainable_variables)
        if mode == tf.estimator.ModeKeys.PREDICT:
            return tf.estimator.EstimatorSpec(
                mode=mode,
                predictions={CLASS_IDS: class_ids, PROBABILITIES: probabilities},
                export_outputs=serving_outputs(class_ids, probabilities),
                scaffold=scaffold,
            )

        labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
        loss = trainer_model.loss(labels, logits, hp, mode)
        if network.losses:
            loss = tf.add(loss, tf.add_n([tf.cast(x, tf.float32) for x in network.losses]), name="total_loss")
        tf.compat.v1.add_to_collection(MODEL_LOSS_COLLECTION, loss)
        if mode == tf.estimator.ModeKeys.EVAL:
            return tf.estimator.EstimatorSpec(
                mode=mode,
                loss=loss,
                scaffold=scaffold,
                eval_metric_ops={
                    "accuracy": tf.compat.v1.metrics.accuracy(labels, class_ids),
                    "mean_per_class_accuracy": tf.compat.v1.metrics.mean_per_class_accuracy(
                        labels, class_ids, NUM_CLASSES
                    ),
                },
            )

        global_step = tf.compat.v1.train.get_or_create_global_step()
        rate = trainer_model.learning_rate(hp, global_step)
        tf.compat.v1.summary.scalar("learning_rate", rate)
        with tf.control_dependencies(network.updates):
            train_op = trainer_model.optimizer(hp, rate).minimize(
                loss, global_step=global_step, var_list=network.trainable_variables
            )
        train_op = weight_averaging.averaging_train_op(
            train_op, decay, global_step, network.trainable_variables
        )
        tf.compat.v1.summary.scalar(
            "train_batch_accuracy", tf.reduce_mean(tf.cast(tf.equal(class_ids, labels), tf.float32))
        )
        return tf.estimator.EstimatorSpec(mode=mode, loss=loss, train_op=train_op)

    return model_fn
