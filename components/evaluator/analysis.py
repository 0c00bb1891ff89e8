"""The evaluator's Beam pipeline: read the test split, optionally subsample it, run TFMA.

Candidate and baseline are evaluated on the same examples in one pipeline run, so their
metrics (and TFMA's diff metrics) compare like with like. The same run also taps TFMA's
extracts right after its PredictionsExtractor (a custom `tfma.evaluators.Evaluator` next to
TFMA's default ones: same examples, one inference per model) and writes, next to TFMA's output,
the per-example outcomes and the candidate's most confident mistakes; afterwards the overall
confusion matrices are taken from TFMA's plots. File formats: `pipeline.formats.evaluation`.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

import apache_beam as beam
import numpy as np

from pipeline.core.errors import InputDataError, PipelineError
from pipeline.formats import evaluation as evaluation_format
from pipeline.formats import examples as examples_format

logger = logging.getLogger(__name__)

COUNTER_NAMESPACE = "evaluator"


@dataclass(frozen=True)
class AnalysisRun:
    """What one TFMA run did, per the Beam counters (0 where the runner reports none): examples
    read, examples handed to TFMA, and the run's wall time in seconds; `confusion`: TFMA's
    confusion matrix plots as `metrics.read_confusion_plots` returns them (read once, here);
    `outcomes`: the rows of outcomes.npz."""

    examples_read: int
    examples_selected: int
    seconds: float
    confusion: dict = field(default_factory=dict)
    outcomes: int = 0


def _fingerprint(record: bytes) -> tuple:
    return hashlib.sha256(record).digest(), record


@beam.ptransform_fn
def ReadExamples(pipeline, file_pattern: str, max_examples: Optional[int]):  # pylint: disable=invalid-name
    """Reads serialized tf.Examples from gzip TFRecords; keeps at most `max_examples`.

    The subset is the `max_examples` records with the smallest sha256 fingerprints: a
    content-defined sample, the same on every run and independent of shard order.
    Counts `examples_read` and `examples_selected` as Beam metrics.
    """
    read_counter = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "examples_read")
    selected_counter = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "examples_selected")

    def count(counter):
        def inc(record):
            counter.inc()
            return record
        return inc

    records = (pipeline
               | "ReadTFRecords" >> beam.io.ReadFromTFRecord(
                   file_pattern, compression_type=beam.io.filesystem.CompressionTypes.GZIP)
               | "CountRead" >> beam.Map(count(read_counter)))
    if max_examples is not None:
        records = (records
                   | "Fingerprint" >> beam.Map(_fingerprint)
                   | "KeepSmallestFingerprints" >> beam.combiners.Top.Smallest(max_examples)
                   | "Unpack" >> beam.FlatMap(lambda kept: [record for _, record in kept]))
    return records | "CountSelected" >> beam.Map(count(selected_counter))


# ---- the tap on TFMA's extracts ---------------------------------------------------------------
TAP_STAGE = "TapPerExampleOutcomes"


def _per_model(value, model: str, model_names):
    """`value` for `model` when TFMA keyed it by model name (several models), else `value`."""
    if isinstance(value, dict) and model_names and set(model_names) <= set(value):
        return value[model]
    return value


def _probabilities(predictions, model: str, model_names, prediction_key: str) -> np.ndarray:
    value = _per_model(predictions, model, model_names)
    if isinstance(value, dict):
        if prediction_key not in value:
            raise PipelineError(f"model {model}: no {prediction_key!r} among its outputs {sorted(value)}")
        value = value[prediction_key]
    return np.asarray(value, dtype=np.float64)


def _column(features: dict, name: str, n: int, default: int) -> np.ndarray:
    if name not in features:
        return np.full(n, default, dtype=np.int64)
    return np.asarray([np.asarray(v).reshape(-1)[0] if np.asarray(v).size else default
                       for v in features[name]], dtype=np.int64)


def batch_outcomes(extracts: dict, candidate: str, baseline: Optional[str],
                   prediction_key: str, image_key: str = examples_format.IMAGE_KEY,
                   bucket_key: str = examples_format.INK_DENSITY_BUCKET_KEY,
                   keep: int = evaluation_format.MAX_MISTAKES) -> dict:
    """One batch of TFMA extracts (after its PredictionsExtractor: `labels` as the LabelsExtractor
    took them from the label key, `features` from the examples, `input` the serialized examples,
    `predictions` keyed by model name when there are several models) -> a partial result:
    {"fingerprint": [n] sha256 of each serialized example, "label", "ink_density_bucket",
    "candidate_correct" (and "baseline_correct"): [n] arrays, "mistakes": up to `keep` mistakes
    of the candidate in this batch, as `_mistake_key` orders them}.

    The predicted class is the argmax of `prediction_key` (as TFMA's accuracy and its confusion
    matrix at threshold 0 take it).
    """
    models = [candidate] + ([baseline] if baseline else [])
    records = list(extracts["input"])
    n = len(records)
    labels = np.asarray(_per_model(extracts["labels"], candidate, models)).reshape(n, -1)[:, 0].astype(np.int64)
    features = extracts.get("features") or {}
    partial = {
        "fingerprint": [hashlib.sha256(r).digest() for r in records],
        evaluation_format.LABEL: labels,
        evaluation_format.INK_DENSITY_BUCKET: _column(features, bucket_key, n, evaluation_format.NO_BUCKET),
    }
    probabilities = _probabilities(extracts["predictions"], candidate, models, prediction_key).reshape(n, -1)
    predicted = probabilities.argmax(axis=1)
    partial[evaluation_format.CANDIDATE_CORRECT] = predicted == labels
    if baseline:
        base = _probabilities(extracts["predictions"], baseline, models, prediction_key).reshape(n, -1)
        partial[evaluation_format.BASELINE_CORRECT] = base.argmax(axis=1) == labels
    wrong = np.flatnonzero(predicted != labels)
    if len(wrong) and image_key not in features:
        raise PipelineError(f"TFMA extracts hold no {image_key!r} feature: the examples lack the digits' pixels")
    # Shown probabilities are clipped to [0, 1] (float32 softmax may overshoot by an ulp; a
    # non-finite one shows as 0 and the gate fails the model on its NaN metrics anyway).
    shown = np.clip(np.nan_to_num(probabilities, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    mistakes = []
    for i in wrong:
        label = int(labels[i])
        pixels = np.clip(np.rint(np.asarray(features[image_key][i], dtype=np.float64)), 0, examples_format.MAX_PIXEL)
        mistakes.append({
            "fingerprint": partial["fingerprint"][i],
            "pixels": pixels.astype(np.int64).reshape(-1).tolist(),
            "label": label, "predicted": int(predicted[i]),
            "confidence": float(shown[i, predicted[i]]),
            "label_probability": float(shown[i, label]) if 0 <= label < shown.shape[1] else 0.0,
        })
    partial["mistakes"] = sorted(mistakes, key=_mistake_key)[:keep]
    return partial


def _mistake_key(item: dict) -> tuple:
    """Most confident first; equal confidences by the example's fingerprint (deterministic)."""
    return (-item["confidence"], item["fingerprint"])


