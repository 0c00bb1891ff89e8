"""Evaluator throughput: TFMA on the 10,000 test digits, the candidate alone and with a baseline.

    .venv/bin/python benchmarks/bench_evaluator.py [--pipeline-root DIR]

Uses the Examples and the trained Model of a pipeline root (default: the one
bench_pipeline.py leaves; when it has no model, a short training run makes one there). Runs the
evaluator step's executor in this process, as the runner does, on the whole test split and on
a 1,000-digit subsample, for one model and for two (the same model as its own baseline, which
evaluates both on every example). Processing rate = the extra examples / the extra seconds of
the whole run over the subsample run, so model loading and Beam start-up (reported apart as
start-up) do not count. Peak memory is the process's peak during each run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import tempfile
import time

import common

SUBSAMPLE = 1_000


def find_or_make_model(pipeline_root: str) -> tuple:
    """(examples uri, model uri, model digest) of the latest trainer run in `pipeline_root`."""
    run = common.run_pipeline(pipeline_root, ["--to", "trainer", "--train-steps", "300"]) \
        if not os.path.isdir(os.path.join(pipeline_root, "trainer")) else None
    summary = run.summary if run else common.run_pipeline(pipeline_root, ["--to", "trainer"]).summary
    examples = common.summary_step(summary, "example_gen")["outputs"]["examples"]
    model = common.summary_step(summary, "trainer")["outputs"]["model"]
    with open(os.path.join(model, "model_digest.json")) as f:
        return examples, model, json.load(f)["digest"]


def evaluate(work: str, examples: str, model: str, digest: str, with_baseline: bool,
             max_examples) -> dict:
    from components.evaluator import executor
    from pipeline.config import EvaluatorConfig
    from pipeline.resources import peak_rss_mb, reset_peak_rss
    from pipeline.step import Artifact, StepContext

    shutil.rmtree(work, ignore_errors=True)
    outputs = {name: os.path.join(work, name) for name in ("evaluation", "blessing")}
    for path in outputs.values():
        os.makedirs(path)
    inputs = {"examples": Artifact(examples, "Examples", {}, 1),
              "model": Artifact(model, "Model", {"digest": digest}, 2)}
    if with_baseline:
        inputs["baseline_model"] = Artifact(model, "Model", {"digest": digest}, 3)
    ctx = StepContext(step_name="evaluator", run_id="bench", pipeline_root=work, inputs=inputs,
                      outputs=outputs, params=dataclasses.replace(EvaluatorConfig(), max_examples=max_examples),
                      beam_args=(), log=logging.getLogger("bench.evaluator"))
    reset_peak_rss()
    started = time.perf_counter()
    outcome = executor.run(ctx)
    seconds = time.perf_counter() - started
    props = outcome.execution_properties
    return {"examples": props["examples_evaluated"], "step_seconds": round(seconds, 2),
            "tfma_seconds": props["tfma_seconds"], "peak_memory_mib": peak_rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline-root", default=os.path.join(tempfile.gettempdir(), "mnist-bench-pipeline"))
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/evaluator.json")
    args = parser.parse_args()

    examples, model, digest = find_or_make_model(args.pipeline_root)
    from pipeline.logs import configure_logging

    configure_logging()
    work = tempfile.mkdtemp(prefix="mnist-bench-eval-")
    results, rows = {}, []
    for label, with_baseline in (("candidate only", False), ("candidate + baseline", True)):
        small = evaluate(work, examples, model, digest, with_baseline, SUBSAMPLE)
        full = evaluate(work, examples, model, digest, with_baseline, None)
        rate = (full["examples"] - small["examples"]) / max(full["step_seconds"] - small["step_seconds"], 1e-6)
        startup = small["step_seconds"] - small["examples"] / rate
        results[label] = {"subsample": small, "full": full, "processing_examples_per_second": round(rate, 1),
                          "startup_seconds": round(startup, 2),
                          "overall_examples_per_second": round(full["examples"] / full["step_seconds"], 1)}
        rows.append([label, full["examples"], full["step_seconds"], round(rate, 1), round(startup, 2),
                     results[label]["overall_examples_per_second"], full["peak_memory_mib"]])
    shutil.rmtree(work, ignore_errors=True)
    common.print_table("Evaluator (TFMA, DirectRunner) on the test split", rows,
                       ["models", "examples", "step s", "processing ex/s", "start-up s", "overall ex/s", "peak MiB"])
    common.write_json("evaluator", {"model": model, "results": results}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
