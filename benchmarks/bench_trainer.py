"""Trainer throughput: the pipeline's Estimator training against a plain Keras `model.fit`.

    .venv/bin/python benchmarks/bench_trainer.py [--steps 300] [--batch-size 100] [--bfloat16]

Runs, in one process and one after the other on the same machine:
1. float32 matmul peak: the best GFLOP/s of a 4096 x 4096 `tf.matmul` (what the cores can do);
2. Keras: the same network as `components.trainer.model` (the pipeline's default
   hyperparameters) compiled with Adam and fitted on the training digits as in-memory NumPy
   arrays, the code a user would write instead of the pipeline;
3. Estimator: `tf.estimator.Estimator(model_fn)` trained on the pipeline's Examples artifact
   through the pipeline's `input_fn` (gzip TFRecords, parsed in the input pipeline) with the
   pipeline's RunConfig defaults (summaries every 100 steps): like for like with Keras (no
   augmentation, float32), then with the default config (augmentation, cosine decay), then
   like for like in mixed bfloat16 (`--bfloat16`, also run for Keras).
Throughput counts training steps after the first `--warmup` steps (graph building, tracing and
the input pipeline's start are excluded and reported apart). GFLOP/s = examples/s x the
network's training cost per example (forward x 3, counted from its layer shapes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time

import common

from components.trainer import model as model_lib

WARMUP_STEPS = 30


def training_mflop_per_example(hp: dict) -> float:
    """Multiply-adds x 2 of one forward pass, times 3 (forward, input and weight gradients),
    minus the first convolution's input gradient, which nothing needs; in MFLOP."""
    side, k = model_lib.IMAGE_SIDE, hp["kernel_size"]
    conv1 = side * side * hp["conv1_filters"] * k * k * 1 * 2
    conv2 = (side // 2) ** 2 * hp["conv2_filters"] * k * k * hp["conv1_filters"] * 2
    flat = (side // 4) ** 2 * hp["conv2_filters"]
    dense = flat * hp["dense_units"] * 2 + hp["dense_units"] * model_lib.NUM_CLASSES * 2
    forward = conv1 + conv2 + dense
    return (3 * forward - conv1) / 1e6


def matmul_peak_gflops(n: int = 4096, repeats: int = 10, dtype: str = "float32") -> float:
    """Best GFLOP/s of an n x n matmul over `repeats` timed runs."""
    import tensorflow as tf

    a = tf.random.uniform([n, n], dtype=tf.float32)
    b = tf.random.uniform([n, n], dtype=tf.float32)
    if dtype != "float32":
        a, b = tf.cast(a, dtype), tf.cast(b, dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


class _StepClock:
    """Wall times of training steps: `warmup` seconds until step `warmup`, then the rest."""

    def __init__(self, warmup: int):
        self.warmup, self.steps, self.started, self.warm_at, self.ended = warmup, 0, None, None, None

    def start(self):
        self.started = time.perf_counter()

    def step(self):
        self.steps += 1
        if self.steps == self.warmup:
            self.warm_at = time.perf_counter()
        self.ended = time.perf_counter()

    def figures(self, batch_size: int) -> dict:
        timed = self.steps - self.warmup
        seconds = self.ended - self.warm_at
        return {
            "steps_timed": timed,
            "seconds_timed": round(seconds, 2),
            "startup_seconds": round(self.warm_at - self.started, 2),
            "examples_per_sec": round(timed * batch_size / seconds, 1),
        }


def keras_fit(hp: dict, steps: int, batch_size: int, warmup: int, images, labels) -> dict:
    """Plain Keras: Sequential CNN, Adam, model.fit on NumPy arrays for `steps` batches."""
    import tensorflow as tf

    k = hp["kernel_size"]
    net = tf.keras.Sequential(
        [
            tf.keras.layers.Rescaling(1 / 255.0, input_shape=(784,)),
            tf.keras.layers.Reshape((28, 28, 1)),
            tf.keras.layers.Conv2D(hp["conv1_filters"], k, padding="same", activation="relu"),
            tf.keras.layers.MaxPool2D(2, 2),
            tf.keras.layers.Conv2D(hp["conv2_filters"], k, padding="same", activation="relu"),
            tf.keras.layers.MaxPool2D(2, 2),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(hp["dense_units"], activation="relu"),
            tf.keras.layers.Dropout(hp["dropout_rate"]),
            tf.keras.layers.Dense(10),
        ]
    )
    net.compile(
        optimizer=tf.keras.optimizers.Adam(hp["learning_rate"]),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    clock = _StepClock(warmup)

    class Clock(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            clock.step()

    x = images.reshape(len(images), -1).astype("float32")
    per_epoch = len(x) // batch_size
    clock.start()
    net.fit(
        x,
        labels.astype("int64"),
        batch_size=batch_size,
        epochs=-(-steps // per_epoch),
        steps_per_epoch=min(steps, per_epoch),
        shuffle=True,
        verbose=0,
        callbacks=[Clock()],
    )
    return clock.figures(batch_size)


def estimator_train(cfg, examples_uri: str, steps: int, warmup: int) -> dict:
    """The pipeline's model_fn and input_fn under tf.estimator.Estimator.train."""
    import tensorflow as tf

    from components.trainer import inputs

    clock = _StepClock(warmup)

    class Clock(tf.compat.v1.train.SessionRunHook):
        def after_run(self, run_context, run_values):
            clock.step()

    with tempfile.TemporaryDirectory() as model_dir:
        estimator = tf.estimator.Estimator(
            model_fn=model_lib.model_fn,
            params=dataclasses.asdict(cfg),
            config=tf.estimator.RunConfig(
                model_dir=model_dir,
                tf_random_seed=cfg.random_seed,
                save_checkpoints_steps=10**9,
                log_step_count_steps=10**9,
            ),
        )
        input_fn = inputs.make_input_fn(
            examples_uri, "train", cfg.batch_size, training=True, seed=cfg.random_seed
        )
        clock.start()
        estimator.train(input_fn, steps=steps, hooks=[Clock()])
    return clock.figures(cfg.batch_size)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="training steps per contender")
    parser.add_argument("--warmup", type=int, default=WARMUP_STEPS, help="untimed first steps")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the pipeline's")
    parser.add_argument(
        "--pipeline-root",
        default=os.path.join(tempfile.gettempdir(), "mnist-bench"),
        help="where the Examples artifact is made (reused when cached)",
    )
    parser.add_argument("--skip-keras", action="store_true")
    parser.add_argument("--bfloat16", action="store_true", help="also run both in mixed bfloat16")
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/trainer.json")
    args = parser.parse_args()

    from pipeline.config import TrainerConfig
    from pipeline.formats import idx

    default_cfg = TrainerConfig()
    if args.batch_size:
        default_cfg = dataclasses.replace(default_cfg, batch_size=args.batch_size)
    # Like for like with the Keras model: the same network and optimizer, nothing else.
    cfg = dataclasses.replace(
        default_cfg,
        augment_max_shift=0.0,
        augment_max_rotation=0.0,
        augment_max_scale=0.0,
        augment_elastic_alpha=0.0,
        learning_rate_decay="none",
        precision="float32",
    )
    hp = dataclasses.asdict(cfg)
    examples = common.examples_uri(args.pipeline_root)

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    mflop = training_mflop_per_example(hp)
    peak = matmul_peak_gflops()
    peak_bf16 = matmul_peak_gflops(dtype=tf.bfloat16)
    results = {}
    dataset = idx.load_dataset(str(common.PROJECT_ROOT / "data" / "mnist"))
    train_images, train_labels = dataset.train.images.array, dataset.train.labels.array
    if not args.skip_keras:
        results["keras_fit_numpy"] = keras_fit(
            hp, args.steps, cfg.batch_size, args.warmup, train_images, train_labels
        )
    results["pipeline_estimator"] = estimator_train(cfg, examples, args.steps, args.warmup)
    results["pipeline_estimator_default_config"] = estimator_train(
        default_cfg, examples, args.steps, args.warmup
    )
    if args.bfloat16:
        bf16 = dataclasses.replace(cfg, precision="mixed_bfloat16")
        results["pipeline_estimator_bfloat16"] = estimator_train(bf16, examples, args.steps, args.warmup)
        if not args.skip_keras:
            tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
            results["keras_fit_numpy_bfloat16"] = keras_fit(
                hp, args.steps, cfg.batch_size, args.warmup, train_images, train_labels
            )
            tf.keras.mixed_precision.set_global_policy("float32")

    rows = []
    for name, fig in results.items():
        fig["gflops"] = round(fig["examples_per_sec"] * mflop / 1000, 1)
        # Against the float32 peak, as the target is stated, also for bfloat16 runs.
        fig["percent_of_matmul_peak"] = round(100 * fig["gflops"] / peak, 1)
        rows.append(
            [
                name,
                fig["examples_per_sec"],
                fig["gflops"],
                f"{fig['percent_of_matmul_peak']}%",
                fig["startup_seconds"],
                fig["steps_timed"],
            ]
        )
    common.print_table(
        f"Training throughput, batch {cfg.batch_size}, {mflop:.1f} MFLOP/example, "
        f"float32 matmul peak {peak:.0f} GFLOP/s (bfloat16 {peak_bf16:.0f})",
        rows,
        ["contender", "examples/s", "GFLOP/s", "of peak", "start-up s", "steps timed"],
    )
    if "keras_fit_numpy" in results:
        ratio = (
            results["pipeline_estimator"]["examples_per_sec"] / results["keras_fit_numpy"]["examples_per_sec"]
        )
        print(f"\npipeline / Keras throughput: {ratio:.2f}x")
        results["pipeline_over_keras"] = round(ratio, 3)
    common.write_json(
        "trainer",
        {
            "batch_size": cfg.batch_size,
            "mflop_per_example": round(mflop, 2),
            "matmul_peak_gflops": round(peak, 1),
            "matmul_peak_gflops_bfloat16": round(peak_bf16, 1),
            "results": results,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
