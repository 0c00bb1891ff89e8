"""The whole pipeline on the full shipped MNIST with its default configuration, then a no-op rerun.

    .venv/bin/python benchmarks/bench_pipeline.py [--train-steps N] [--config FILE]

1. `run_local.py` into a fresh pipeline root, as its own process: wall time of the whole run
   (process start-up included), and per step its time and the pipeline process's peak memory.
2. The pushed model is checked to be the one that was measured: the serving version's files
   match the digest recorded for its push and the trainer's model digest, and its
   `serving_images` signature, run here on the 10,000 raw test digits (read from the IDX files,
   not from the pipeline's TFRecords), scores the accuracy TFMA reported.
3. `run_local.py` again with nothing changed: its wall time; every step must be cached and
   the pusher (never cached: it re-checks what is serving) must push nothing.
Prints a table and writes benchmarks/results/pipeline.json. Fails (exit 1) when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile

import common

TARGET_ACCURACY = 0.995
TARGET_MINUTES = 20
TARGET_NOOP_SECONDS = 5


def served_accuracy(pipeline_root: str, serving_dir: str) -> dict:
    """Accuracy of the newest serving version on the raw test digits, after verifying its digest."""
    import numpy as np

    from pipeline.formats import idx
    from pipeline.predict import classify, resolve_served_model

    served = resolve_served_model(serving_dir, pipeline_root)
    dataset = idx.load_dataset(str(common.PROJECT_ROOT / "data" / "mnist"))
    class_ids, _ = classify(served.path, dataset.test.images.array.reshape(-1, 784))
    labels = dataset.test.labels.array
    return {
        "version": served.version,
        "digest": served.digest,
        "verified": served.verified,
        "accuracy": float(np.mean(class_ids == labels)),
        "examples": int(len(labels)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pipeline-root",
        default=os.path.join(tempfile.gettempdir(), "mnist-bench-pipeline"),
        help="emptied first",
    )
    parser.add_argument("--train-steps", type=int, help="override trainer.train_steps (quick checks)")
    parser.add_argument("--config", help="config file passed to run_local.py")
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/pipeline.json")
    args = parser.parse_args()

    shutil.rmtree(args.pipeline_root, ignore_errors=True)
    extra = (["--train-steps", str(args.train_steps)] if args.train_steps else []) + (
        ["--config", args.config] if args.config else []
    )
    first = common.run_pipeline(args.pipeline_root, extra)
    noop = common.run_pipeline(args.pipeline_root, extra)

    summary = first.summary
    steps = summary["steps"]
    evaluation = steps["evaluator"]["properties"]
    tfma_accuracy = evaluation["metrics"]["candidate"]["overall"]["accuracy"]
    with open(os.path.join(steps["trainer"]["outputs"]["model"], "model_digest.json")) as f:
        trained_digest = json.load(f)["digest"]
    served = served_accuracy(args.pipeline_root, summary["serving_dir"])
    trainer = steps["trainer"]["properties"]

    rows = [
        [name, step["state"], step["seconds"], step.get("peak_memory_mib")] for name, step in steps.items()
    ]
    common.print_table(
        f"Pipeline on the full MNIST (run {summary['run_id']})",
        rows,
        ["step", "state", "seconds", "peak MiB"],
    )
    checks = {
        f"test accuracy >= {TARGET_ACCURACY}": tfma_accuracy >= TARGET_ACCURACY,
        f"whole run < {TARGET_MINUTES} min": first.wall_seconds < TARGET_MINUTES * 60,
        "pushed model = trained model (digest)": served["verified"] and served["digest"] == trained_digest,
        "pushed model scores the measured accuracy": abs(served["accuracy"] - tfma_accuracy) < 1e-4,
        f"no-op rerun < {TARGET_NOOP_SECONDS} s": noop.wall_seconds < TARGET_NOOP_SECONDS,
        # The pusher is never cached (it re-checks what is serving); on a no-op it pushes nothing.
        "no-op rerun: every step cached, nothing pushed": all(
            s["state"] == "cached" for n, s in noop.summary["steps"].items() if n != "pusher"
        )
        and noop.summary["push"]["pushed"] == 0,
    }
    common.print_table(
        "Figures",
        [
            ["whole run, wall (process start included)", f"{first.wall_seconds:.1f} s"],
            ["test accuracy (TFMA, 10,000 digits)", f"{tfma_accuracy:.4f}"],
            [
                "pushed version / its accuracy on the raw test IDX",
                f"{served['version']} / {served['accuracy']:.4f}",
            ],
            [
                "training steps / best eval accuracy",
                f"{trainer['steps_trained']} / {trainer['best_eval_accuracy']:.4f}",
            ],
            ["training examples/s", trainer["train_examples_per_sec"]],
            ["evaluator examples/s (TFMA)", evaluation["examples_per_second"]],
            ["no-op rerun, wall", f"{noop.wall_seconds:.2f} s"],
        ],
        ["figure", "value"],
    )
    common.print_table(
        "Targets", [[name, "met" if ok else "NOT MET"] for name, ok in checks.items()], ["target", "result"]
    )
    common.write_json(
        "pipeline",
        {
            "train_steps_override": args.train_steps,
            "config": args.config,
            "wall_seconds": round(first.wall_seconds, 2),
            "noop_wall_seconds": round(noop.wall_seconds, 2),
            "test_accuracy": tfma_accuracy,
            "served": served,
            "trainer": trainer,
            "steps": {
                n: {k: s.get(k) for k in ("state", "seconds", "peak_memory_mib")} for n, s in steps.items()
            },
            "evaluator_examples_per_second": evaluation["examples_per_second"],
            "checks": checks,
        },
        args.json,
    )
    integrity = [name for name in checks if name.startswith(("pushed", "no-op rerun: every"))]
    return 0 if all(checks[name] for name in integrity) else 1


if __name__ == "__main__":
    raise SystemExit(main())
