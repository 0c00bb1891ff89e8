"""The evaluator's metrics and plots per slice, computed together in numpy from the rows of one
pass, under TFMA's own keys, so that TFMA's writer stores them exactly where and how its metrics
evaluator would (`tfma.load_eval_result`, `load_metrics`, `load_plots` read them unchanged).

TFMA 0.46 runs every metric combiner once per example and per slice in Python; for this
evaluator that was two thirds of its time. Here each model's probabilities are reduced per batch
(`per_example_columns`) and the slices are grouped once at the end (`sliced_results`), giving the
values of the metrics the EvalConfig names (`tfma_setup.build_eval_config`):

- `example_count` (TFMA ExampleCount): the slice's examples;
- `accuracy` (Keras SparseCategoricalAccuracy): argmax == label, as float32 like Keras's result;
- `log_loss` (Keras SparseCategoricalCrossentropy on probabilities): per example Keras clips
  each probability to [1e-7, 1 - 1e-7] and takes log(sum of the clipped) - log(clipped label
  probability); the mean is rounded to float32 like Keras's (TFMA's float32 running sums agree
  to about 1e-6 relative);
- `multi_class_confusion_matrix_plot` (TFMA MultiClassConfusionMatrixPlot at threshold 0): the
  (label, argmax) counts, the argmax replaced by NO_PREDICTED_CLASS_ID where its probability is
  <= 0, built with TFMA's own `Matrices` type;
- with a baseline, the candidate's `is_diff` key of each metric: candidate minus baseline.

Slices: overall and one per value of each single slicing feature, the values as TFMA's slicer
keys them (a missing bucket, NO_BUCKET, is in no bucket slice). Anything else in the EvalConfig
is refused (PipelineError) rather than silently left out.
"""

from __future__ import annotations

import json

import numpy as np
from tensorflow_model_analysis.metrics import metric_types
from tensorflow_model_analysis.metrics.multi_class_confusion_matrix_metrics import (
    Matrices,
    MatrixEntryKey,
)

from pipeline.core.errors import PipelineError
from pipeline.formats import evaluation as evaluation_format

EXAMPLE_COUNT = "example_count"
ACCURACY = "accuracy"
LOG_LOSS = "log_loss"
CONFUSION_PLOT = "multi_class_confusion_matrix_plot"
# The metrics the EvalConfig may name: {(class_name, name given in its config)}.
SUPPORTED_METRICS = {
    ("ExampleCount", EXAMPLE_COUNT),
    ("SparseCategoricalAccuracy", ACCURACY),
    ("SparseCategoricalCrossentropy", LOG_LOSS),
    ("MultiClassConfusionMatrixPlot", CONFUSION_PLOT),
}
NO_PREDICTED_CLASS_ID = -1  # as tfma.metrics.NO_PREDICTED_CLASS_ID
KERAS_EPSILON = np.float32(1e-7)
# The confusion matrix's threshold, as TFMA keys it when none is configured.
THRESHOLD = 0.0


def matrix_class_column(model: str) -> str:
    return f"{model}_matrix_class"


def loss_column(model: str) -> str:
    return f"{model}_loss"


