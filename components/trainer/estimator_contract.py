"""The Estimator contract a module's `model_fn` must honour, and the trainer's side of it.

`honour_contract(user_model_fn, where)` returns a model_fn that calls the module's and checks
and completes what it returns, in every mode:

- the result must be a `tf.estimator.EstimatorSpec`;
- PREDICT: `predictions` holds `probabilities` float32 [N, 10]; `class_ids` int64 [N] is
  derived (argmax) when absent. The serving signature is always exactly `class_ids` and
  `probabilities` (the Model contract), whatever `export_outputs` the module set;
- EVAL and TRAIN: `loss` is a float32 scalar; TRAIN also has a `train_op`. The loss is put in
  `MODEL_LOSS_COLLECTION`, where the training hooks watch it;
- EVAL: `accuracy` is added to the eval metrics when the module does not compute it, from
  the spec's `class_ids` or `probabilities` prediction.

Anything else raises ConfigError naming `where` (the module file). `check_contract` builds a
model_fn once per mode in a scratch graph, so a module that breaks the contract fails before
any training step, and nothing is exported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from pipeline.core.errors import ConfigError, PipelineError
from pipeline.formats.examples import IMAGE_KEY, IMAGE_PIXELS, NUM_CLASSES
from pipeline.formats.model import CLASS_IDS, PROBABILITIES

# The training loss the hooks watch (NaN guard, progress): one tensor, whatever else the
# module registers in tf.compat.v1's LOSSES collection.
MODEL_LOSS_COLLECTION = "pipeline_model_loss"
ACCURACY = "accuracy"
MODES = (tf.estimator.ModeKeys.TRAIN, tf.estimator.ModeKeys.EVAL, tf.estimator.ModeKeys.PREDICT)


def _describe(tensor) -> str:
    if not isinstance(tensor, tf.Tensor):
        return type(tensor).__name__
    return f"{tensor.dtype.name} {tensor.shape.as_list() if tensor.shape.rank is not None else 'of unknown rank'}"


def _check_tensor(where: str, what: str, tensor, dtype, shape: list) -> None:
    """Raises ConfigError unless `tensor` has `dtype` and a static shape compatible with `shape`."""
    ok = (
        isinstance(tensor, tf.Tensor)
        and tensor.dtype == dtype
        and tensor.shape.rank == len(shape)
        and all(want is None or have in (None, want) for have, want in zip(tensor.shape.as_list(), shape))
    )
    if not ok:
        wanted = "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"
        raise ConfigError(f"{where}: {what} must be {dtype.name} {wanted}, got {_describe(tensor)}")


def serving_outputs(class_ids: tf.Tensor, probabilities: tf.Tensor) -> dict:
    """The export outputs of the Model contract: `serving_default` -> class_ids, probabilities."""
    return {
        tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY: tf.estimator.export.PredictOutput(
            {CLASS_IDS: class_ids, PROBABILITIES: probabilities}
        )
    }


def _predict_spec(spec, where: str) -> tf.estimator.EstimatorSpec:
    predictions = spec.predictions
    if not isinstance(predictions, dict) or PROBABILITIES not in predictions:
        raise ConfigError(
            f"{where}: model_fn in PREDICT mode must return predictions with "
            f"'{PROBABILITIES}' float32 [N, {NUM_CLASSES}]"
        )
    probabilities = predictions[PROBABILITIES]
    _check_tensor(where, f"PREDICT '{PROBABILITIES}'", probabilities, tf.float32, [None, NUM_CLASSES])
    predictions = dict(predictions)
    if CLASS_IDS in predictions:
        _check_tensor(where, f"PREDICT '{CLASS_IDS}'", predictions[CLASS_IDS], tf.int64, [None])
    else:
        predictions[CLASS_IDS] = tf.argmax(probabilities, axis=1, output_type=tf.int64, name=CLASS_IDS)
    return tf.estimator.EstimatorSpec(
        mode=spec.mode,
        predictions=predictions,
        export_outputs=serving_outputs(predictions[CLASS_IDS], probabilities),
        scaffold=spec.scaffold,
        prediction_hooks=spec.prediction_hooks,
    )


def _class_ids_of(spec):
    predictions = spec.predictions if isinstance(spec.predictions, dict) else {}
    if CLASS_IDS in predictions:
        return tf.cast(tf.reshape(predictions[CLASS_IDS], [-1]), tf.int64)
    if PROBABILITIES in predictions:
        return tf.argmax(predictions[PROBABILITIES], axis=1, output_type=tf.int64)
    return None


def _eval_spec(spec, labels, where: str) -> tf.estimator.EstimatorSpec:
    metrics = dict(spec.eval_metric_ops or {})
    if ACCURACY not in metrics:
        class_ids = _class_ids_of(spec)
        if class_ids is None:
            raise ConfigError(
                f"{where}: model_fn in EVAL mode returns no '{ACCURACY}' metric and no "
                f"'{CLASS_IDS}' or '{PROBABILITIES}' prediction to compute it from"
            )
        labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
        metrics[ACCURACY] = tf.compat.v1.metrics.accuracy(labels, class_ids)
    return tf.estimator.EstimatorSpec(
        mode=spec.mode,
        predictions=spec.predictions,
        loss=spec.loss,
        eval_metric_ops=metrics,
        scaffold=spec.scaffold,
        evaluation_hooks=spec.evaluation_hooks,
    )


def honour_contract(user_model_fn: Callable, where: str) -> Callable:
    """A model_fn calling `user_model_fn` and checking and completing its EstimatorSpec (see the
    module docstring). Raises ConfigError naming `where` when the spec breaks the contract."""

    def model_fn(features, labels, mode, params):
        spec = user_model_fn(features, labels, mode, params)
        if not isinstance(spec, tf.estimator.EstimatorSpec):
            raise ConfigError(
                f"{where}: model_fn returned {type(spec).__name__}, expected a tf.estimator.EstimatorSpec"
            )
        if mode == tf.estimator.ModeKeys.PREDICT:
            return _predict_spec(spec, where)
        _check_tensor(where, f"{mode} loss", spec.loss, tf.float32, [])
        tf.compat.v1.add_to_collection(MODEL_LOSS_COLLECTION, spec.loss)
        if mode == tf.estimator.ModeKeys.EVAL:
            return _eval_spec(spec, labels, where)
        if spec.train_op is None:
            raise ConfigError(f"{where}: model_fn in TRAIN mode returned no train_op")
        return spec

    return model_fn


def check_contract(model_fn: Callable, params: Any, where: str) -> None:
    """Builds `model_fn` in each mode in a scratch graph, on inputs shaped as the trainer feeds
    them (features {"image": float32 [N, 784]}, labels int64 [N]).

    Raises the model_fn's ConfigError (the contract, or the classic network's settings), or
    ConfigError naming `where` for any other error raised while the graph is built.
    """
    for mode in MODES:
        with tf.Graph().as_default():
            features = {IMAGE_KEY: tf.compat.v1.placeholder(tf.float32, [None, IMAGE_PIXELS], name=IMAGE_KEY)}
            labels = (
                None
                if mode == tf.estimator.ModeKeys.PREDICT
                else tf.compat.v1.placeholder(tf.int64, [None], name="labels")
            )
            tf.compat.v1.train.get_or_create_global_step()
            try:
                model_fn(features, labels, mode, params)
            except PipelineError:
                raise
            except Exception as e:  # noqa: BLE001 - the module's own code: say where it failed
                first = (str(e).strip().splitlines() or [""])[0]
                raise ConfigError(
                    f"{where}: building the model in {mode} mode failed: {type(e).__name__}: {first}"
                ) from e
