"""How far real MNIST slices and Fashion-MNIST lie from the shipped MNIST reference: the figures
behind `validation.reference_label_drift_linf` and `reference_pixel_drift_jsd`.

    .venv/bin/python benchmarks/bench_reference.py [--fashion-root /usr/share/datasets/fashion-mnist]

1. The gate itself: `run_local.py --to example_validator` as its own process, into a fresh
   pipeline root per case (so every span is a first span, compared with the reference), on the
   real MNIST slices the tests use as first spans, at several offsets, and on Fashion-MNIST
   (the slice shipped in tests/data, plus larger slices of Debian's `dataset-fashion-mnist`
   when it is installed). Reports the exit status and the two distances from the run summary.
2. A sweep over every non-overlapping window of the 60,000 training digits (and of Fashion's,
   when installed), for window sizes from 240 to 6,000: the train split ExampleGen would make
   (`components.example_gen.encode.split_of`, the same content hash) and its exact label and
   pixel histograms (`numpy.bincount`, which is what StatisticsGen's exact histograms count;
   the gate cases of part 1 are recomputed this way too and must agree to 1e-9, checked).
Prints both tables and writes benchmarks/results/reference.json. About 3 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import common
import numpy as np

sys.path.insert(0, str(common.PROJECT_ROOT / "tests"))

from mnist_slices import write_idx  # noqa: E402

from components.example_gen.encode import split_of  # noqa: E402
from components.example_validator.drift import js_divergence, linf_distance  # noqa: E402
from pipeline.config import DEFAULT_DATA_ROOT, DEFAULT_REFERENCE_PATH, DataConfig, ValidationConfig  # noqa: E402
from pipeline.formats.reference import parse_reference  # noqa: E402

SHIPPED_FASHION = common.PROJECT_ROOT / "tests" / "data" / "fashion_mnist"
# (train digits, test digits, offset): the first spans the tests feed the gate, then other offsets.
MNIST_CASES = [
    (1000, 200, 0),
    (1200, 300, 0),
    (1500, 1000, 0),
    (2000, 400, 0),
    (2000, 500, 0),
    (1000, 200, 1000),
    (1200, 300, 1200),
    (1500, 1000, 1500),
    (2000, 400, 2000),
    (3000, 500, 7000),
    (600, 100, 30000),
]
FASHION_CASES = [(1000, 200, 0), (3000, 500, 20000), (60000, 10000, 0)]
WINDOWS = (240, 300, 600, 1000, 1500, 2000, 3000, 6000)
FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def load(root, name) -> np.ndarray:
    with gzip.open(os.path.join(root, name)) as f:
        raw = f.read()
    data = np.frombuffer(raw[16 if "images" in name else 8 :], dtype=np.uint8)
    return data.reshape(-1, 28, 28) if "images" in name else data


def write_slice(source: str, dest: str, n_train: int, n_test: int, offset: int) -> str:
    """Records [offset, offset + n) of the training files, and n_test test records (from the
    same offset when the 10,000 test records reach that far, else from 0; the gate's drift
    check reads only the training files)."""
    os.makedirs(dest, exist_ok=True)
    test_offset = offset if offset + n_test <= 10000 else 0
    for name, n, start in zip(
        FILES, (n_train, n_train, n_test, n_test), (offset, offset, test_offset, test_offset)
    ):
        write_idx(os.path.join(dest, name), load(source, name)[start : start + n])
    return dest


def gate(data_root: str, work: str) -> dict:
    """The data half on `data_root` into a fresh root: exit status, distances, message."""
    root = tempfile.mkdtemp(dir=work)
    summary_path = os.path.join(root, "summary.json")
    done = subprocess.run(
        [
            sys.executable,
            str(common.PROJECT_ROOT / "run_local.py"),
            "--data-root",
            data_root,
            "--pipeline-root",
            root,
            "--to",
            "example_validator",
            "--summary-json",
            summary_path,
        ],
        cwd=common.PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    summary = json.load(open(summary_path))
    validator = summary["steps"]["example_validator"].get("properties") or {}
    return {
        "exit": done.returncode,
        "baseline": validator.get("drift_baseline"),
        "train_examples": (validator.get("split_counts") or {}).get("train"),
        "label_linf": validator.get("drift", {}).get("label_l_infinity"),
        "pixel_jsd": validator.get("drift", {}).get("image_jensen_shannon_divergence"),
        "message": summary.get("message"),
    }


def distances(images, labels, reference) -> tuple:
    """(train-split size, label L-inf, pixel JSD) of a slice of training records, as the gate measures."""
    train = split_of("train", images, labels, DataConfig().eval_hash_buckets) == "train"
    return (
        int(train.sum()),
        linf_distance(np.bincount(labels[train], minlength=10), reference.histograms["label"]),
        js_divergence(np.bincount(images[train].ravel(), minlength=256), reference.histograms["image"]),
    )


def sweep(images, labels, reference, size) -> dict:
    values = np.array(
        [
            distances(images[o : o + size], labels[o : o + size], reference)[1:]
            for o in range(0, len(labels) - size + 1, size)
        ]
    )
    return {
        "window": size,
        "windows": len(values),
        "label_max": round(float(values[:, 0].max()), 5),
        "label_p99": round(float(np.percentile(values[:, 0], 99)), 5),
        "pixel_min": round(float(values[:, 1].min()), 5),
        "pixel_max": round(float(values[:, 1].max()), 5),
        "pixel_p99": round(float(np.percentile(values[:, 1], 99)), 5),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fashion-root",
        default="/usr/share/datasets/fashion-mnist",
        help="the full Fashion-MNIST (Debian's dataset-fashion-mnist); skipped when absent",
    )
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/reference.json")
    args = parser.parse_args()
    reference = parse_reference(DEFAULT_REFERENCE_PATH.read_bytes(), str(DEFAULT_REFERENCE_PATH))
    limits = ValidationConfig()
    fashion = args.fashion_root if os.path.isfile(os.path.join(args.fashion_root, FILES[0])) else None
    started = time.perf_counter()

    cases = []
    with tempfile.TemporaryDirectory(prefix="mnist-bench-ref-") as work:
        sources = [("MNIST", str(DEFAULT_DATA_ROOT), c) for c in MNIST_CASES]
        sources.append(("Fashion (tests/data slice)", str(SHIPPED_FASHION), (1000, 200, 0)))
        sources += [("Fashion", fashion, c) for c in FASHION_CASES] if fashion else []
        for kind, source, (n_train, n_test, offset) in sources:
            data = (
                source
                if source == str(SHIPPED_FASHION)
                else write_slice(source, tempfile.mkdtemp(dir=work), n_train, n_test, offset)
            )
            result = gate(data, work)
            # The same figures recomputed from the raw records (checks the sweep's emulation).
            images, labels = load(data, FILES[0]), load(data, FILES[1])
            _, label, pixel = distances(images, labels, reference)
            assert result["label_linf"] is not None, result  # the gate measured drift
            assert abs(label - result["label_linf"]) < 1e-6 and abs(pixel - result["pixel_jsd"]) < 1e-6, (
                result
            )
            cases.append({"data": kind, "train": n_train, "test": n_test, "offset": offset, **result})
            print(f"  {kind} {n_train}/{n_test} @{offset}: exit {result['exit']}", flush=True)

    sweeps = {
        "MNIST": [
            sweep(load(DEFAULT_DATA_ROOT, FILES[0]), load(DEFAULT_DATA_ROOT, FILES[1]), reference, s)
            for s in WINDOWS
        ]
    }
    if fashion:
        sweeps["Fashion"] = [
            sweep(load(fashion, FILES[0]), load(fashion, FILES[1]), reference, s) for s in WINDOWS
        ]

    common.print_table(
        f"First spans through the gate (limits: label L-inf {limits.reference_label_drift_linf}, "
        f"pixel JSD {limits.reference_pixel_drift_jsd})",
        [
            [
                c["data"],
                f"{c['train']}/{c['test']}",
                c["offset"],
                c["train_examples"],
                c["label_linf"],
                c["pixel_jsd"],
                c["exit"],
            ]
            for c in cases
        ],
        ["data", "train/test", "offset", "train split", "label L-inf", "pixel JSD", "exit"],
    )
    for kind, rows in sweeps.items():
        common.print_table(
            f"{kind}: every non-overlapping window of the training file, train split vs the reference",
            [
                [
                    r["window"],
                    r["windows"],
                    r["label_p99"],
                    r["label_max"],
                    r["pixel_min"],
                    r["pixel_p99"],
                    r["pixel_max"],
                ]
                for r in rows
            ],
            ["window", "windows", "label p99", "label max", "pixel min", "pixel p99", "pixel max"],
        )
    common.write_json(
        "reference",
        {
            "limits": {
                "reference_label_drift_linf": limits.reference_label_drift_linf,
                "reference_pixel_drift_jsd": limits.reference_pixel_drift_jsd,
            },
            "fashion_root": fashion,
            "cases": cases,
            "sweeps": sweeps,
            "seconds": round(time.perf_counter() - started, 1),
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