def per_example_columns(model: str, probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """One model's per-example columns for `sliced_results`, from its probabilities
    (float [n, classes]) and the labels (int [n]): {"<model>_correct": bool [n],
    "<model>_matrix_class": int64 [n], "<model>_loss": float64 [n]}.

    Raises PipelineError when a label is not one of the model's classes.
    """
    n, classes = probabilities.shape
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        raise PipelineError(
            f"label {int(labels[outside][0])} is not one of model {model}'s {classes} classes"
        )
    rows = np.arange(n)
    predicted = probabilities.argmax(axis=1)
    top = probabilities[rows, predicted]
    clipped = np.clip(probabilities.astype(np.float32), KERAS_EPSILON, np.float32(1.0) - KERAS_EPSILON)
    clipped = clipped.astype(np.float64)
    return {
        f"{model}_correct": predicted == labels,
        matrix_class_column(model): np.where(top > 0.0, predicted, NO_PREDICTED_CLASS_ID).astype(np.int64),
        loss_column(model): np.log(clipped.sum(axis=1)) - np.log(clipped[rows, labels]),
    }


def check_eval_config(eval_config, row_features) -> None:
    """Raises PipelineError unless `eval_config` asks only for what `sliced_results` computes:
    the SUPPORTED_METRICS, unweighted, without binarization, aggregation, query or output names,
    and slices that are overall or on one of `row_features` (the columns of the rows). Metric
    thresholds need nothing more: TFMA's validator checks them on these metrics."""
    defaults = dict(SUPPORTED_METRICS)
    for spec in eval_config.metrics_specs:
        if (
            spec.HasField("binarize")
            or spec.HasField("aggregate")
            or spec.query_key
            or spec.output_names
            or spec.example_weights.weighted
        ):
            raise PipelineError(
                "the evaluator's metrics spec binarizes, aggregates, weighs, names outputs "
                "or groups by query, which its batched metrics do not"
            )
        for metric in spec.metrics:
            name = (json.loads(metric.config).get("name") if metric.config else None) or defaults.get(
                metric.class_name
            )
            if (metric.class_name, name) not in SUPPORTED_METRICS:
                raise PipelineError(
                    f"metric {metric.class_name} named {name!r} is not one the evaluator "
                    f"computes ({', '.join(f'{c} {n!r}' for c, n in sorted(SUPPORTED_METRICS))})"
                )
    for spec in eval_config.slicing_specs:
        if (
            spec.feature_values
            or spec.slice_keys_sql
            or len(spec.feature_keys) > 1
            or (spec.feature_keys and spec.feature_keys[0] not in row_features)
        ):
            raise PipelineError(
                f"slicing spec {list(spec.feature_keys)} {dict(spec.feature_values)} is neither "
                f"overall nor by one of {sorted(row_features)}"
            )
    if (
        eval_config.cross_slicing_specs
        or eval_config.options.compute_confidence_intervals.value
        or eval_config.options.min_slice_size.value > 1
    ):
        raise PipelineError("the evaluator computes no cross slices, confidence intervals or min_slice_size")


def _slices(rows: dict, eval_config) -> list:
    """[(TFMA slice key, boolean row mask)] of every slicing spec, in spec order."""
    n = len(rows[evaluation_format.LABEL])
    slices = []
    for spec in eval_config.slicing_specs:
        if not spec.feature_keys:
            slices.append(((), np.ones(n, bool)))
            continue
        feature = spec.feature_keys[0]
        column = np.asarray(rows[feature])
        for value in np.unique(column):
            if feature == evaluation_format.INK_DENSITY_BUCKET and value == evaluation_format.NO_BUCKET:
                continue
            slices.append((((feature, int(value)),), column == value))
    return slices


def _model_values(rows: dict, model: str, mask: np.ndarray) -> tuple:
    """(count, accuracy, log_loss, Matrices) of `model` on the rows in `mask`."""
    count = int(mask.sum())
    correct = np.asarray(rows[f"{model}_correct"])[mask]
    accuracy = np.float32(correct.sum()) / np.float32(count)
    log_loss = np.float32(np.asarray(rows[loss_column(model)])[mask].mean())
    pairs = np.stack(
        [np.asarray(rows[evaluation_format.LABEL])[mask], np.asarray(rows[matrix_class_column(model)])[mask]],
        axis=1,
    )
    cells, counts = np.unique(pairs, axis=0, return_counts=True)
    matrices = Matrices(
        {THRESHOLD: {MatrixEntryKey(int(a), int(p)): float(c) for (a, p), c in zip(cells, counts)}}
    )
    return float(count), accuracy, log_loss, matrices


def sliced_results(rows: dict, eval_config, models: dict, baseline: str = "") -> tuple:
    """TFMA's metrics and plots of every slice, from the combined per-example `rows` (label,
    slicing features, and the `per_example_columns` of each model).

    models: {the name TFMA gives the model in its keys ("" for a single model): the name its
        columns carry ("candidate", "baseline")}; baseline: the TFMA name of the baseline, which
        adds the other model's diff keys (none when "").
    Returns (metrics, plots): lists of (slice key, {MetricKey: value}) and
    (slice key, {PlotKey: MultiClassConfusionMatrixAtThresholds}). A slice without examples
    does not appear (as in TFMA, where no example makes it).
    """
    metrics, plots = [], []
    for slice_key, mask in _slices(rows, eval_config):
        if not mask.any():
            continue
        values, figures = {}, {}
        for model, column in models.items():
            count, accuracy, log_loss, matrices = _model_values(rows, column, mask)
            for name, value in ((ACCURACY, accuracy), (LOG_LOSS, log_loss), (EXAMPLE_COUNT, count)):
                values[metric_types.MetricKey(name=name, model_name=model, example_weighted=False)] = value
            plot_key = metric_types.PlotKey(name=CONFUSION_PLOT, model_name=model, example_weighted=False)
            figures[plot_key] = matrices.to_proto().multi_class_confusion_matrix_at_thresholds
        if baseline:
            for key in [k for k in values if k.model_name != baseline]:
                values[key.make_diff_key()] = values[key] - values[key.make_baseline_key(baseline)]
        metrics.append((slice_key, values))
        plots.append((slice_key, figures))
    return metrics, plots
