"""Weight averaging on the full MNIST: the last checkpoints scored with their weights and with
their averages, on the eval split (to choose) and the test split (to report), in one training run.

    .venv/bin/python benchmarks/bench_weight_averaging.py [--decay 0.9998] [--seed 42]
        [--train-steps 12000] [--learning-rate 0.001] [--learning-rate-decay cosine|none]
        [--last 4] [--threads 0] [--pipeline-root DIR] [--json FILE]

Trains the default network (`components.trainer.model.model_fn`, the default `[trainer]`
config with the flags above, float32) with `tf.estimator.Estimator` on the pipeline's Examples
artifact (made, or reused from cache, by `run_local.py --to example_gen` in --pipeline-root),
checkpointing every 1,000 steps. Then each of the last `--last` checkpoints is evaluated twice:
with averaging off (the raw weights) and on (the shadows, as the trainer would serve them).
A paired reading: same run, same checkpoint, only the weights differ, so seed-to-seed noise
cancels. Prints a table and writes benchmarks/results/weight_averaging_<tag>.json.
Decide on the eval columns; the test columns are reported, never chosen on.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import common


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decay", type=float, default=0.9998)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--train-steps", type=int, default=12000)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--learning-rate-decay", default="cosine", choices=("cosine", "none"))
    parser.add_argument("--last", type=int, default=4, help="checkpoints scored, the latest ones")
    parser.add_argument("--threads", type=int, default=0, help="TensorFlow threads (0: all cores)")
    parser.add_argument("--pipeline-root", default=os.path.join(tempfile.gettempdir(), "bench-wa-root"))
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    import tensorflow as tf

    from components.trainer import inputs, model
    from pipeline.config import TrainerConfig

    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    examples = common.examples_uri(args.pipeline_root)
    params = dict(
        dataclasses.asdict(TrainerConfig()),
        random_seed=args.seed,
        precision="float32",
        train_steps=args.train_steps,
        learning_rate=args.learning_rate,
        learning_rate_decay=args.learning_rate_decay,
        weight_averaging_decay=args.decay,
    )
    model_dir = tempfile.mkdtemp(prefix="bench-wa-")
    session = tf.compat.v1.ConfigProto(
        intra_op_parallelism_threads=args.threads, inter_op_parallelism_threads=args.threads
    )
    config = tf.estimator.RunConfig(
        tf_random_seed=args.seed,
        save_checkpoints_steps=1000,
        keep_checkpoint_max=args.last + 1,
        log_step_count_steps=1000,
        session_config=session,
    )
    train_input = inputs.make_input_fn(examples, "train", params["batch_size"], training=True, seed=args.seed)
    print(
        f"training {args.train_steps} steps (decay {args.decay}, {args.learning_rate_decay} "
        f"learning rate from {args.learning_rate}, seed {args.seed}) in {model_dir}",
        flush=True,
    )
    started = time.perf_counter()
    tf.estimator.Estimator(model.model_fn, model_dir=model_dir, params=params, config=config).train(
        train_input, max_steps=args.train_steps
    )
    train_seconds = time.perf_counter() - started

    split_inputs = {
        split: inputs.make_input_fn(examples, split, 1000, training=False) for split in ("eval", "test")
    }
    rows = []
    checkpoints = tf.train.get_checkpoint_state(model_dir).all_model_checkpoint_paths[-args.last :]
    for checkpoint in checkpoints:
        step = int(checkpoint.rsplit("-", 1)[1])
        scores = {}
        for weights, decay in (("raw", 0.0), ("averaged", args.decay)):
            estimator = tf.estimator.Estimator(
                model.model_fn,
                model_dir=model_dir,
                config=config,
                params=dict(params, weight_averaging_decay=decay),
            )
            for split, input_fn in split_inputs.items():
                result = estimator.evaluate(input_fn, checkpoint_path=checkpoint)
                scores[f"{split}_{weights}"] = {
                    "accuracy": float(result["accuracy"]),
                    "loss": float(result["loss"]),
                }
        rows.append({"step": step, **scores})
        print(
            f"step {step}: eval accuracy {scores['eval_raw']['accuracy']:.4%} raw, "
            f"{scores['eval_averaged']['accuracy']:.4%} averaged",
            flush=True,
        )

    common.print_table(
        f"weight averaging (decay {args.decay}), {args.learning_rate_decay} learning rate, seed {args.seed}",
        [
            [r["step"]]
            + [f"{r[k]['accuracy']:.2%}" for k in ("eval_raw", "eval_averaged", "test_raw", "test_averaged")]
            + [f"{r[k]['loss']:.4f}" for k in ("eval_raw", "eval_averaged")]
            for r in rows
        ],
        ["step", "eval raw", "eval avg", "test raw", "test avg", "eval loss raw", "eval loss avg"],
    )
    tag = f"{args.learning_rate_decay}_{args.seed}"
    common.write_json(
        f"weight_averaging_{tag}",
        {
            "decay": args.decay,
            "seed": args.seed,
            "train_steps": args.train_steps,
            "learning_rate": args.learning_rate,
            "learning_rate_decay": args.learning_rate_decay,
            "train_seconds": round(train_seconds, 1),
            "train_examples_per_sec": round(args.train_steps * params["batch_size"] / train_seconds),
            "checkpoints": rows,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
