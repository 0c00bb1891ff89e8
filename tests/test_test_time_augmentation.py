"""Test-time augmentation (`trainer.test_time_augmentation`): the copies each digit is served
with, the PREDICT graph's probabilities as the mean over them (classic model_fn and Keras
modules), training and evaluation untouched, and bad settings refused naming the key."""

import math

import numpy as np
import pytest
import tensorflow as tf
from tiny_examples import real_split

from components.trainer import augmentation, model
from components.trainer import test_time_augmentation as tta
from components.trainer.keras_model_fn import keras_model_fn
from pipeline.core.errors import ConfigError

SMALL = dict(
    conv1_filters=4,
    conv2_filters=8,
    kernel_size=5,
    dense_units=16,
    dropout_rate=0.4,
    learning_rate=1e-3,
    optimizer="adam",
    augment_max_shift=2.0,
    augment_max_rotation=10.0,
)


def _digits(n=8):
    digits = real_split(n)
    return np.asarray(digits.images, np.float32), np.asarray(digits.labels, np.int64)


def _moved(images, shift_x, shift_y, degrees):
    """`images` [N, 784] moved as the trainer's augmentation would, computed on its own."""
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        square = tf.reshape(tf.constant(images), [-1, 28, 28, 1])
        n = images.shape[0]
        moved = augmentation.transform_images(
            square,
            tf.fill([n], degrees * math.pi / 180.0),
            tf.fill([n], float(shift_x)),
            tf.fill([n], float(shift_y)),
        )
        return session.run(tf.reshape(moved, [-1, 784]))


def _input_fn(images, labels=None):
    def input_fn():
        features = {model.IMAGE_KEY: images}
        data = (features, labels) if labels is not None else features
        return tf.data.Dataset.from_tensor_slices(data).batch(4)

    return input_fn


def _probabilities(estimator, images):
    return np.stack([p["probabilities"] for p in estimator.predict(_input_fn(images))])


def test_the_view_sets_are_the_digit_and_its_documented_moves():
    assert tta.view_count({}) == tta.view_count({tta.KEY: "none"}) == 1
    assert tta.view_count({tta.KEY: "shifts"}) == 5
    assert tta.view_count({tta.KEY: "shifts_rotations"}) == 7
    images, _ = _digits(3)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        assert tta.expand(tf.constant(images), {tta.KEY: "none"}).shape.as_list() == [3, 784]
        expanded = session.run(tta.expand(tf.constant(images), {tta.KEY: "shifts_rotations"}))
    assert expanded.shape == (21, 784)
    np.testing.assert_array_equal(expanded[:3], images)
    # A 1-pixel shift right moves every ink pixel one column right (bilinear at whole pixels).
    right = images.reshape(3, 28, 28)
    np.testing.assert_allclose(expanded[3:6].reshape(3, 28, 28)[:, :, 1:], right[:, :, :-1], atol=1e-3)
    np.testing.assert_allclose(expanded[15:18], _moved(images, 0, 0, 6), atol=1e-4)


@pytest.mark.parametrize("build", ["classic", "keras"])
def test_the_served_probabilities_are_the_mean_over_the_moved_copies(tmp_path, build):
    images, labels = _digits(8)
    if build == "classic":
        model_fn = model.model_fn
    else:
        model_fn = keras_model_fn(
            lambda params: tf.keras.Sequential(
                [
                    tf.keras.layers.Flatten(),
                    tf.keras.layers.Dense(32, activation="relu"),
                    tf.keras.layers.Dense(10),
                ]
            ),
            "inline_module",
        )
    params = dict(SMALL, hparams={})
    trained = tf.estimator.Estimator(
        model_fn, model_dir=str(tmp_path), params=params, config=tf.estimator.RunConfig(tf_random_seed=1)
    )
    trained.train(
        lambda: tf.data.Dataset.from_tensor_slices(({model.IMAGE_KEY: images}, labels)).repeat().batch(8),
        max_steps=30,
    )
    plain = tf.estimator.Estimator(model_fn, model_dir=str(tmp_path), params=params)
    served = tf.estimator.Estimator(
        model_fn, model_dir=str(tmp_path), params=dict(params, test_time_augmentation="shifts_rotations")
    )

    copies = [images] + [_moved(images, *move) for move in tta.VIEW_SETS["shifts_rotations"]]
    expected = np.mean([_probabilities(plain, copy) for copy in copies], axis=0)
    got = _probabilities(served, images)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, _probabilities(plain, images), atol=1e-4)  # the copies do count
    class_ids = np.array([p["class_ids"] for p in served.predict(_input_fn(images))])
    np.testing.assert_array_equal(class_ids, got.argmax(axis=1))
    # Evaluation (which chooses the checkpoint) scores the digit alone, with or without views.
    assert served.evaluate(_input_fn(images, labels)) == plain.evaluate(_input_fn(images, labels))


@pytest.mark.parametrize("value", ["shift", "", 5, None])
def test_a_bad_setting_is_refused_naming_the_key(value):
    with tf.Graph().as_default(), pytest.raises(ConfigError, match="trainer.test_time_augmentation"):
        model.model_fn(
            {model.IMAGE_KEY: tf.zeros([1, 784])},
            None,
            tf.estimator.ModeKeys.PREDICT,
            dict(SMALL, test_time_augmentation=value),
        )