class PerExampleCombineFn(beam.CombineFn):
    """Combines `batch_outcomes` partials: every outcome row (small ints and bools), and only
    the `keep` most confident mistakes (so memory for images stays bounded)."""

    def __init__(self, keep: int = evaluation_format.MAX_MISTAKES):
        super().__init__()
        self._keep = keep

    def create_accumulator(self):
        return {"partials": [], "mistakes": []}

    def add_input(self, accumulator, partial):
        rows = {k: v for k, v in partial.items() if k != "mistakes"}
        accumulator["partials"].append(rows)
        accumulator["mistakes"] = sorted(accumulator["mistakes"] + list(partial["mistakes"]),
                                         key=_mistake_key)[:self._keep]
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged["partials"].extend(accumulator["partials"])
            merged["mistakes"].extend(accumulator["mistakes"])
        merged["mistakes"] = sorted(merged["mistakes"], key=_mistake_key)[:self._keep]
        return merged

    def compact(self, accumulator):
        if len(accumulator["partials"]) > 1:
            accumulator["partials"] = [_concatenate(accumulator["partials"])]
        return accumulator

    def extract_output(self, accumulator):
        rows = _concatenate(accumulator["partials"])
        order = sorted(range(len(rows["fingerprint"])), key=lambda i: rows["fingerprint"][i])
        outcomes = {k: np.asarray(v)[order] for k, v in rows.items() if k != "fingerprint"}
        return {"outcomes": outcomes, "mistakes": accumulator["mistakes"]}


def _concatenate(partials: list) -> dict:
    if not partials:
        return {"fingerprint": [], evaluation_format.LABEL: np.zeros(0, np.int64),
                evaluation_format.INK_DENSITY_BUCKET: np.zeros(0, np.int64),
                evaluation_format.CANDIDATE_CORRECT: np.zeros(0, bool)}
    keys = partials[0].keys()
    return {k: ([f for p in partials for f in p[k]] if k == "fingerprint"
                else np.concatenate([np.asarray(p[k]) for p in partials])) for k in keys}


def write_per_example(combined: dict, output_path: str, with_baseline: bool) -> None:
    """Writes outcomes.npz and mistakes.json for the combined result into `output_path`."""
    outcomes = dict(combined["outcomes"])
    if with_baseline and evaluation_format.BASELINE_CORRECT not in outcomes:
        outcomes[evaluation_format.BASELINE_CORRECT] = np.zeros(0, bool)  # no examples at all
    evaluation_format.write_outcomes(output_path, outcomes)
    correct = outcomes[evaluation_format.CANDIDATE_CORRECT]
    evaluation_format.write_mistakes(output_path, len(correct), int((~correct).sum()),
                                     [{k: v for k, v in m.items() if k != "fingerprint"}
                                      for m in combined["mistakes"]])


