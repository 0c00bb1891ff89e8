"""Test-time augmentation: a trained run's last checkpoints scored on the eval split (to choose)
and the test split (to report), each digit classified as it is and by the mean probabilities
over a few shifted or rotated copies of it.

    .venv/bin/python benchmarks/bench_test_time_augmentation.py --model-dir DIR [--last 4]
        [--set conv1_filters=24 ...] [--pipeline-root DIR] [--json FILE]

--model-dir holds `tf.estimator` checkpoints of the default network
(`components.trainer.model.build_logits`), e.g. the directory `bench_weight_averaging.py` prints;
--set overrides `[trainer]` keys the network's shape depends on. The raw weights are restored
(not moving averages). Views are resampled bilinearly with the trainer's own affine transform
(`components.trainer.augmentation.transform_images`), zeros filling the border. A paired reading:
same checkpoint, only the views differ. Prints a table and writes
benchmarks/results/test_time_augmentation_<name of --model-dir>.json. Serving with V views
costs V forward passes per digit.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import math
import os
import tempfile

import common
import numpy as np


def view_sets() -> dict:
    """Name -> the (shift right, shift down in pixels, rotation in degrees) of each copy, the
    digit itself first: the trainer's served sets ("shifts4" is trainer.test_time_augmentation
    "shifts", "shifts4+rotations2" is "shifts_rotations") and two more to compare with."""
    from components.trainer.test_time_augmentation import VIEW_SETS as SERVED

    identity = (0.0, 0.0, 0.0)
    return {
        "none": [identity],
        "shifts4": [identity, *SERVED["shifts"]],
        "shifts8": [identity]
        + [(dx, dy, 0.0) for dx in (-1.0, 0.0, 1.0) for dy in (-1.0, 0.0, 1.0) if dx or dy],
        "rotations2": [identity, *SERVED["shifts_rotations"][len(SERVED["shifts"]) :]],
        "shifts4+rotations2": [identity, *SERVED["shifts_rotations"]],
    }


def read_split(examples: str, split: str):
    """(images float32 [N, 784] 0..255, labels int64 [N]) of `split` in the Examples at `examples`."""
    import tensorflow as tf

    from pipeline.formats import examples as examples_format

    files = sorted(tf.io.gfile.glob(examples_format.split_pattern(examples, split)))
    spec = {
        examples_format.IMAGE_KEY: tf.io.FixedLenFeature([examples_format.IMAGE_SIDE**2], tf.int64),
        examples_format.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
    }
    images, labels = [], []
    for batch in (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(2000)
        .map(lambda records: tf.io.parse_example(records, spec))
        .as_numpy_iterator()
    ):
        images.append(batch[examples_format.IMAGE_KEY])
        labels.append(batch[examples_format.LABEL_KEY])
    return np.concatenate(images).astype(np.float32), np.concatenate(labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--last", type=int, default=4, help="checkpoints scored, the latest ones")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [trainer] key of the network's shape, e.g. conv1_filters=24",
    )
    parser.add_argument("--pipeline-root", default=os.path.join(tempfile.gettempdir(), "bench-wa-root"))
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    import tensorflow as tf

    from components.trainer import augmentation, model
    from pipeline.config import TrainerConfig
    from pipeline.formats.examples import IMAGE_SIDE

    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    named_sets = view_sets()
    overrides = {key: ast.literal_eval(value) for key, value in (item.split("=", 1) for item in args.set)}
    params = dict(
        dataclasses.asdict(TrainerConfig()), **overrides, precision="float32", weight_averaging_decay=0.0
    )
    hp = model.hyperparameters(params)
    examples = common.examples_uri(args.pipeline_root)
    splits = {split: read_split(examples, split) for split in ("eval", "test")}
    views = sorted({view for view_set in named_sets.values() for view in view_set})
    checkpoints = tf.train.get_checkpoint_state(args.model_dir).all_model_checkpoint_paths[-args.last :]

    graph = tf.Graph()
    with graph.as_default():
        pixels = tf.compat.v1.placeholder(tf.float32, [None, IMAGE_SIDE**2])
        view = tf.compat.v1.placeholder(tf.float32, [3])  # shift right, shift down, degrees
        count = tf.shape(pixels)[:1]
        moved = augmentation.transform_images(
            tf.reshape(pixels, [-1, IMAGE_SIDE, IMAGE_SIDE, 1]),
            tf.fill(count, view[2] * math.pi / 180),
            tf.fill(count, view[0]),
            tf.fill(count, view[1]),
        )
        probabilities = tf.nn.softmax(
            model.build_logits(tf.reshape(moved, [-1, IMAGE_SIDE**2]), hp, training=False)
        )
        saver = tf.compat.v1.train.Saver()
        rows = []
        with tf.compat.v1.Session() as session:
            for checkpoint in checkpoints:
                saver.restore(session, checkpoint)
                row = {"step": int(checkpoint.rsplit("-", 1)[1])}
                for split, (images, labels) in splits.items():
                    per_view = {
                        v: np.concatenate(
                            [
                                session.run(probabilities, {pixels: images[at : at + 1000], view: v})
                                for at in range(0, len(images), 1000)
                            ]
                        )
                        for v in views
                    }
                    for name, view_set in named_sets.items():
                        mean = np.mean([per_view[v] for v in view_set], axis=0)
                        row[f"{split}_{name}"] = float(np.mean(mean.argmax(axis=1) == labels))
                rows.append(row)
                print(
                    f"step {row['step']}: eval "
                    + ", ".join(f"{name} {row['eval_' + name]:.4%}" for name in named_sets),
                    flush=True,
                )

    common.print_table(
        f"test-time augmentation, {args.model_dir}",
        [
            [r["step"]] + [f"{r[f'{split}_{name}']:.2%}" for split in ("eval", "test") for name in named_sets]
            for r in rows
        ],
        ["step"]
        + [f"{split} {name} ({len(named_sets[name])})" for split in ("eval", "test") for name in named_sets],
    )
    name = os.path.basename(os.path.normpath(args.model_dir))
    common.write_json(
        f"test_time_augmentation_{name}",
        {
            "model_dir": args.model_dir,
            "overrides": overrides,
            "view_sets": {name: [list(v) for v in view_set] for name, view_set in named_sets.items()},
            "checkpoints": rows,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
