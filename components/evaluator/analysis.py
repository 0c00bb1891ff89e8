"""The evaluator's Beam pipeline: read the test split, optionally subsample it, run TFMA.

Candidate and baseline are evaluated on the same examples in one pipeline run, so their
metrics (and their diff metrics) compare like with like. TFMA reads the examples in batches of
INFERENCE_BATCH_SIZE and runs its extractors up to its PredictionsExtractor (one inference per
model and batch); one evaluator (`BatchedEvaluator`, a custom `tfma.evaluators.Evaluator` in
place of TFMA's per-example metrics evaluator) then reduces each batch to per-example rows,
combines the rows once and, from them, computes TFMA's metrics and plots per slice
(`slice_metrics`), which TFMA's writers store as their own, and writes, next to TFMA's
output, the per-example outcomes and the candidate's most confident mistakes; afterwards the
overall confusion matrices are taken from TFMA's plots. File formats: `pipeline.formats.evaluation`.
"""

from __future__ import annotations

import contextlib
import gc
import glob
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.evaluators import metrics_validator
from tensorflow_model_analysis.extractors import slice_key_extractor, unbatch_extractor
from tensorflow_model_analysis.extractors.predictions_extractor import PREDICTIONS_EXTRACTOR_STAGE_NAME
from tensorflow_model_analysis.utils import config_util
from tfx_bsl.tfxio import record_based_tfxio

from components.evaluator import metrics as metrics_lib
from components.evaluator import model_loading, slice_metrics, tfma_setup
from pipeline.core.errors import InputDataError, PipelineError
from pipeline.formats import evaluation as evaluation_format
from pipeline.formats import examples as examples_format

logger = logging.getLogger(__name__)

COUNTER_NAMESPACE = "evaluator"
# Examples per batch through TFMA's extractors and the model (the batch the model's own rate is
# measured at); TFXIO's default starts at 1 and grows, which averaged 75 per inference here.
INFERENCE_BATCH_SIZE = 1_000


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


class SerializedBatch(NamedTuple):
    """Serialized tf.Examples and where each was read: `locations[i]` is (file, index of
    `records[i]` in that file), so an error about a record can name both."""

    records: list
    locations: list


def _fingerprint(record: bytes, location: tuple) -> tuple:
    return hashlib.sha256(record).digest(), record, location


def _read_batches(path: str, batch_size: int):
    """The serialized records of the gzip TFRecord file `path`, as SerializedBatch of up to
    `batch_size`, read by TensorFlow's C++ record reader (which checks each record's CRC).
    Raises InputDataError naming the file when it is damaged.

    The synchronous reader TFMA's own loaders use, not tf.data: a tf.data iterator costs tens
    of milliseconds to build per file and, between model calls, waited up to half a second
    for its threads; in the evaluator its reads of 10,000 digits took 1.0 to 3.6 s of wall
    time for 0.15 s of CPU, this reader's 0.05 s.
    """
    batch, start = [], 0
    try:
        for record in tf.compat.v1.io.tf_record_iterator(
            path, tf.io.TFRecordOptions(compression_type="GZIP")
        ):
            batch.append(record)
            if len(batch) == batch_size:
                yield SerializedBatch(batch, [(path, start + i) for i in range(len(batch))])
                batch, start = [], start + len(batch)
    except tf.errors.OpError as e:
        raise InputDataError(f"{path}: not a readable gzip TFRecord file ({e.message})") from e
    if batch:
        yield SerializedBatch(batch, [(path, start + i) for i in range(len(batch))])


def _rebatch(kept: list, size: int) -> list:
    """(fingerprint, record, location) triples -> SerializedBatch of up to `size`."""
    return [
        SerializedBatch(
            [record for _, record, _ in kept[at : at + size]],
            [location for _, _, location in kept[at : at + size]],
        )
        for at in range(0, len(kept), size)
    ]


