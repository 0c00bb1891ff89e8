"""Evaluator throughput against the served model's own rate, measured in the same run.

    .venv/bin/python benchmarks/bench_evaluator.py [--pipeline-root DIR] [--repeats 3]
                                                   [--sizes 2000 10000] [--json FILE]

Uses the Examples and the trained Model of a pipeline root (default: the one
bench_pipeline.py leaves; when it has no model, a 300-step training run of the default
network makes one there: the model's rate matters here, not its accuracy). Per repeat:

1. The model's own rate: its `serving_default` signature alone (tf.Example parsing and the
   forward pass, batches of 1,000, no Beam, no metrics) on the test digits, the median of
   2 passes right before and 2 right after the evaluator runs it is compared with; called two
   ways: `plain`, the loaded signature called as issue 18 measured it (TensorFlow first tries
   and fails to bind the call to the Estimator signature's structured signature, and formats
   the whole batch into the discarded error), and `summarized`, the same call as the evaluator
   makes it (`components.evaluator.model_loading`: numpy prints that batch as a summary). The
   faster of the two is the rate the target is judged against.
2. The evaluator step as the runner runs it (digest checks, TFMA, outcomes, blessing) on the
   first 2,000 and on all 10,000 test digits, with one model and with candidate + baseline
   (the same model as its own baseline, which evaluates both on every example).
3. The marginal rate, (10,000 - 2,000) / (wall at 10,000 - wall at 2,000): start-up (imports,
   model loading, Beam) cancels out. Its ratio to the model's rate is the figure of issue 18
   (target: >= 75% with one model; >= 75% of half the model's rate with two).

The ratios are robust to a loaded machine (both sides slow down together); the load average is
recorded before and after. The first evaluator run of the process is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import shutil
import statistics
import tempfile
import time

import common

from pipeline.core.artifacts import SUMMARY_FILE, runs_dir
from pipeline.formats import examples as examples_format
from pipeline.formats import model as model_format

TARGET_RATIO = 0.75
INFERENCE_BATCH = 1_000
MODEL_PASSES = 2
SUBSET_SHARDS = 4


def find_or_make_model(pipeline_root: str) -> tuple:
    """(examples uri, model uri, model digest) of the newest run in `pipeline_root` whose trainer
    output still exists; when there is none, a 300-step training run makes one there."""
    for summary_path in sorted(
        glob.glob(os.path.join(runs_dir(pipeline_root), "*", SUMMARY_FILE)), reverse=True
    ):
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


def test_records(examples: str) -> list:
    """The serialized test examples of the Examples artifact, in shard order."""
    import tensorflow as tf

    shards = examples_format.split_files(examples, "test")
    return list(tf.data.TFRecordDataset(shards, compression_type="GZIP").as_numpy_iterator())


def write_subset(records: list, uri: str) -> str:
    """An Examples artifact at `uri` whose test split holds `records` (gzip TFRecords, in
    SUBSET_SHARDS shards as ExampleGen writes them); returns `uri`."""
    import tensorflow as tf

    folder = examples_format.split_dir(uri, "test")
    os.makedirs(folder)
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for shard in range(SUBSET_SHARDS):
        name = f"data_tfrecord-{shard:05d}-of-{SUBSET_SHARDS:05d}.gz"
        with tf.io.TFRecordWriter(os.path.join(folder, name), options) as writer:
            for record in records[shard::SUBSET_SHARDS]:
                writer.write(record)
    return uri


def serving_calls(model: str) -> dict:
    """{"plain": the loaded serving signature, "summarized": the evaluator's call of it}."""
    import tensorflow as tf

    from components.evaluator import model_loading

    path = os.path.join(model, model_format.SERVING_SUBDIR)
    summarized = model_loading.load_summarizing_signatures(path, (tf.saved_model.SERVING,))
    return {
        "plain": tf.saved_model.load(path).signatures[model_format.EXAMPLES_SIGNATURE],
        "summarized": summarized.signatures[model_format.EXAMPLES_SIGNATURE],
    }


def model_passes(calls: dict, records: list) -> dict:
    """{call name: [examples per second of each pass]} of each way of calling the serving
    signature alone over `records` (MODEL_PASSES passes, batches of INFERENCE_BATCH)."""
    import tensorflow as tf

    rates = {}
    for name, serve in calls.items():
        serve(examples=tf.constant(records[:INFERENCE_BATCH]))  # warms up
        rates[name] = []
        for _ in range(MODEL_PASSES):
            started = time.perf_counter()
            for start in range(0, len(records), INFERENCE_BATCH):
                serve(examples=tf.constant(records[start : start + INFERENCE_BATCH]))
            rates[name].append(round(len(records) / (time.perf_counter() - started), 1))
    return rates


def evaluator_step(work: str, examples: str, model: str, digest: str, with_baseline: bool) -> dict:
    """Runs the evaluator step's executor in this process, as the runner does; returns its wall
    seconds, the examples it evaluated and its peak memory."""
    from components.evaluator import executor
    from pipeline.config import EvaluatorConfig
    from pipeline.core.resources import peak_rss_mb, reset_peak_rss
    from pipeline.core.step import Artifact, StepContext

    shutil.rmtree(work, ignore_errors=True)
    outputs = {name: os.path.join(work, name) for name in ("evaluation", "blessing")}
    for path in outputs.values():
        os.makedirs(path)
    inputs = {
        "examples": Artifact(examples, "Examples", {}, 1),
        "model": Artifact(model, "Model", {"digest": digest}, 2),
    }
    if with_baseline:
        inputs["baseline_model"] = Artifact(model, "Model", {"digest": digest}, 3)
    ctx = StepContext(
        step_name="evaluator",
        run_id="bench",
        pipeline_root=work,
        inputs=inputs,
        outputs=outputs,
        params=EvaluatorConfig(),
        beam_args=(),
        log=logging.getLogger("bench.evaluator"),
    )
    reset_peak_rss()
    started = time.perf_counter()
    outcome = executor.run(ctx)
    seconds = time.perf_counter() - started
    return {
        "examples": outcome.execution_properties["examples_evaluated"],
        "seconds": round(seconds, 3),
        "peak_memory_mib": peak_rss_mb(),
    }


def one_repeat(work: str, subsets: dict, model: str, digest: str, calls: dict, records: list) -> dict:
    """For one and for two models: the model's rate, the evaluator at every size, the model's
    rate again (its passes on both sides of the evaluator runs give the rate compared with)."""
    small, large = min(subsets), max(subsets)
    result = {"load_before": [round(x, 2) for x in os.getloadavg()]}
    for label, with_baseline, share in (("one model", False, 1.0), ("candidate + baseline", True, 0.5)):
        before = model_passes(calls, records)
        walls = {n: evaluator_step(work, subsets[n], model, digest, with_baseline) for n in sorted(subsets)}
        after = model_passes(calls, records)
        passes = {name: before[name] + after[name] for name in calls}
        rates = {name: round(statistics.median(p), 1) for name, p in passes.items()}
        rate = max(rates.values())
        for n, step in walls.items():
            if step["examples"] != n:
                raise RuntimeError(f"the evaluator evaluated {step['examples']} examples, not {n}")
        marginal = (large - small) / max(walls[large]["seconds"] - walls[small]["seconds"], 1e-6)
        result[label] = {
            "model_passes": passes,
            "model_examples_per_second_by_call": rates,
            "model_examples_per_second": rate,
            "ratio_to_plain_call": round(marginal / (rates["plain"] * share), 3),
            "walls": {str(n): s for n, s in walls.items()},
            "marginal_examples_per_second": round(marginal, 1),
            "ratio_to_model": round(marginal / (rate * share), 3),
        }
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pipeline-root", default=os.path.join(tempfile.gettempdir(), "mnist-bench-pipeline")
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs=2, default=[2_000, 10_000], metavar=("SMALL", "LARGE"))
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/evaluator.json")
    args = parser.parse_args()

    examples, model, digest = find_or_make_model(args.pipeline_root)
    from pipeline.logs import configure_logging

    configure_logging()

    records = test_records(examples)
    if max(args.sizes) > len(records) or min(args.sizes) >= max(args.sizes) or min(args.sizes) < 1:
        parser.error(f"--sizes must be two increasing counts of at most {len(records)} test digits")
    scratch = tempfile.mkdtemp(prefix="mnist-bench-eval-")
    subsets = {n: write_subset(records[:n], os.path.join(scratch, f"examples-{n}")) for n in args.sizes}
    calls = serving_calls(model)
    work = os.path.join(scratch, "work")
    evaluator_step(work, subsets[min(args.sizes)], model, digest, False)  # warm-up: imports, tracing
    repeats = [
        one_repeat(work, subsets, model, digest, calls, records[: max(args.sizes)])
        for _ in range(args.repeats)
    ]
    shutil.rmtree(scratch, ignore_errors=True)

    labels = ("one model", "candidate + baseline")
    rows = []
    for i, rep in enumerate(repeats, 1):
        for label in labels:
            r = rep[label]
            rows.append(
                [
                    i,
                    label,
                    r["model_examples_per_second_by_call"]["plain"],
                    r["model_examples_per_second_by_call"]["summarized"],
                    *walls_in_order(r["walls"]),
                    r["marginal_examples_per_second"],
                    f"{r['ratio_to_plain_call']:.0%}",
                    f"{r['ratio_to_model']:.0%}",
                    "/".join(f"{x:.1f}" for x in rep["load_before"][:1] + rep["load_after"][:1]),
                ]
            )
    small, large = sorted(args.sizes)
    common.print_table(
        f"Evaluator step vs the model's serving_default (batches of {INFERENCE_BATCH}); ratios "
        "to the model's rate (two models: to half of it), plain call and the faster call",
        rows,
        [
            "repeat",
            "models",
            "model plain ex/s",
            "model summarized ex/s",
            f"wall {small} s",
            f"wall {large} s",
            "marginal ex/s",
            "ratio plain",
            "ratio",
            "load 1-min before/after",
        ],
    )
    summary = {
        label: {
            key: round(statistics.median(r[label][key] for r in repeats), 3)
            for key in ("marginal_examples_per_second", "ratio_to_plain_call", "ratio_to_model")
        }
        for label in labels
    }
    summary["model_examples_per_second"] = {
        name: round(
            statistics.median(
                r[label]["model_examples_per_second_by_call"][name] for r in repeats for label in labels
            ),
            1,
        )
        for name in ("plain", "summarized")
    }
    common.print_table(
        f"Medians of {len(repeats)} repeats (target: ratio >= {TARGET_RATIO:.0%} of the faster "
        "call's rate; with two models, of half of it)",
        [
            [
                label,
                summary[label]["marginal_examples_per_second"],
                f"{summary[label]['ratio_to_plain_call']:.0%}",
                f"{summary[label]['ratio_to_model']:.0%}",
                "met" if summary[label]["ratio_to_model"] >= TARGET_RATIO else "not met",
            ]
            for label in labels
        ],
        ["models", "marginal ex/s", "ratio plain", "ratio", "target"],
    )
    print(
        f"model serving_default (median): {summary['model_examples_per_second']['plain']} ex/s plain, "
        f"{summary['model_examples_per_second']['summarized']} ex/s summarized; load 1-min: "
        + ", ".join(f"{r['load_before'][0]:.1f}" for r in repeats)
    )
    common.write_json(
        "evaluator",
        {
            "model": model,
            "sizes": sorted(args.sizes),
            "target_ratio": TARGET_RATIO,
            "summary": summary,
            "repeats": repeats,
        },
        args.json,
    )
    return 0


def walls_in_order(walls: dict) -> list:
    """The step's wall seconds at each size, smallest size first."""
    return [walls[k]["seconds"] for k in sorted(walls, key=int)]


if __name__ == "__main__":
    raise SystemExit(main())
