"""Evaluator throughput: TFMA on the test split, against the model's own inference ceiling.

    .venv/bin/python benchmarks/bench_evaluator.py [--pipeline-root DIR]

Uses the Examples and the trained Model of a pipeline root (default: the one
bench_pipeline.py leaves; when it has no model, a 300-step training run makes one there).
Three measurements, for one model and for two (the same model as its own baseline, which
evaluates both on every example, as a run with a baseline does):

1. The evaluator step as the runner runs it (digest checks, TFMA, blessing) on the 10,000 test
   digits: wall seconds, overall examples per second, peak memory.
2. TFMA's processing rate: the same analysis on the test split and on the larger train split;
   rate = extra examples / extra seconds, so model loading and Beam start-up cancel out (they
   are reported apart as start-up).
3. The ceiling: the model's `serving_default` signature alone (tf.Example parsing and the
   forward pass, batches of 1,000, no Beam, no metrics) on the test digits. No evaluator that
   runs this model can go faster on this machine.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import tempfile
import time

import common

from pipeline.core.artifacts import SUMMARY_FILE, runs_dir
from pipeline.formats import examples as examples_format
from pipeline.formats import model as model_format

TARGET_EXAMPLES_PER_SECOND = 5_000
INFERENCE_BATCH = 1_000


def find_or_make_model(pipeline_root: str) -> tuple:
    """(examples uri, model uri, model digest) of the newest run in `pipeline_root` whose trainer
    output still exists; when there is none, a 300-step training run makes one there."""
    for summary_path in sorted(glob.glob(os.path.join(runs_dir(pipeline_root), "*", SUMMARY_FILE)), reverse=True):
        with open(summary_path) as f:
            steps = json.load(f).get("steps", {})
        model = (steps.get("trainer") or {}).get("outputs", {}).get("model")
        examples = (steps.get("example_gen") or {}).get("outputs", {}).get("examples")
        if model and examples and os.path.isfile(os.path.join(model, "model_digest.json")):
            break
    else:
        summary = common.run_pipeline(pipeline_root, ["--to", "trainer", "--train-steps", "300"]).summary
        examples = common.summary_step(summary, "example_gen")["outputs"]["examples"]
        model = common.summary_step(summary, "trainer")["outputs"]["model"]
    with open(os.path.join(model, "model_digest.json")) as f:
        return examples, model, json.load(f)["digest"]


def evaluator_step(work: str, examples: str, model: str, digest: str, with_baseline: bool) -> dict:
    """Runs the evaluator step's executor in this process, as the runner does."""
    from components.evaluator import executor
    from pipeline.config import EvaluatorConfig
    from pipeline.core.resources import peak_rss_mb, reset_peak_rss
    from pipeline.core.step import Artifact, StepContext

    shutil.rmtree(work, ignore_errors=True)
    outputs = {name: os.path.join(work, name) for name in ("evaluation", "blessing")}
    for path in outputs.values():
        os.makedirs(path)
    inputs = {"examples": Artifact(examples, "Examples", {}, 1),
              "model": Artifact(model, "Model", {"digest": digest}, 2)}
    if with_baseline:
        inputs["baseline_model"] = Artifact(model, "Model", {"digest": digest}, 3)
    ctx = StepContext(step_name="evaluator", run_id="bench", pipeline_root=work, inputs=inputs,
                      outputs=outputs, params=EvaluatorConfig(),
                      beam_args=(), log=logging.getLogger("bench.evaluator"))
    reset_peak_rss()
    started = time.perf_counter()
    outcome = executor.run(ctx)
    seconds = time.perf_counter() - started
    examples_evaluated = outcome.execution_properties["examples_evaluated"]
    return {"examples": examples_evaluated, "step_seconds": round(seconds, 2),
            "overall_examples_per_second": round(examples_evaluated / seconds, 1),
            "peak_memory_mib": peak_rss_mb()}


def tfma_processing_rate(work: str, examples: str, model: str, with_baseline: bool) -> dict:
    """TFMA's marginal rate from a run on the test split and one on the train split."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from components.evaluator.analysis import run_analysis
    from pipeline.formats.examples import split_pattern

    serving = os.path.join(model, model_format.SERVING_SUBDIR)
    runs = {}
    for split in ("test", "train"):
        shutil.rmtree(work, ignore_errors=True)
        started = time.perf_counter()
        run = run_analysis(split_pattern(examples, split), serving, serving if with_baseline else None,
                           work, None, PipelineOptions([]))
        runs[split] = (run.examples_selected, time.perf_counter() - started)
    (small_n, small_s), (large_n, large_s) = runs["test"], runs["train"]
    rate = (large_n - small_n) / max(large_s - small_s, 1e-6)
    return {"test_examples": small_n, "test_seconds": round(small_s, 2),
            "train_examples": large_n, "train_seconds": round(large_s, 2),
            "processing_examples_per_second": round(rate, 1),
            "startup_seconds": round(small_s - small_n / rate, 2)}


def inference_ceiling(examples: str, model: str) -> dict:
    """Examples per second of the serving signature alone on the test split."""
    import tensorflow as tf

    shards = examples_format.split_files(examples, "test")
    records = list(tf.data.TFRecordDataset(shards, compression_type="GZIP").as_numpy_iterator())
    serve = tf.saved_model.load(os.path.join(model, model_format.SERVING_SUBDIR)).signatures[
        model_format.EXAMPLES_SIGNATURE]
    serve(examples=tf.constant(records[:INFERENCE_BATCH]))  # traces and warms up
    started = time.perf_counter()
    for start in range(0, len(records), INFERENCE_BATCH):
        serve(examples=tf.constant(records[start:start + INFERENCE_BATCH]))
    seconds = time.perf_counter() - started
    return {"examples": len(records), "seconds": round(seconds, 2),
            "examples_per_second": round(len(records) / seconds, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline-root", default=os.path.join(tempfile.gettempdir(), "mnist-bench-pipeline"))
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/evaluator.json")
    args = parser.parse_args()

    examples, model, digest = find_or_make_model(args.pipeline_root)
    from pipeline.logs import configure_logging

    configure_logging()
    work = tempfile.mkdtemp(prefix="mnist-bench-eval-")
    ceiling = inference_ceiling(examples, model)
    results, rows = {}, []
    for label, with_baseline in (("candidate only", False), ("candidate + baseline", True)):
        step = evaluator_step(work, examples, model, digest, with_baseline)
        tfma_rate = tfma_processing_rate(work, examples, model, with_baseline)
        results[label] = {"step": step, "tfma": tfma_rate}
        rows.append([label, step["examples"], step["step_seconds"], step["overall_examples_per_second"],
                     tfma_rate["processing_examples_per_second"], tfma_rate["startup_seconds"],
                     step["peak_memory_mib"]])
    shutil.rmtree(work, ignore_errors=True)
    common.print_table("Evaluator (TFMA, DirectRunner) on the test split", rows,
                       ["models", "examples", "step s", "overall ex/s", "TFMA processing ex/s",
                        "start-up s", "peak MiB"])
    common.print_table("Ceiling: the serving signature alone (parse + forward), one model", [[
        ceiling["examples"], ceiling["seconds"], ceiling["examples_per_second"],
        TARGET_EXAMPLES_PER_SECOND]], ["examples", "seconds", "ex/s", "target ex/s"])
    common.write_json("evaluator", {"model": model, "inference_ceiling": ceiling, "results": results,
                                    "target_examples_per_second": TARGET_EXAMPLES_PER_SECOND}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
