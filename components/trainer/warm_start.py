"""Warm starting from a previously exported model (the latest pushed one).

The base model's weights are read from its SavedModel variables checkpoint,
`<uri>/Format-Serving/variables/variables`. Before any weight is used the model's files must
match the digest recorded when it was exported, it must have been trained from a module file
with the same content as this run's (another module's weights belong to another network), and
every trainable variable of the network that this config builds must exist in the base
checkpoint with the same shape. A base model exported before models recorded their module is
checked by variable shapes alone. A base model trained with weight averaging
(`trainer.weight_averaging_decay`) stores each weight as its average, under the shadow name
`<weight>/ExponentialMovingAverage`: that average, the weight it served with, is the one loaded.
A run that averages starts each shadow from the same base value as its weight (`starting_values`).
"""

from __future__ import annotations

import os
import re
from typing import Any

import tensorflow as tf

from components.trainer.weight_averaging import SHADOW_SUFFIX
from pipeline.core.errors import ConfigError, ModelIntegrityError
from pipeline.core.step import Artifact
from pipeline.formats.examples import IMAGE_KEY, IMAGE_PIXELS
from pipeline.formats.model import MODULE_DIGEST, MODULE_FILE, verify_model


class BaseModelMismatch(ConfigError):
    """The base model's weights do not fit this run's network (trained from another module, or
    a variable missing or of another shape): the trainer trains from scratch instead and says
    why. Unlike a base model whose files fail their digest (ModelIntegrityError), this is not a
    fault, only a warm start that cannot be."""


def base_checkpoint(base_model: Artifact) -> str:
    """Returns the checkpoint prefix of `base_model` after checking its recorded digest.

    Raises ModelIntegrityError when the model has no recorded digest, its Format-Serving folder
    is missing, or its files no longer match the digest.
    """
    return os.path.join(verify_model(base_model, "base model"), "variables", "variables")


def train_graph_variables(params: Any, model_fn) -> tuple[dict[str, list], frozenset[str]]:
    """Returns ({trainable variable name: shape}, the names of all global variables) of the
    TRAIN graph `model_fn` builds for `params`."""
    with tf.Graph().as_default():
        features = {IMAGE_KEY: tf.compat.v1.placeholder(tf.float32, [None, IMAGE_PIXELS])}
        labels = tf.compat.v1.placeholder(tf.int64, [None])
        model_fn(features, labels, tf.estimator.ModeKeys.TRAIN, params)
        return (
            {v.op.name: v.shape.as_list() for v in tf.compat.v1.trainable_variables()},
            frozenset(v.op.name for v in tf.compat.v1.global_variables()),
        )


def check_same_module(base_model: Artifact, module) -> None:
    """Raises BaseModelMismatch when `base_model` records a module digest other than `module`'s (a
    `user_module.LoadedModule`); a base model without a recorded module passes."""
    recorded = (base_model.properties or {}).get(MODULE_DIGEST)
    if recorded is None or recorded == module.digest:
        return
    trained_with = (base_model.properties or {}).get(MODULE_FILE, "an unnamed module")
    raise BaseModelMismatch(
        f"base model {base_model.uri} was trained with {trained_with} (sha256 "
        f"{str(recorded)[:12]}), this run's trainer.module_file {module.path} has sha256 "
        f"{module.digest[:12]}: the weights of another module would not fit its network"
    )


def check_compatible(checkpoint: str, shapes: dict[str, list]) -> dict[str, str]:
    """Returns {variable name: its name in the base checkpoint} for every trainable variable of
    the network, given as {name: shape} (the shadow name where the base model served averaged
    weights).

    Raises BaseModelMismatch when the base checkpoint lacks a variable the network needs or has
    it with another shape (the architecture changed since the base model was trained)."""
    try:
        available = dict(tf.train.list_variables(checkpoint))
    except (tf.errors.OpError, ValueError) as e:
        raise ModelIntegrityError(f"base model checkpoint {checkpoint}: unreadable ({e})") from e
    names = {}
    for name, shape in sorted(shapes.items()):
        if name + SHADOW_SUFFIX in available:
            names[name] = name + SHADOW_SUFFIX
        elif name in available:
            names[name] = name
        else:
            raise BaseModelMismatch(f"base model {checkpoint} has no variable {name!r}")
        if list(available[names[name]]) != shape:
            raise BaseModelMismatch(
                f"base model {checkpoint} has {name} of shape {list(available[names[name]])}, "
                f"this config needs {shape}"
            )
    return names


def starting_values(names: dict[str, str], variables: frozenset[str]) -> dict[str, str]:
    """{variable name: base checkpoint name} for every variable a warm start sets: each weight of
    `names` (`check_compatible`), and the shadow that a run with weight averaging keeps of it
    (among `variables`, the graph's global variable names), from the same base value.

    Why the shadows: a shadow's own initializer copies its weight when that is already
    initialized and the weight's random initial value otherwise, and the initializers of one
    graph run in no fixed order. Left to it, a warm-started shadow began at the random
    initialization in about one start of four, and the averaged weights that evaluation and the
    export use drifted from the base's."""
    starts = dict(names)
    for name, base_name in names.items():
        if name + SHADOW_SUFFIX in variables:
            starts[name + SHADOW_SUFFIX] = base_name
    return starts


def settings(checkpoint: str, starts: dict[str, str]) -> tf.estimator.WarmStartSettings:
    """WarmStartSettings that set exactly the variables of `starts` ({variable name: base
    checkpoint name}, `starting_values`) from `checkpoint`; optimizer slots and the global step
    start fresh."""
    return tf.estimator.WarmStartSettings(
        ckpt_to_initialize_from=checkpoint,
        # Each name as a pattern that matches that variable (or its partitions) and no other.
        vars_to_warm_start=[re.escape(name) + r"(/part_\d+)?:0$" for name in sorted(starts)],
        var_name_to_prev_var_name={name: base for name, base in starts.items() if base != name} or None,
    )


def verified_starts(base_model: Artifact, params: Any, module) -> tuple[str, dict[str, str]]:
    """Verifies `base_model` (digest, module, then variable shapes of the network `module`, a
    `user_module.LoadedModule`, builds) and returns (its checkpoint prefix, `starting_values`):
    all its trainable weights, and the shadows of them a run with weight averaging keeps.

    Raises ModelIntegrityError (digest) or BaseModelMismatch (another module, incompatible
    architecture).
    """
    checkpoint = base_checkpoint(base_model)
    check_same_module(base_model, module)
    shapes, variables = train_graph_variables(params, module.model_fn)
    return checkpoint, starting_values(check_compatible(checkpoint, shapes), variables)


def warm_start_settings(base_model: Artifact, params: Any, module) -> tf.estimator.WarmStartSettings:
    """`settings` for what `verified_starts` returns; raises as it does."""
    return settings(*verified_starts(base_model, params, module))