@beam.ptransform_fn
def ReadExamples(pipeline, file_pattern: str, max_examples: int | None):  # pylint: disable=invalid-name
    """Reads serialized tf.Examples from gzip TFRecords as SerializedBatch of up to
    INFERENCE_BATCH_SIZE; keeps at most `max_examples`.

    Each file is read in batches (no per-record Beam element: Beam's Python TFRecord reader took
    a fifth of the evaluator's time per example). The subset is the `max_examples` records with
    the smallest sha256 fingerprints: a content-defined sample, the same on every run and
    independent of shard order. Counts `examples_read` and `examples_selected` as Beam metrics.
    Raises InputDataError when no file matches.
    """
    files = sorted(glob.glob(file_pattern))
    if not files:
        raise InputDataError(f"{file_pattern}: no file matches")
    read_counter = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "examples_read")
    selected_counter = beam.metrics.Metrics.counter(COUNTER_NAMESPACE, "examples_selected")

    def count(counter):
        def inc(batch):
            counter.inc(len(batch.records))
            return batch

        return inc

    batches = (
        pipeline
        | "Files" >> beam.Create(files)  # which reshuffles them: files spread over workers
        | "ReadTFRecords" >> beam.FlatMap(_read_batches, INFERENCE_BATCH_SIZE)
        | "CountRead" >> beam.Map(count(read_counter))
    )
    if max_examples is not None:
        batches = (
            batches
            | "Records" >> beam.FlatMap(lambda batch: zip(batch.records, batch.locations))
            | "Fingerprint" >> beam.MapTuple(_fingerprint)
            | "KeepSmallestFingerprints" >> beam.combiners.Top.Smallest(max_examples)
            | "Rebatch" >> beam.FlatMap(_rebatch, INFERENCE_BATCH_SIZE)
        )
    return batches | "CountSelected" >> beam.Map(count(selected_counter))


class DecodeForEvaluation(beam.DoFn):
    """A SerializedBatch -> the Arrow RecordBatch TFMA's extractors read: the
    label and the ink density bucket (NO_BUCKET for an example without one) as int64 lists of
    one value each, and the serialized examples in `raw_record_column` (the models parse them
    themselves; the pixels of the few mistakes shown are read from them). Raises
    InputDataError naming the file and record (its index in that file, from 0) of the first
    example of the batch that has no label, or a label or bucket that is not one int64.

    TensorFlow's example parser takes 1.5 ms per 1,000 digits for these two features; tfx_bsl's
    decoder into Arrow took 8 ms, walking every example's 784 pixels.
    """

    def __init__(self, raw_record_column: str):
        self._raw_record_column = raw_record_column

    def process(self, batch: SerializedBatch):
        spec = {
            evaluation_format.LABEL: tf.io.FixedLenFeature([], tf.int64),
            evaluation_format.INK_DENSITY_BUCKET: tf.io.FixedLenFeature(
                [], tf.int64, default_value=evaluation_format.NO_BUCKET
            ),
        }
        records = batch.records
        try:
            parsed = tf.io.parse_example(tf.constant(records), spec)
        except tf.errors.InvalidArgumentError as e:
            raise _first_bad_example(batch, spec, e.message) from e
        offsets = pa.array(np.arange(len(records) + 1, dtype=np.int64))
        columns = [pa.LargeListArray.from_arrays(offsets, pa.array(parsed[name].numpy())) for name in spec]
        yield record_based_tfxio.AppendRawRecordColumn(
            pa.RecordBatch.from_arrays(columns, list(spec)), self._raw_record_column, records
        )


def _first_bad_example(batch: SerializedBatch, spec: dict, batch_error: str) -> InputDataError:
    """The InputDataError for the first record of `batch` that `spec` cannot parse (a batch's
    parse error does not say which record it was), naming its file and its index in that file
    (from 0); `batch_error` is TensorFlow's message for the whole batch."""
    for record, (path, index) in zip(batch.records, batch.locations):
        try:
            tf.io.parse_single_example(record, spec)
        except tf.errors.InvalidArgumentError as e:
            return InputDataError(
                f"{path}: record {index}: a test example with no {evaluation_format.LABEL}, "
                f"or a {' or '.join(spec)} that is not one int64 ({_tensorflow_reason(e.message)})"
            )
    files = sorted({path for path, _ in batch.locations})
    return InputDataError(
        f"{', '.join(files)}: {len(batch.records)} test records that parse one by one but not "
        f"together ({_tensorflow_reason(batch_error)})"
    )


def _tensorflow_reason(message: str) -> str:
    """TensorFlow's op error message without the op's function name, example name and op tag."""
    return re.sub(r"\{\{.*?\}\}|Name: <unknown>, |\[Op:\w+\]", "", message.splitlines()[0]).strip()