@beam.ptransform_fn
def TapPerExampleOutcomes(extracts, output_path: str, candidate: str, baseline: Optional[str],  # pylint: disable=invalid-name
                          prediction_key: str):
    """The tap's ptransform: batched extracts -> outcomes.npz and mistakes.json in `output_path`.

    Returns an empty Evaluation: TFMA's writers see nothing of it.
    """
    _ = (extracts
         | "BatchOutcomes" >> beam.Map(batch_outcomes, candidate, baseline, prediction_key)
         | "Combine" >> beam.CombineGlobally(PerExampleCombineFn())
         | "Write" >> beam.Map(write_per_example, output_path, baseline is not None))
    return {}


def tap_evaluator(output_path: str, candidate: str, baseline: Optional[str], prediction_key: str):
    """The tfma.evaluators.Evaluator that taps the extracts after TFMA's PredictionsExtractor."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.extractors.predictions_extractor import PREDICTIONS_EXTRACTOR_STAGE_NAME

    return tfma.evaluators.Evaluator(
        stage_name=TAP_STAGE, run_after=PREDICTIONS_EXTRACTOR_STAGE_NAME,
        ptransform=TapPerExampleOutcomes(output_path, candidate, baseline, prediction_key))


def _counter(result, name: str) -> int:
    query = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(COUNTER_NAMESPACE).with_name(name))
    return int(sum(c.committed or 0 for c in query["counters"]))


def run_analysis(file_pattern: str, candidate_path: str, baseline_path: Optional[str],
                 output_path: str, max_examples: Optional[int], pipeline_options) -> AnalysisRun:
    """Runs TFMA over the examples for the candidate (and baseline) SavedModels.

    Writes TFMA's output (loadable by tfma.load_eval_result) to `output_path`, and from the same
    pass outcomes.npz, mistakes.json and (from TFMA's plots) confusion_matrix.json. Raises
    PipelineError when the outcomes and TFMA's overall confusion matrix disagree on the count.
    """
    import tensorflow_model_analysis as tfma
    from tfx_bsl.public import tfxio

    from components.evaluator import metrics as metrics_lib, tfma_setup

    eval_config = tfma_setup.build_eval_config(with_baseline=baseline_path is not None)
    models = [tfma.default_eval_shared_model(candidate_path, eval_config=eval_config,
                                             model_name=tfma_setup.CANDIDATE)]
    if baseline_path is not None:
        models.append(tfma.default_eval_shared_model(baseline_path, eval_config=eval_config,
                                                     model_name=tfma_setup.BASELINE))
    eval_shared_model = models if len(models) > 1 else models[0]
    evaluators = tfma.default_evaluators(eval_shared_model=eval_shared_model, eval_config=eval_config) + [
        tap_evaluator(output_path, tfma_setup.CANDIDATE,
                      tfma_setup.BASELINE if baseline_path is not None else None,
                      tfma_setup.PREDICTION_KEY)]
    to_arrow = tfxio.TFExampleBeamRecord(physical_format="inmem",
                                         raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=pipeline_options)
    _ = (pipeline
         | "ReadExamples" >> ReadExamples(file_pattern, max_examples)
         | "ToRecordBatches" >> to_arrow.BeamSource()
         | "ExtractEvaluateAndWriteResults" >> tfma.ExtractEvaluateAndWriteResults(
             eval_shared_model=eval_shared_model, eval_config=eval_config, output_path=output_path,
             evaluators=evaluators))
    result = pipeline.run()
    result.wait_until_finish()
    seconds = time.monotonic() - started

    outcomes = evaluation_format.read_outcomes(output_path)
    rows = len(outcomes[evaluation_format.LABEL])
    if rows == 0:
        raise InputDataError(f"{file_pattern}: no test examples were evaluated")
    confusion = metrics_lib.read_confusion_plots(output_path, tfma_setup.CANDIDATE, tfma_setup.NUM_CLASSES)
    overall = metrics_lib.overall_confusion_matrices(confusion, output_path)
    evaluation_format.write_confusion_matrices(output_path, overall)
    for model, entry in overall.items():
        if sum(map(sum, entry["matrix"])) != rows:
            raise PipelineError(f"TFMA output {output_path}: the {model} confusion matrix counts "
                                f"{sum(map(sum, entry['matrix']))} examples, {evaluation_format.OUTCOMES_FILE} {rows}")
    run = AnalysisRun(examples_read=_counter(result, "examples_read"),
                      examples_selected=_counter(result, "examples_selected"),
                      seconds=seconds, confusion=confusion, outcomes=rows)
    logger.info("TFMA ran on %d of %d examples read (%d model(s)) in %.1fs",
                run.examples_selected, run.examples_read, len(models), run.seconds)
    return run
