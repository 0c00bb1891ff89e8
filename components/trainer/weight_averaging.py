"""Polyak averaging of the weights: an exponential moving average that evaluation and serving use.

Training updates the weights as before and, after each step, a shadow copy of every trainable
weight: `shadow = d * shadow + (1 - d) * weight` with `d = min(decay, (1 + step) / (10 + step))`,
so the shadow follows the weights closely at first and averages the last ~1 / (1 - decay) steps
later. The shadows are checkpointed next to the weights under the names `<weight>/ExponentialMovingAverage`.

EVAL and PREDICT graphs build the same network and restore each weight *from its shadow*
(a Scaffold whose Saver maps shadow names onto the weights). So the periodic evaluations, the
best-checkpoint choice and the exported SavedModel all see the averaged weights; the SavedModel's
variables keep the shadow names, and its own Saver (in the MetaGraph) restores them the same way.
`decay = 0` switches this off: no shadows, default Scaffold. The decays accepted besides 0 are
`TrainerParams`' rule (components/trainer/params.py).

Why: an average of the last weights sits nearer the middle of the minimum the optimizer circles
than any single step's weights (Polyak & Juditsky 1992), at the cost of one multiply-add per
weight per step.
"""

from __future__ import annotations

import tensorflow as tf

# The suffix tf.train.ExponentialMovingAverage gives each shadow variable.
SHADOW_SUFFIX = "/ExponentialMovingAverage"


def is_on(decay: float) -> bool:
    """Whether weight averaging is configured (`decay` > 0)."""
    return decay > 0


def averaging_train_op(
    train_op: tf.Operation, decay: float, global_step: tf.Tensor, variables
) -> tf.Operation:
    """Returns an op that runs `train_op`, then updates the shadows of `variables` with `decay`.

    With averaging off, returns `train_op` itself.
    """
    if not is_on(decay):
        return train_op
    average = tf.compat.v1.train.ExponentialMovingAverage(decay, num_updates=global_step)
    with tf.control_dependencies([train_op]):
        return average.apply(list(variables))


def restoring_scaffold(mode: str, decay: float, trainable_variables) -> tf.compat.v1.train.Scaffold | None:
    """For EVAL and PREDICT (`mode`, a tf.estimator.ModeKeys value) with averaging on: a Scaffold
    restoring `trainable_variables` from their shadows and every other global variable (the
    global step, ...) under its own name. None (the default Scaffold) in TRAIN or with averaging off."""
    if mode == tf.estimator.ModeKeys.TRAIN or not is_on(decay):
        return None
    trainable = list(trainable_variables)
    var_list = {variable.op.name + SHADOW_SUFFIX: variable for variable in trainable}
    names = {variable.op.name for variable in trainable}
    var_list.update(
        {
            variable.op.name: variable
            for variable in tf.compat.v1.global_variables()
            if variable.op.name not in names
        }
    )
    return tf.compat.v1.train.Scaffold(saver=tf.compat.v1.train.Saver(var_list, sharded=True))
