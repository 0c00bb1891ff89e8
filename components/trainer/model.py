"""The classic digit classifier (the default module, models/classic_cnn.py) and its
`tf.estimator` contract; its scaling, augmentation, learning-rate and optimizer helpers also
serve the Keras wrapper (`keras_model_fn`).

`model_fn(features, labels, mode, params)` builds, for every mode, the same network:

    image [N, 784] (0..255, int or float) -> scale to [0, 1] -> reshape [N, 28, 28, 1]
    -> (TRAIN only, when configured) random rotation, shift, zoom and elastic distortion of each
       digit (components/trainer/augmentation.py)
    -> conv k x k, conv1_filters, ReLU -> max-pool 2x2
    -> conv k x k, conv2_filters, ReLU -> max-pool 2x2
    -> dense dense_units, ReLU -> dropout dropout_rate (TRAIN only) -> 10 logits

and returns a `tf.estimator.EstimatorSpec`:
- TRAIN: softmax cross-entropy loss (label-smoothed with `label_smoothing`; registered in the
  LOSSES collection, where the training hooks find it) and the optimizer's train op;
- EVAL: the loss plus `accuracy` and `mean_per_class_accuracy`;
- PREDICT: `class_ids` (int64 [N]) and `probabilities` (float32 [N, 10]), exported as the
  `serving_default` PredictOutput.
With `test_time_augmentation`, PREDICT (and so the export) averages the probabilities over moved
copies of each digit (components/trainer/test_time_augmentation.py).
With `weight_averaging_decay` > 0, TRAIN also updates a moving average of every weight, and EVAL
and PREDICT restore the averages instead of the weights (components/trainer/weight_averaging.py).

`params` holds the hyperparameters: a mapping or a `TrainerParams` with the keys in
`HYPERPARAMETERS`, and optionally those in `OPTIONAL_HYPERPARAMETERS` (their defaults leave
training plain: no augmentation, a constant learning rate, float32, no weight averaging).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from components.trainer import augmentation, precision, test_time_augmentation, weight_averaging
from components.trainer.params import TrainerParams
from pipeline.core.errors import ConfigError
from pipeline.formats.examples import IMAGE_KEY, IMAGE_SIDE, MAX_PIXEL, NUM_CLASSES
from pipeline.formats.model import CLASS_IDS, PROBABILITIES

HYPERPARAMETERS = (
    "conv1_filters",
    "conv2_filters",
    "kernel_size",
    "dense_units",
    "dropout_rate",
    "learning_rate",
    "optimizer",
)
# Optional keys and the values that switch them off.
OPTIONAL_HYPERPARAMETERS = {
    **augmentation.AUGMENTATION_OFF,  # the augment_* keys (components/trainer/augmentation.py)
    "learning_rate_decay": "none",  # "cosine": decay to 1% of learning_rate over train_steps
    "precision": "float32",  # "mixed_bfloat16": bfloat16 compute, float32 weights; "auto"
    "weight_averaging_decay": 0.0,  # evaluate and serve a moving average of the weights
    "label_smoothing": 0.0,  # train towards (1 - e) on the label + e / 10 on every class
    "test_time_augmentation": "none",  # serve the mean over moved copies of each digit
}
# The learning rate at the end of a cosine decay, as a fraction of the initial one.
COSINE_FINAL_FRACTION = 0.01


def hyperparameters(params: Any) -> dict:
    """Returns the network's hyperparameters from `params` (a mapping or a dataclass).

    Raises ConfigError naming the first missing or unusable key (`TrainerParams`' checks).
    """
    if dataclasses.is_dataclass(params):
        params = dataclasses.asdict(params)
    if not isinstance(params, Mapping):
        raise ConfigError(f"model_fn params: expected a mapping of hyperparameters, got {params!r}")
    missing = [key for key in HYPERPARAMETERS if key not in params]
    if missing:
        raise ConfigError(f"model_fn params: missing trainer.{missing[0]}")
    hp = {key: params[key] for key in HYPERPARAMETERS}
    hp.update({key: params.get(key, default) for key, default in OPTIONAL_HYPERPARAMETERS.items()})
    # The rules of TrainerParams, the one home of every trainer setting's check (a TrainerParams
    # arrives checked; a plain mapping from a caller of model_fn is checked here by them).
    hp = {key: TrainerParams.check_setting(key, value) for key, value in hp.items()}
    if hp["learning_rate_decay"] != "none":
        if "train_steps" not in params:
            raise ConfigError(
                "config key trainer.train_steps: a learning_rate_decay needs train_steps, got none"
            )
        hp["train_steps"] = TrainerParams.check_setting("train_steps", params["train_steps"])
    hp["precision"] = precision.resolve(hp["precision"])[0]
    return hp


def scale_images(images: tf.Tensor) -> tf.Tensor:
    """[N, 784] pixel values 0..255 (any numeric dtype) -> float32 [N, 28, 28, 1] in [0, 1]."""
    scaled = tf.cast(images, tf.float32) / float(MAX_PIXEL)
    return tf.reshape(scaled, [-1, IMAGE_SIDE, IMAGE_SIDE, 1])


def build_logits(images: tf.Tensor, hp: Mapping[str, Any], training: bool) -> tf.Tensor:
    """Returns float32 logits [N, 10] for `images` [N, 784] (0..255).

    Layers are named so that variable names are stable across graphs (warm starting and
    checkpoints rely on them): conv1, conv2, dense, logits.
    """
    kernel = hp["kernel_size"]
    # Hidden layers compute in the policy's dtype; the logits layer always in float32, so the
    # softmax and the loss keep full precision. Weights are float32 either way.
    policy = tf.keras.mixed_precision.Policy(hp.get("precision", "float32"))
    x = scale_images(images)
    if training:
        x = augmentation.augment(x, hp)
    x = tf.keras.layers.Conv2D(
        hp["conv1_filters"], kernel, padding="same", activation="relu", name="conv1", dtype=policy
    )(x)
    x = tf.keras.layers.MaxPool2D(2, 2, name="pool1", dtype=policy)(x)
    x = tf.keras.layers.Conv2D(
        hp["conv2_filters"], kernel, padding="same", activation="relu", name="conv2", dtype=policy
    )(x)
    x = tf.keras.layers.MaxPool2D(2, 2, name="pool2", dtype=policy)(x)
    x = tf.keras.layers.Flatten(name="flatten", dtype=policy)(x)
    x = tf.keras.layers.Dense(hp["dense_units"], activation="relu", name="dense", dtype=policy)(x)
    # Keras layers take the training flag explicitly: Estimator graphs have no learning phase.
    x = tf.keras.layers.Dropout(hp["dropout_rate"], name="dropout", dtype=policy)(x, training=training)
    return tf.keras.layers.Dense(NUM_CLASSES, name="logits", dtype="float32")(x)


def learning_rate(hp: Mapping[str, Any], global_step: tf.Tensor) -> tf.Tensor:
    """The learning rate at `global_step`: constant, or cosine-decayed over train_steps."""
    rate = tf.constant(hp["learning_rate"], tf.float32)
    if hp.get("learning_rate_decay", "none") == "cosine":
        rate = tf.compat.v1.train.cosine_decay(
            rate, global_step, hp["train_steps"], alpha=COSINE_FINAL_FRACTION
        )
    return rate


def probabilities_and_class_ids(logits: tf.Tensor, views: int):
    """(probabilities float32 [N, 10], class_ids int64 [N]) named as the Model contract names
    them, from `logits` [V * N, 10] of `views` copies of each digit
    (`test_time_augmentation.served_images`)."""
    probabilities = tf.identity(test_time_augmentation.mean_probabilities(logits, views), name=PROBABILITIES)
    return probabilities, tf.argmax(probabilities, axis=1, output_type=tf.int64, name=CLASS_IDS)


def loss(labels: tf.Tensor, logits: tf.Tensor, hp: Mapping[str, Any], mode: str) -> tf.Tensor:
    """Mean softmax cross-entropy of `logits` [N, 10] against int64 `labels` [N], registered in the
    LOSSES collection. In TRAIN with `label_smoothing` e > 0 the target is smoothed (1 - e on the
    label, plus e / 10 on every class); EVAL always reports the plain cross-entropy, so eval
    losses compare across settings."""
    smoothing = hp.get("label_smoothing", 0.0)
    if mode == tf.estimator.ModeKeys.TRAIN and smoothing:
        return tf.compat.v1.losses.softmax_cross_entropy(
            tf.one_hot(labels, NUM_CLASSES), logits, label_smoothing=smoothing
        )
    return tf.compat.v1.losses.sparse_softmax_cross_entropy(labels=labels, logits=logits)


def optimizer(hp: Mapping[str, Any], rate: tf.Tensor):
    """The configured tf.compat.v1 optimizer (adam or sgd) at learning rate `rate`."""
    if hp["optimizer"] == "adam":
        return tf.compat.v1.train.AdamOptimizer(learning_rate=rate)
    return tf.compat.v1.train.GradientDescentOptimizer(learning_rate=rate)


def model_fn(
    features: Mapping[str, tf.Tensor], labels: tf.Tensor, mode: str, params: Any
) -> tf.estimator.EstimatorSpec:
    """The tf.estimator model function (see the module docstring for the network).

    features: {"image": [N, 784] pixel values 0..255}; other keys are ignored.
    labels: int [N] or [N, 1] digit labels 0..9 (None in PREDICT).
    mode: a tf.estimator.ModeKeys value.
    params: hyperparameters (see `hyperparameters`).
    Raises ConfigError for missing or bad hyperparameters, ValueError when `image` is absent.
    """
    hp = hyperparameters(params)
    if IMAGE_KEY not in features:
        raise ValueError(f"model_fn: feature {IMAGE_KEY!r} missing (got {sorted(features)})")
    images, views = test_time_augmentation.served_images(features[IMAGE_KEY], hp, mode)
    logits = build_logits(images, hp, training=mode == tf.estimator.ModeKeys.TRAIN)
    decay = hp["weight_averaging_decay"]
    scaffold = weight_averaging.restoring_scaffold(mode, decay, tf.compat.v1.trainable_variables())
    probabilities, class_ids = probabilities_and_class_ids(logits, views)

    if mode == tf.estimator.ModeKeys.PREDICT:
        predictions = {CLASS_IDS: class_ids, PROBABILITIES: probabilities}
        return tf.estimator.EstimatorSpec(
            mode=mode,
            predictions=predictions,
            scaffold=scaffold,
            export_outputs={
                tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: tf.estimator.export.PredictOutput(
                    predictions
                ),
            },
        )

    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    mean_loss = loss(labels, logits, hp, mode)

    if mode == tf.estimator.ModeKeys.EVAL:
        return tf.estimator.EstimatorSpec(
            mode=mode,
            loss=mean_loss,
            scaffold=scaffold,
            eval_metric_ops={
                "accuracy": tf.compat.v1.metrics.accuracy(labels, class_ids),
                "mean_per_class_accuracy": tf.compat.v1.metrics.mean_per_class_accuracy(
                    labels, class_ids, NUM_CLASSES
                ),
            },
        )

    global_step = tf.compat.v1.train.get_or_create_global_step()
    rate = learning_rate(hp, global_step)
    tf.compat.v1.summary.scalar("learning_rate", rate)
    train_op = optimizer(hp, rate).minimize(mean_loss, global_step=global_step)
    train_op = weight_averaging.averaging_train_op(
        train_op, decay, global_step, tf.compat.v1.trainable_variables()
    )
    batch_accuracy = tf.reduce_mean(tf.cast(tf.equal(class_ids, labels), tf.float32))
    tf.compat.v1.summary.scalar("train_batch_accuracy", batch_accuracy)
    return tf.estimator.EstimatorSpec(
        mode=mode,
        loss=mean_loss,
        train_op=train_op,
    )