# ---- the evaluator on TFMA's batched extracts -------------------------------------------------
EVALUATOR_STAGE = "EvaluateBatches"
# The names of the models' per-example columns (as in outcomes.npz: "candidate_correct").
CANDIDATE_ROLE = evaluation_format.CANDIDATE_CORRECT.removesuffix("_correct")
BASELINE_ROLE = evaluation_format.BASELINE_CORRECT.removesuffix("_correct")
# The columns of the rows that slices may be taken on.
ROW_FEATURES = (evaluation_format.LABEL, evaluation_format.INK_DENSITY_BUCKET)


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


def batch_outcomes(
    extracts: dict,
    candidate: str,
    baseline: str | None,
    prediction_key: str,
    image_key: str = examples_format.IMAGE_KEY,
    keep: int = evaluation_format.MAX_MISTAKES,
) -> dict:
    """One batch of TFMA extracts (after its PredictionsExtractor: `labels` as the LabelsExtractor
    took them from the label key, `features` the ROW_FEATURES as DecodeForEvaluation gave them
    (one int64 per example), `input` the serialized examples,
    `predictions` keyed by model name when there are several models) -> a partial result:
    {"fingerprint": [n] sha256 of each serialized example, "label", "ink_density_bucket": [n]
    arrays, the `slice_metrics.per_example_columns` of "candidate" (and "baseline"), among them
    "candidate_correct" (and "baseline_correct"), "mistakes": up to `keep` mistakes of the
    candidate in this batch, as `_mistake_key` orders them}.

    The predicted class is the argmax of `prediction_key` (as TFMA's accuracy and its confusion
    matrix at threshold 0 take it). Raises PipelineError for a label outside the model's classes.
    """
    models = [candidate] + ([baseline] if baseline else [])
    records = list(extracts["input"])
    n = len(records)
    labels = (
        np.asarray(_per_model(extracts["labels"], candidate, models)).reshape(n, -1)[:, 0].astype(np.int64)
    )
    partial = {
        "fingerprint": [hashlib.sha256(r).digest() for r in records],
        evaluation_format.LABEL: labels,
        evaluation_format.INK_DENSITY_BUCKET: np.asarray(
            extracts["features"][evaluation_format.INK_DENSITY_BUCKET], dtype=np.int64
        ).reshape(n),
    }
    probabilities = _probabilities(extracts["predictions"], candidate, models, prediction_key).reshape(n, -1)
    predicted = probabilities.argmax(axis=1)
    partial.update(slice_metrics.per_example_columns(CANDIDATE_ROLE, probabilities, labels))
    if baseline:
        base = _probabilities(extracts["predictions"], baseline, models, prediction_key).reshape(n, -1)
        partial.update(slice_metrics.per_example_columns(BASELINE_ROLE, base, labels))
    # Shown probabilities are clipped to [0, 1] (float32 softmax may overshoot by an ulp; a
    # non-finite one shows as 0 and the gate fails the model on its NaN metrics anyway).
    shown = np.clip(np.nan_to_num(probabilities, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    mistakes = sorted(
        (
            {
                "fingerprint": partial["fingerprint"][i],
                "index": i,
                "label": int(labels[i]),
                "predicted": int(predicted[i]),
                "confidence": float(shown[i, predicted[i]]),
                "label_probability": float(shown[i, labels[i]]),
            }
            for i in np.flatnonzero(predicted != labels)
        ),
        key=_mistake_key,
    )[:keep]
    for item in mistakes:
        item["pixels"] = _pixels(records[item.pop("index")], image_key)
    partial["mistakes"] = mistakes
    return partial


def _pixels(record: bytes, image_key: str) -> list:
    """The `image_key` feature of a serialized tf.Example as ints 0..MAX_PIXEL. Raises
    PipelineError when the example has no such feature."""
    feature = tf.train.Example.FromString(record).features.feature
    if image_key not in feature:
        raise PipelineError(
            f"a test example has no {image_key!r} feature: the examples lack the digits' pixels"
        )
    values = feature[image_key].int64_list.value or feature[image_key].float_list.value
    return (
        np.clip(np.rint(np.asarray(values, dtype=np.float64)), 0, examples_format.MAX_PIXEL)
        .astype(np.int64)
        .tolist()
    )


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
        accumulator["mistakes"] = sorted(
            accumulator["mistakes"] + list(partial["mistakes"]), key=_mistake_key
        )[: self._keep]
        return accumulator

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            merged["partials"].extend(accumulator["partials"])
            merged["mistakes"].extend(accumulator["mistakes"])
        merged["mistakes"] = sorted(merged["mistakes"], key=_mistake_key)[: self._keep]
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
        return {
            "fingerprint": [],
            evaluation_format.LABEL: np.zeros(0, np.int64),
            evaluation_format.INK_DENSITY_BUCKET: np.zeros(0, np.int64),
            evaluation_format.CANDIDATE_CORRECT: np.zeros(0, bool),
        }
    keys = partials[0].keys()
    return {
        k: (
            [f for p in partials for f in p[k]]
            if k == "fingerprint"
            else np.concatenate([np.asarray(p[k]) for p in partials])
        )
        for k in keys
    }


def write_per_example(combined: dict, output_path: str, with_baseline: bool) -> None:
    """Writes outcomes.npz and mistakes.json for the combined result into `output_path`."""
    outcomes = {k: v for k, v in combined["outcomes"].items() if k in evaluation_format.OUTCOME_COLUMNS}
    if with_baseline and evaluation_format.BASELINE_CORRECT not in outcomes:
        outcomes[evaluation_format.BASELINE_CORRECT] = np.zeros(0, bool)  # no examples at all
    evaluation_format.write_outcomes(output_path, outcomes)
    correct = outcomes[evaluation_format.CANDIDATE_CORRECT]
    evaluation_format.write_mistakes(
        output_path,
        len(correct),
        int((~correct).sum()),
        [{k: v for k, v in m.items() if k != "fingerprint"} for m in combined["mistakes"]],
    )


def _model_names(eval_config) -> tuple:
    """({name TFMA gives the model in its keys: CANDIDATE_ROLE or BASELINE_ROLE}, the baseline's
    name or "") from an EvalConfig as TFMA completes it (a single model's name is "")."""
    completed = config_util.update_eval_config_with_defaults(
        eval_config, has_baseline=any(spec.is_baseline for spec in eval_config.model_specs)
    )
    models = {
        spec.name: BASELINE_ROLE if spec.is_baseline else CANDIDATE_ROLE for spec in completed.model_specs
    }
    baseline = next((name for name, role in models.items() if role == BASELINE_ROLE), "")
    return completed, models, baseline


@beam.ptransform_fn
def EvaluateBatches(
    extracts,
    output_path: str,
    eval_config,
    candidate: str,
    baseline: str | None,  # pylint: disable=invalid-name
    prediction_key: str,
):
    """The evaluator's ptransform: batched extracts -> TFMA's Evaluation (metrics, plots,
    attributions and validations per slice, for TFMA's writers), and outcomes.npz and
    mistakes.json written into `output_path`.

    candidate, baseline: the models' names in the extracts (baseline None: a single model).
    """
    completed, models, baseline_name = _model_names(eval_config)
    combined = (
        extracts
        | "BatchOutcomes" >> beam.Map(batch_outcomes, candidate, baseline, prediction_key)
        | "Combine" >> beam.CombineGlobally(PerExampleCombineFn())
    )
    _ = combined | "Write" >> beam.Map(write_per_example, output_path, baseline is not None)
    sliced = combined | "MetricsPerSlice" >> beam.Map(
        lambda c: slice_metrics.sliced_results(c["outcomes"], completed, models, baseline_name)
    )
    metrics = sliced | "Metrics" >> beam.FlatMap(lambda result: result[0])
    return {
        "metrics": metrics,
        "plots": sliced | "Plots" >> beam.FlatMap(lambda result: result[1]),
        "attributions": metrics | "NoAttributions" >> beam.Map(lambda item: (item[0], {})),
        "validations": metrics | "ValidateMetrics" >> beam.Map(metrics_validator.validate_metrics, completed),
    }


def batched_evaluator(
    output_path: str, eval_config, candidate: str, baseline: str | None, prediction_key: str
):
    """The tfma.evaluators.Evaluator that evaluates the batched extracts after TFMA's
    PredictionsExtractor. Raises PipelineError when `eval_config` asks for metrics or slices
    it does not compute."""
    slice_metrics.check_eval_config(eval_config, ROW_FEATURES)
    return tfma.evaluators.Evaluator(
        stage_name=EVALUATOR_STAGE,
        run_after=PREDICTIONS_EXTRACTOR_STAGE_NAME,
        ptransform=EvaluateBatches(output_path, eval_config, candidate, baseline, prediction_key),
    )


def batched_extractors(eval_shared_model, eval_config) -> list:
    """TFMA's default extractors without those that split batches into examples and key them by
    slice: the evaluator slices the combined rows itself."""
    per_example = {
        unbatch_extractor.UNBATCH_EXTRACTOR_STAGE_NAME,
        slice_key_extractor.SLICE_KEY_EXTRACTOR_STAGE_NAME,
    }
    return [
        x
        for x in tfma.default_extractors(eval_shared_model=eval_shared_model, eval_config=eval_config)
        if x.stage_name not in per_example
    ]


def _counter(result, name: str) -> int:
    query = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(COUNTER_NAMESPACE).with_name(name)
    )
    return int(sum(c.committed or 0 for c in query["counters"]))


@contextlib.contextmanager
def _older_objects_frozen():
    """Leaves the objects alive on entry out of Python's cyclic garbage collections until exit.

    With TensorFlow, Beam and TFMA loaded the process holds over half a million objects, and a
    full collection, which the run's own allocations trigger every few runs, walked them all
    in 0.4 to 0.6 s: as long as the model takes for 4,000 digits. The run makes no garbage of
    them; they are collected as before once unfrozen.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def run_analysis(
    file_pattern: str,
    candidate_path: str,
    baseline_path: str | None,
    output_path: str,
    max_examples: int | None,
    pipeline_options,
) -> AnalysisRun:
    """Runs TFMA over the examples for the candidate (and baseline) SavedModels.

    Writes TFMA's output (loadable by tfma.load_eval_result) to `output_path`, and from the same
    pass outcomes.npz, mistakes.json and (from TFMA's plots) confusion_matrix.json. Raises
    PipelineError when the outcomes and TFMA's overall confusion matrix disagree on the count.
    """
    eval_config = tfma_setup.build_eval_config(with_baseline=baseline_path is not None)
    models = [model_loading.eval_shared_model(candidate_path, eval_config, tfma_setup.CANDIDATE)]
    if baseline_path is not None:
        models.append(model_loading.eval_shared_model(baseline_path, eval_config, tfma_setup.BASELINE))
    eval_shared_model = models if len(models) > 1 else models[0]
    evaluators = [
        batched_evaluator(
            output_path,
            eval_config,
            tfma_setup.CANDIDATE,
            tfma_setup.BASELINE if baseline_path is not None else None,
            tfma_setup.PREDICTION_KEY,
        )
    ]
    started = time.monotonic()
    with _older_objects_frozen():
        pipeline = beam.Pipeline(options=pipeline_options)
        _ = (
            pipeline
            | "ReadExamples" >> ReadExamples(file_pattern, max_examples)
            | "ToRecordBatches" >> beam.ParDo(DecodeForEvaluation(tfma.ARROW_INPUT_COLUMN))
            | "ExtractEvaluateAndWriteResults"
            >> tfma.ExtractEvaluateAndWriteResults(
                eval_shared_model=eval_shared_model,
                eval_config=eval_config,
                output_path=output_path,
                extractors=batched_extractors(eval_shared_model, eval_config),
                evaluators=evaluators,
            )
        )
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
            raise PipelineError(
                f"TFMA output {output_path}: the {model} confusion matrix counts "
                f"{sum(map(sum, entry['matrix']))} examples, {evaluation_format.OUTCOMES_FILE} {rows}"
            )
    run = AnalysisRun(
        examples_read=_counter(result, "examples_read"),
        examples_selected=_counter(result, "examples_selected"),
        seconds=seconds,
        confusion=confusion,
        outcomes=rows,
    )
    logger.info(
        "TFMA ran on %d of %d examples read (%d model(s)) in %.1fs",
        run.examples_selected,
        run.examples_read,
        len(models),
        run.seconds,
    )
    return run
