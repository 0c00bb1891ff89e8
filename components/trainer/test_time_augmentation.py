"""Test-time augmentation of the served model: each digit is classified by the mean of the
probabilities the network gives it and a few slightly moved copies of it.

`trainer.test_time_augmentation` names the copies (VIEW_SETS; "none" = the digit alone):
- "shifts": the digit and its shifts by 1 pixel left, right, up and down (5 forward passes);
- "shifts_rotations": those and rotations by +-6 degrees about the centre (7 forward passes).
The copies are resampled bilinearly by the trainer's own affine transform
(`augmentation.transform_images`), zeros filling the border: distortions of the kind training
saw. They apply in the PREDICT graph, so in the exported SavedModel, and so wherever it is
served (the Evaluator, the gate, `predict`); the trainer's periodic evaluations, which choose
the checkpoint, score the digit alone (benchmarks/bench_test_time_augmentation.py measured
the views to change eval accuracy by under 0.1 point, so they rank checkpoints alike).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import tensorflow as tf

from components.trainer import augmentation
from components.trainer.params import TEST_TIME_AUGMENTATIONS
from pipeline.formats.examples import IMAGE_SIDE

# (shift right, shift down in pixels, rotation in degrees) of each copy besides the digit.
_SHIFTS = ((1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0))
_ROTATIONS = ((0.0, 0.0, 6.0), (0.0, 0.0, -6.0))
# Keyed by the allowed values of `trainer.test_time_augmentation` (TrainerParams), in their
# order: "none", "shifts", "shifts_rotations".
VIEW_SETS = dict(zip(TEST_TIME_AUGMENTATIONS, ((), _SHIFTS, _SHIFTS + _ROTATIONS), strict=True))
KEY = "test_time_augmentation"


def view_count(hp: Mapping[str, Any]) -> int:
    """How many forward passes each digit takes under `hp[KEY]` (1 when absent or "none")."""
    return 1 + len(VIEW_SETS[hp.get(KEY, "none")])


def expand(images: tf.Tensor, hp: Mapping[str, Any]) -> tf.Tensor:
    """`images` [N, 784] (pixel values 0..255) followed by each copy of them, as [V * N, 784]
    float32 in view-major order (all N digits as they are, then all N of the first copy, ...);
    `images` unchanged when `hp` asks for no copies."""
    moves = VIEW_SETS[hp.get(KEY, "none")]
    if not moves:
        return images
    pixels = tf.cast(images, tf.float32)
    square = tf.reshape(pixels, [-1, IMAGE_SIDE, IMAGE_SIDE, 1])
    count = tf.shape(square)[:1]
    copies = [pixels]
    for shift_x, shift_y, degrees in moves:
        moved = augmentation.transform_images(
            square,
            tf.fill(count, degrees * math.pi / 180.0),
            tf.fill(count, shift_x),
            tf.fill(count, shift_y),
        )
        copies.append(tf.reshape(moved, [-1, IMAGE_SIDE * IMAGE_SIDE]))
    return tf.concat(copies, axis=0)


def served_images(images: tf.Tensor, hp: Mapping[str, Any], mode: str):
    """(images, V): in PREDICT, `expand(images, hp)` and its view count; in TRAIN and EVAL,
    `images` as they are and 1 (checkpoints are chosen on the digit alone)."""
    if mode != tf.estimator.ModeKeys.PREDICT or view_count(hp) == 1:
        return images, 1
    return expand(images, hp), view_count(hp)


def mean_probabilities(logits: tf.Tensor, views: int) -> tf.Tensor:
    """float32 [N, 10]: the softmax of `logits` [V * N, 10] (as `expand` ordered them) averaged
    over the V = `views` copies of each digit."""
    probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))
    if views == 1:
        return probabilities
    return tf.reduce_mean(tf.reshape(probabilities, [views, -1, probabilities.shape[-1]]), axis=0)
