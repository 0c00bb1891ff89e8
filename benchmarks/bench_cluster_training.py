"""Trainer throughput and accuracy: one process against a local cluster (chief + 1 worker + 1 ps).

    .venv/bin/python benchmarks/bench_cluster_training.py [--train-digits 6000] [--eval-digits 1000]
        [--steps 1000] [--eval-every 250] [--workers 1]

Both runs call the Trainer step's executor (`components.trainer.executor.run`) with the same
TrainerConfig (the pipeline's defaults: the classic CNN, augmentation, cosine decay; early
stopping off) and the same budget of `--steps` global steps, one after the other on the same
machine, on the first `--train-digits` MNIST training digits (the next `--eval-digits` as the
eval split), written once as an Examples artifact. Figures per run:
- examples/s (training): the step's `train_examples_per_sec`, evaluations left out (cluster: all
  tasks together, from the global step, measured on the chief);
- examples/s (wall): steps trained x batch size / the `train_and_evaluate` wall time (cluster:
  the chief's), evaluations and start-up included;
- step seconds: the whole executor call (cluster: launching and ending the task processes too);
- best and final eval accuracy, each with its 95% Wilson interval over the eval digits.
On a machine with few cores the cluster's tasks share them: the figures show the overhead of the
cluster's code path (gRPC to the parameter server every step), not a speed-up.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import shutil
import tempfile
import time

import common

from pipeline.config import DEFAULT_DATA_ROOT, DEFAULT_SCHEMA_PATH, TrainerConfig


def wilson_interval(accuracy: float, n: int, z: float = 1.959964) -> tuple:
    """The 95% Wilson score interval of a proportion `accuracy` over `n` examples."""
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return round(centre - half, 4), round(centre + half, 4)


def write_examples(dest: str, n_train: int, n_eval: int) -> str:
    """An Examples artifact at `dest`: Split-train / Split-eval of real MNIST training digits."""
    import tensorflow as tf

    from pipeline.formats.idx import load_dataset

    train = load_dataset(str(DEFAULT_DATA_ROOT)).train
    images = train.images.array.reshape(-1, 784)
    labels = train.labels.array
    options = tf.io.TFRecordOptions(compression_type="GZIP")
    for split, rows in (("train", range(0, n_train)), ("eval", range(n_train, n_train + n_eval))):
        os.makedirs(os.path.join(dest, f"Split-{split}"))
        path = os.path.join(dest, f"Split-{split}", "data_tfrecord-00000-of-00001.gz")
        with tf.io.TFRecordWriter(path, options=options) as writer:
            for i in rows:
                writer.write(
                    tf.train.Example(
                        features=tf.train.Features(
                            feature={
                                "image": tf.train.Feature(
                                    int64_list=tf.train.Int64List(value=images[i].astype("int64"))
                                ),
                                "label": tf.train.Feature(
                                    int64_list=tf.train.Int64List(value=[int(labels[i])])
                                ),
                            }
                        )
                    ).SerializeToString()
                )
    return dest


def train_once(work: str, name: str, examples, schema, cfg) -> dict:
    """Runs the Trainer executor into `<work>/<name>/`; returns its figures."""
    from components.trainer import executor
    from pipeline.core.step import StepContext

    root = os.path.join(work, name)
    outputs = {key: os.path.join(root, "trainer", key, ".staging-1") for key in ("model", "model_run")}
    for path in outputs.values():
        os.makedirs(path)
    ctx = StepContext(
        step_name="trainer",
        run_id="bench",
        pipeline_root=root,
        inputs={"examples": examples, "schema": schema},
        outputs=outputs,
        params=cfg,
        beam_args=(),
        log=logging.getLogger(f"bench.{name}"),
    )
    started = time.perf_counter()
    props = executor.run(ctx).execution_properties
    step_seconds = time.perf_counter() - started
    return {
        "steps_trained": props["steps_trained"],
        "examples_per_sec_training": props["train_examples_per_sec"],
        "examples_per_sec_wall": round(props["steps_trained"] * cfg.batch_size / props["train_seconds"], 1),
        "train_seconds": props["train_seconds"],
        "step_seconds": round(step_seconds, 1),
        "evaluations": props["evaluations_run"],
        "best_eval_accuracy": round(props["best_eval_accuracy"], 4),
        "final_eval_accuracy": round(props["final_eval_accuracy"], 4),
        "cluster": props.get("cluster"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train-digits", type=int, default=6000)
    parser.add_argument("--eval-digits", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--parameter-servers", type=int, default=1)
    parser.add_argument(
        "--json", help="where to write the figures (default benchmarks/results/cluster_training.json)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from pipeline.core.step import Artifact

    work = tempfile.mkdtemp(prefix="bench_cluster_")
    try:
        examples = Artifact(
            write_examples(os.path.join(work, "examples"), args.train_digits, args.eval_digits),
            "Examples",
            {},
            id=1,
        )
        os.makedirs(os.path.join(work, "schema"))
        shutil.copy(DEFAULT_SCHEMA_PATH, os.path.join(work, "schema", "schema.pbtxt"))
        schema = Artifact(os.path.join(work, "schema"), "Schema", {}, id=2)
        base = dataclasses.replace(
            TrainerConfig(),
            train_steps=args.steps,
            batch_size=args.batch_size,
            eval_every_steps=args.eval_every,
            early_stopping_evals=0,
        )
        runs = {
            "one_process": train_once(work, "one_process", examples, schema, base),
            "cluster": train_once(
                work,
                "cluster",
                examples,
                schema,
                dataclasses.replace(base, workers=args.workers, parameter_servers=args.parameter_servers),
            ),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for figures in runs.values():
        figures["final_eval_accuracy_ci95"] = wilson_interval(
            figures["final_eval_accuracy"], args.eval_digits
        )
    ratio = runs["cluster"]["examples_per_sec_wall"] / runs["one_process"]["examples_per_sec_wall"]
    machine = common.machine()
    label = f"chief + {args.workers} worker + {args.parameter_servers} ps"
    common.print_table(
        f"Trainer, {args.steps} steps of {args.batch_size} on {args.train_digits} MNIST training digits "
        f"(eval: the next {args.eval_digits}); {machine['cpus']} CPUs, {machine['cpu']}",
        [
            [
                name if name == "one_process" else label,
                f["steps_trained"],
                f["examples_per_sec_training"],
                f["examples_per_sec_wall"],
                f["train_seconds"],
                f["step_seconds"],
                f["best_eval_accuracy"],
                f["final_eval_accuracy"],
                f"{f['final_eval_accuracy_ci95'][0]}-{f['final_eval_accuracy_ci95'][1]}",
            ]
            for name, f in runs.items()
        ],
        [
            "run",
            "steps",
            "ex/s training",
            "ex/s wall",
            "train s",
            "step s",
            "best acc",
            "final acc",
            "final 95% CI",
        ],
    )
    print(f"\ncluster / one process, wall throughput: {ratio:.2f}")
    common.write_json(
        "cluster_training",
        {
            "train_digits": args.train_digits,
            "eval_digits": args.eval_digits,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "eval_every_steps": args.eval_every,
            "results": runs,
            "cluster_over_one_process_wall": round(ratio, 3),
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
