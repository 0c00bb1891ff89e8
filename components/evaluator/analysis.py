"""The evaluator's Beam pipeline: read the test split, optionally subsample it, run TFMA.

Candidate and baseline are evaluated on the same examples in one pipeline run, so their
metrics (and TFMA's diff metrics) compare like with like.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import time
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam

from pipeline.errors import InputDataError

logger = logging.getLogger(__name__)

COUNTER_NAMESPACE = "evaluator"
SHARD_GLOB = "data_tfrecord-*.gz"


@dataclass(frozen=True)
class AnalysisRun:
    """What one TFMA run did, per the Beam counters (0 where the runner reports none): examples
    read, examples handed to TFMA, and the run's wall time in seconds."""

    examples_read: int
    examples_selected: int
    seconds: float


def split_pattern(examples_uri: str, split: str = "test") -> str:
    """Returns the file pattern of a split's shards; InputDataError when it has none."""
    split_dir = os.path.join(examples_uri, f"Split-{split}")
    pattern = os.path.join(split_dir, SHARD_GLOB)
    if not glob.glob(pattern):
        raise InputDataError(f"no {SHARD_GLOB} shards in {split_dir}: the Examples artifact has no {split} split")
    return pattern


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


def _counter(result, name: str) -> int:
    query = result.metrics().query(
        beam.metrics.MetricsFilter().with_namespace(COUNTER_NAMESPACE).with_name(name))
    return int(sum(c.committed or 0 for c in query["counters"]))


def run_analysis(file_pattern: str, candidate_path: str, baseline_path: Optional[str],
                 output_path: str, max_examples: Optional[int], pipeline_options) -> AnalysisRun:
    """Runs TFMA over the examples for the candidate (and baseline) SavedModels.

    Writes TFMA's output (loadable by tfma.load_eval_result) to `output_path`.
    """
    import tensorflow_model_analysis as tfma
    from tfx_bsl.public import tfxio

    from components.evaluator import tfma_setup

    eval_config = tfma_setup.build_eval_config(with_baseline=baseline_path is not None)
    models = [tfma.default_eval_shared_model(candidate_path, eval_config=eval_config,
                                             model_name=tfma_setup.CANDIDATE)]
    if baseline_path is not None:
        models.append(tfma.default_eval_shared_model(baseline_path, eval_config=eval_config,
                                                     model_name=tfma_setup.BASELINE))
    to_arrow = tfxio.TFExampleBeamRecord(physical_format="inmem",
                                         raw_record_column_name=tfma.ARROW_INPUT_COLUMN)
    started = time.monotonic()
    pipeline = beam.Pipeline(options=pipeline_options)
    _ = (pipeline
         | "ReadExamples" >> ReadExamples(file_pattern, max_examples)
         | "ToRecordBatches" >> to_arrow.BeamSource()
         | "ExtractEvaluateAndWriteResults" >> tfma.ExtractEvaluateAndWriteResults(
             eval_shared_model=models if len(models) > 1 else models[0],
             eval_config=eval_config, output_path=output_path))
    result = pipeline.run()
    result.wait_until_finish()
    run = AnalysisRun(examples_read=_counter(result, "examples_read"),
                      examples_selected=_counter(result, "examples_selected"),
                      seconds=time.monotonic() - started)
    logger.info("TFMA ran on %d of %d examples read (%d model(s)) in %.1fs",
                run.examples_selected, run.examples_read, len(models), run.seconds)
    return run
