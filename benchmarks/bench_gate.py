"""How often the promotion gate pushes an equally good candidate, and a clearly better one.

    .venv/bin/python benchmarks/bench_gate.py [--short-steps 300] [--long-steps 1500]
                                              [--seeds 6] [--long-seeds 3]

Trains real models with the pipeline's own `model_fn` and `input_fn` on the shipped MNIST (the
Examples artifact of a `--to example_gen` run, made once and reused): `--seeds` models of
`--short-steps` steps that differ only in their random seed (equally good by construction),
and `--long-seeds` models of `--long-steps` steps (clearly better). Each model predicts the
10,000 test digits once. Every ordered pair (baseline, candidate) is then put through the gate
exactly as the evaluator does (`blessing.decide` on TFMA-like metrics and the paired tables of
`paired_stats.tables_by_slice`) under each policy, with the default thresholds:
- equal:  candidate and baseline both short (seeds differ);
- better: candidate long, baseline short;
- worse:  candidate short, baseline long.
Each model's per-example results are kept in the pipeline root (predictions-<steps>-<seed>.npz),
so a second run with other `--margins` trains nothing. It prints, per policy and kind, pushed / pairs with a 95% Wilson interval. Pairs share models,
so they are not independent: read the interval as optimistic; the counts are exact.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import tempfile
from pathlib import Path

import common
import numpy as np

from components.evaluator import blessing, paired_stats
from pipeline.config import EvaluatorConfig, TrainerConfig


def train_and_predict(examples_uri: str, steps: int, seed: int, workdir: str) -> dict:
    """Trains one model; returns {"correct", "label", "accuracy"} over the test split."""
    import tensorflow as tf

    from components.trainer import inputs
    from components.trainer.model import CLASS_IDS, model_fn

    cfg = dataclasses.replace(TrainerConfig(), train_steps=steps, random_seed=seed)
    estimator = tf.estimator.Estimator(
        model_fn=model_fn,
        params=dataclasses.asdict(cfg),
        config=tf.estimator.RunConfig(
            model_dir=workdir, tf_random_seed=seed, save_checkpoints_steps=steps, log_step_count_steps=None
        ),
    )
    estimator.train(
        inputs.make_input_fn(examples_uri, "train", cfg.batch_size, training=True, seed=seed), max_steps=steps
    )
    test_fn = inputs.make_input_fn(examples_uri, "test", 1000, training=False)
    predicted = np.array([p[CLASS_IDS] for p in estimator.predict(test_fn)], dtype=np.int64)
    labels = np.concatenate([batch[1].numpy() for batch in test_fn()]).astype(np.int64).ravel()
    correct = predicted == labels
    return {"correct": correct, "label": labels, "accuracy": float(correct.mean())}


def metrics_of(correct: np.ndarray, labels: np.ndarray) -> dict:
    """TFMA-shaped metrics (overall and label=k) from per-example correctness."""
    out = {"overall": {"accuracy": float(correct.mean()), "example_count": float(len(correct))}}
    for k in range(10):
        rows = labels == k
        out[f"label={k}"] = {"accuracy": float(correct[rows].mean()), "example_count": float(rows.sum())}
    return out


def cached_model(path: Path, examples_uri: str, steps: int, seed: int, workdir: str) -> dict:
    """`train_and_predict`, or its per-example results saved at `path` by an earlier run."""
    if path.exists():
        with np.load(path, allow_pickle=False) as saved:
            return {
                "correct": saved["correct"],
                "label": saved["label"],
                "accuracy": float(saved["correct"].mean()),
            }
    model = train_and_predict(examples_uri, steps, seed, workdir)
    np.savez(path, correct=model["correct"], label=model["label"])
    return model


def gate(candidate: dict, baseline: dict, policy: str, margin: float) -> blessing.Decision:
    """The evaluator's decision for one pair under `policy` (default thresholds otherwise)."""
    tables = paired_stats.tables_by_slice(
        candidate["correct"], baseline["correct"], {"label": candidate["label"]}, {"label": range(10)}
    )
    thresholds = dataclasses.replace(
        EvaluatorConfig(), promotion_policy=policy, non_inferiority_margin=margin
    )
    required = [f"label={k}" for k in range(10)]
    return blessing.decide(
        metrics_of(candidate["correct"], candidate["label"]),
        metrics_of(baseline["correct"], baseline["label"]),
        thresholds,
        required,
        paired=tables,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--short-steps", type=int, default=300)
    parser.add_argument("--long-steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--long-seeds", type=int, default=3)
    parser.add_argument(
        "--margins", default="0.002,0.005", help="non_inferiority_margin values to compare (comma-separated)"
    )
    parser.add_argument("--pipeline-root", default=str(common.PROJECT_ROOT / "benchmarks" / "work" / "gate"))
    parser.add_argument("--json")
    args = parser.parse_args()

    examples = common.examples_uri(args.pipeline_root)
    models = {}
    with tempfile.TemporaryDirectory() as work:
        for kind, steps, count in (
            ("short", args.short_steps, args.seeds),
            ("long", args.long_steps, args.long_seeds),
        ):
            for seed in range(count):
                name = f"{kind}-{seed}"
                saved = Path(args.pipeline_root) / f"predictions-{steps}-{100 + seed}.npz"
                models[name] = cached_model(saved, examples, steps, 100 + seed, f"{work}/{name}")
                print(f"{name}: {steps} steps, test accuracy {models[name]['accuracy']:.4f}", flush=True)

    short = [m for m in models if m.startswith("short")]
    long = [m for m in models if m.startswith("long")]
    pairs = {
        "equal": list(itertools.permutations(short, 2)),
        "better": [(c, b) for c in long for b in short],
        "worse": [(c, b) for c in short for b in long],
    }
    rows, figures = [], {"models": {m: models[m]["accuracy"] for m in models}, "rates": {}}
    settings = [("superiority", 0.0)] + [("non_inferiority", float(m)) for m in args.margins.split(",")]
    for policy, margin in settings:
        label = policy if policy == "superiority" else f"{policy} (margin {margin:g})"
        for kind, kind_pairs in pairs.items():
            pushed = sum(gate(models[c], models[b], policy, margin).blessed for c, b in kind_pairs)
            low, high = paired_stats.wilson_interval(pushed, len(kind_pairs), 0.05)
            rows.append(
                [
                    label,
                    kind,
                    f"{pushed}/{len(kind_pairs)}",
                    f"{pushed / len(kind_pairs):.1%}",
                    f"{low:.1%} to {high:.1%}",
                ]
            )
            figures["rates"][f"{label}/{kind}"] = {
                "pushed": pushed,
                "pairs": len(kind_pairs),
                "wilson_95": [round(low, 4), round(high, 4)],
            }
    for kind, kind_pairs in pairs.items():
        # The gate before paired statistics: candidate accuracy >= baseline accuracy + 0.
        pushed = sum(models[c]["accuracy"] >= models[b]["accuracy"] for c, b in kind_pairs)
        rows.append(
            [
                "point estimate (old gate)",
                kind,
                f"{pushed}/{len(kind_pairs)}",
                f"{pushed / len(kind_pairs):.1%}",
                "-",
            ]
        )
        figures["rates"][f"point estimate/{kind}"] = {"pushed": int(pushed), "pairs": len(kind_pairs)}
    discordant = [int(np.sum(models[a]["correct"] != models[b]["correct"])) for a, b in pairs["equal"]]
    figures["equal_pairs_discordant"] = {"min": min(discordant), "max": max(discordant)}
    widths = [
        float(
            np.subtract(*gate(models[a], models[b], "superiority", 0.0).comparisons[0]["difference_ci"][::-1])
        )
        for a, b in pairs["equal"]
    ]
    figures["equal_pairs_ci_width"] = {"min": round(min(widths), 4), "max": round(max(widths), 4)}
    common.print_table(
        "gate decisions over real model pairs (10,000 test digits)",
        rows,
        ["policy", "candidate vs baseline", "pushed", "rate", "95% Wilson"],
    )
    print(
        f"discordant digits between equal models: {min(discordant)} to {max(discordant)}; "
        f"95% CI width of their difference: {min(widths):.4f} to {max(widths):.4f}"
    )
    common.write_json("gate", figures, args.json)


if __name__ == "__main__":
    main()
