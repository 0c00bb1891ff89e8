"""Test accuracy and wall time of whole default runs on the full MNIST, several runs (issue 18).

    .venv/bin/python benchmarks/bench_accuracy.py [--runs 3] [--precision auto|float32|mixed_bfloat16]
                                                  [--train-steps N] [--json FILE]

Each run is `run_local.py` as its own process into a fresh pipeline root, with the default
configuration except `trainer.random_seed` (42, 43, ...: the runs differ as much as the seed
makes them) and, when given, `trainer.precision` (default: the configured "auto", which picks
bfloat16 only where this CPU runs it natively and faster). Per run: TFMA's test accuracy on
the 10,000 test digits, the wall time (process start included), each step's seconds, and the
trainer's precision, rate, steps, chosen evaluation and every evaluation's step, accuracy and
loss (all on the eval split; the test split is never used to choose or stop). Prints a table
and writes benchmarks/results/accuracy_<precision>.json. Exit 1 when a run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile

import common

from pipeline.formats import model as model_format

TARGET_EACH = 0.9965
TARGET_MEAN = 0.9968
TARGET_WALL_SECONDS = 12 * 60
FIRST_SEED = 42


def run_config(directory: str, seed: int, precision: str) -> str:
    """A config file setting the run's seed and, unless "auto", its precision; returns its path."""
    path = os.path.join(directory, f"seed-{seed}.toml")
    with open(path, "w") as f:
        f.write(f"[trainer]\nrandom_seed = {seed}\n")
        if precision != "auto":
            f.write(f'precision = "{precision}"\n')
    return path


def one_run(root: str, config: str, train_steps) -> dict:
    """The figures of one pipeline run into the fresh `root`."""
    shutil.rmtree(root, ignore_errors=True)
    extra = ["--config", config] + (["--train-steps", str(train_steps)] if train_steps else [])
    run = common.run_pipeline(root, extra)
    steps = run.summary["steps"]
    trainer = steps["trainer"]["properties"]
    return {
        "test_accuracy": steps["evaluator"]["properties"]["metrics"]["candidate"]["overall"]["accuracy"],
        "wall_seconds": round(run.wall_seconds, 1),
        "step_seconds": {name: step["seconds"] for name, step in steps.items()},
        "precision": trainer.get("precision"),
        "train_examples_per_sec": trainer["train_examples_per_sec"],
        "steps_trained": trainer["steps_trained"],
        "best_eval_step": trainer["best_eval_step"],
        "best_eval_accuracy": trainer["best_eval_accuracy"],
        "top_eval_step": trainer.get("top_eval_step"),
        "top_eval_accuracy": trainer.get("top_eval_accuracy"),
        "precision_reason": trainer.get("precision_reason"),
        "evaluations": eval_history(steps["trainer"]["outputs"]["model_run"]),
    }


def eval_history(model_run_uri: str) -> list:
    """The trainer's periodic evaluations on the eval split: [{"step", "accuracy", "loss"}]."""
    with open(os.path.join(model_run_uri, model_format.HISTORY_FILE)) as f:
        return [
            {key: record[key] for key in ("step", "accuracy", "loss")}
            for record in json.load(f)["evaluations"]
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "mixed_bfloat16"))
    parser.add_argument("--train-steps", type=int, help="override trainer.train_steps (checks the script)")
    parser.add_argument(
        "--json", metavar="FILE", help="default: benchmarks/results/accuracy_<precision>.json"
    )
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="mnist-bench-accuracy-")
    runs = []
    for i in range(args.runs):
        seed = FIRST_SEED + i
        figures = one_run(
            os.path.join(work, "root"), run_config(work, seed, args.precision), args.train_steps
        )
        runs.append({"seed": seed, **figures})
        print(
            f"run {i + 1}/{args.runs} (seed {seed}): test accuracy {figures['test_accuracy']:.4f}, "
            f"{figures['wall_seconds']:.0f} s, {figures['precision']}",
            flush=True,
        )
    shutil.rmtree(work, ignore_errors=True)

    accuracies = [r["test_accuracy"] for r in runs]
    walls = [r["wall_seconds"] for r in runs]
    common.print_table(
        f"Default config, full MNIST, precision {args.precision}",
        [
            [
                r["seed"],
                f"{r['test_accuracy']:.4f}",
                r["wall_seconds"],
                r["step_seconds"]["trainer"],
                r["precision"],
                r["train_examples_per_sec"],
                f"{r['best_eval_step']}/{r['steps_trained']}",
            ]
            for r in runs
        ],
        ["seed", "test accuracy", "wall s", "trainer s", "precision", "train ex/s", "exported step/steps"],
    )
    checks = {
        f"every run >= {TARGET_EACH}": min(accuracies) >= TARGET_EACH,
        f"mean >= {TARGET_MEAN} (moonshot)": statistics.mean(accuracies) >= TARGET_MEAN,
        f"every run <= {TARGET_WALL_SECONDS // 60} min wall": max(walls) <= TARGET_WALL_SECONDS,
    }
    common.print_table(
        "Targets", [[name, "met" if ok else "NOT MET"] for name, ok in checks.items()], ["target", "result"]
    )
    common.write_json(
        f"accuracy_{args.precision}",
        {
            "precision_setting": args.precision,
            "train_steps_override": args.train_steps,
            "runs": runs,
            "mean_test_accuracy": round(statistics.mean(accuracies), 5),
            "min_test_accuracy": min(accuracies),
            "max_wall_seconds": max(walls),
            "checks": checks,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
