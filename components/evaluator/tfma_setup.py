"""The TFMA EvalConfig of the evaluator: models, metrics and slices.

Metric keys in the TFMA output carry the ModelSpec name (CANDIDATE / BASELINE); with a baseline,
TFMA also writes the candidate's `<metric>` minus the baseline's under the candidate's name with
`is_diff` set (shown as "<metric>_diff" by load_eval_result). With the candidate alone, TFMA
writes keys without a model name: read that output with `tfma.load_eval_result(path)`, a
two-model output with `tfma.load_eval_result(path, model_name=CANDIDATE or BASELINE)`.
"""

from __future__ import annotations

import json

import tensorflow_model_analysis as tfma

from pipeline.formats import examples as examples_format
from pipeline.formats import model as model_format

CANDIDATE = "candidate"
BASELINE = "baseline"
NUM_CLASSES = examples_format.NUM_CLASSES
LABEL_KEY = examples_format.LABEL_KEY
PREDICTION_KEY = model_format.PROBABILITIES
SIGNATURE = model_format.EXAMPLES_SIGNATURE
SLICE_FEATURES = (examples_format.LABEL_KEY, examples_format.INK_DENSITY_BUCKET_KEY)
# The serving SavedModel is neither Keras nor an EvalSavedModel; naming the type spares TFMA
# from probing it with a Keras load.
MODEL_TYPE = "tf_generic"


def build_eval_config(with_baseline: bool):
    """Returns the tfma.EvalConfig for the candidate (and the baseline when `with_baseline`).

    Metrics: example_count, accuracy (SparseCategoricalAccuracy), log_loss
    (SparseCategoricalCrossentropy) and the multi-class confusion matrix plot, from which
    `metrics.per_class_from_confusion` derives per-class top-1 precision and recall. Slices:
    overall, by label, by ink_density_bucket. The evaluator computes exactly these, on batches,
    with `slice_metrics` (which refuses a config asking for anything else); TFMA writes them
    and this config beside them.
    """

    def spec(name: str, is_baseline: bool):
        return tfma.ModelSpec(
            name=name,
            signature_name=SIGNATURE,
            label_key=LABEL_KEY,
            prediction_key=PREDICTION_KEY,
            model_type=MODEL_TYPE,
            is_baseline=is_baseline,
        )

    model_specs = [spec(CANDIDATE, False)] + ([spec(BASELINE, True)] if with_baseline else [])
    overall_metrics = tfma.MetricsSpec(
        metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(
                class_name="SparseCategoricalAccuracy", config=json.dumps({"name": "accuracy"})
            ),
            tfma.MetricConfig(
                class_name="SparseCategoricalCrossentropy", config=json.dumps({"name": "log_loss"})
            ),
            tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
        ]
    )
    slicing_specs = [tfma.SlicingSpec()] + [tfma.SlicingSpec(feature_keys=[f]) for f in SLICE_FEATURES]
    return tfma.EvalConfig(
        model_specs=model_specs, metrics_specs=[overall_metrics], slicing_specs=slicing_specs
    )
