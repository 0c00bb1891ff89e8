"""The shipped model modules on the full shipped MNIST with the pipeline's defaults, compared.

    .venv/bin/python benchmarks/bench_models.py [--train-steps N] [--pipeline-root DIR]

Runs `run_local.py compare` as its own process on models/classic_cnn.toml, models/keras_cnn.toml
and models/mlp.toml (each module with the `[trainer]` defaults its config does not override:
as of 2026-12-02 11,500 steps, no early stopping, augmentation, cosine decay; the results of
2026-11 were made with 12,000 steps at most and early stopping) into one fresh pipeline root,
so the data steps run once and every model is tested on the same 10,000 test digits. Reports per
module its test accuracy with its 95% Wilson interval, steps trained, training time and
training examples/s (the trainer's own measure: training steps only), and for every pair the
paired verdict of the comparison page. `--train-steps` caps every module's budget (a quick check
that the benchmark works; its figures are not the modules' accuracy).
Prints tables and writes benchmarks/results/models.json (models_<N>steps.json with --train-steps).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common

CONFIGS = ("models/classic_cnn.toml", "models/keras_cnn.toml", "models/mlp.toml")


def run_compare(pipeline_root: str, train_steps) -> tuple:
    """(comparison.json's content, wall seconds) of one `run_local.py compare` process.
    Raises RuntimeError when it fails."""
    command = [
        sys.executable,
        str(common.PROJECT_ROOT / "run_local.py"),
        "compare",
        "--pipeline-root",
        pipeline_root,
    ]
    for config in CONFIGS:
        command += ["--config", config]
    if train_steps:
        command += ["--train-steps", str(train_steps)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=common.PROJECT_ROOT, stdout=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}")
    page = done.stdout.strip().splitlines()[-1]
    with open(os.path.join(os.path.dirname(page), "comparison.json")) as f:
        return json.load(f), wall, page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pipeline-root",
        default=os.path.join(tempfile.gettempdir(), "mnist-bench-models"),
        help="emptied first",
    )
    parser.add_argument(
        "--train-steps", type=int, help="cap every module's trainer.train_steps (quick checks)"
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="default: benchmarks/results/models.json (models_<N>steps.json with --train-steps)",
    )
    args = parser.parse_args()

    shutil.rmtree(args.pipeline_root, ignore_errors=True)
    comparison, wall, page = run_compare(args.pipeline_root, args.train_steps)
    rows, models = [], {}
    for m in comparison["models"]:
        training = m["training"]
        low, high = m["accuracy_ci"]
        rows.append(
            [
                m["name"],
                m["entry_point"],
                f"{m['accuracy']:.4f}",
                f"{low:.4f} to {high:.4f}",
                training["steps_trained"],
                training["stopped_early"],
                training["train_seconds"],
                training["train_examples_per_sec"],
            ]
        )
        models[m["name"]] = {
            "module_file": os.path.relpath(m["module_file"], common.PROJECT_ROOT),
            "module_sha256": m["module_sha256"],
            "entry_point": m["entry_point"],
            "test_accuracy": m["accuracy"],
            "test_accuracy_ci": m["accuracy_ci"],
            "test_digits": m["n"],
            **training,
        }
    common.print_table(
        f"Shipped modules on {comparison['test_digits']} test digits "
        f"({'train_steps ' + str(args.train_steps) if args.train_steps else 'pipeline defaults'})",
        rows,
        [
            "module",
            "entry point",
            "test accuracy",
            "95% CI",
            "steps",
            "stopped early",
            "training s",
            "examples/s",
        ],
    )
    pairs = [
        [
            p["a"],
            p["b"],
            f"{p['comparisons'][0]['difference']:+.4f}",
            " to ".join(f"{v:+.4f}" for v in p["comparisons"][0]["difference_ci"]),
            f"{p['comparisons'][0]['p_value']:.2g}",
        ]
        for p in comparison["pairs"]
    ]
    common.print_table(
        "Pairs (A minus B, paired on the same digits)",
        pairs,
        ["A", "B", "difference", "95% CI (Newcombe)", "McNemar p"],
    )
    for p in comparison["pairs"]:
        print(f"  {p['verdict']}")
    print(f"\ncomparison page: {page}\nwall time of the whole comparison: {wall:.0f} s")
    name = f"models_{args.train_steps}steps" if args.train_steps else "models"
    common.write_json(
        name,
        {
            "train_steps_override": args.train_steps,
            "wall_seconds": round(wall, 1),
            "test_digits": comparison["test_digits"],
            "models": models,
            "pairs": [
                {"a": p["a"], "b": p["b"], "verdict": p["verdict"], "overall": p["comparisons"][0]}
                for p in comparison["pairs"]
            ],
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
