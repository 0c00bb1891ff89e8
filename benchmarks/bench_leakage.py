"""The data gate's train/test leakage check on the full shipped MNIST (70,000 digits).

    .venv/bin/python benchmarks/bench_leakage.py [--repeats 2] [--altered 2000]

Prints and writes (benchmarks/results/leakage.json):
- cost: each repeat runs `run_local.py --to example_validator` into a fresh pipeline root and
  reads from the run summary the check's own seconds (reading every split's examples included,
  the validator's `leakage.seconds`, and of them `leakage.read_seconds`) beside StatisticsGen's
  step seconds on the same data;
- natural rate: the exact and near duplicates the check finds in the shipped MNIST (training
  and eval digits against the 10,000 test digits), and how many training digits have a
  candidate test digit within 5, 10, 15, 20 and 30 differing pixels (why NEAR_MAX_PIXELS is 10);
- what it catches: the share of `--altered` test digits found again after an alteration (a few
  pixels repainted, noise, darker, a one-pixel shift), each planted among the training digits.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import tempfile

import common
import numpy as np

from components.example_validator import leakage
from pipeline.config import DEFAULT_DATA_ROOT

TOTAL_EXAMPLES = 70_000
NEAR_THRESHOLDS = (5, 10, 15, 20, 30)


def read_idx_images(name: str) -> np.ndarray:
    with gzip.open(os.path.join(DEFAULT_DATA_ROOT, name), "rb") as f:
        data = f.read()
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, leakage.IMAGE_PIXELS)


def one_run(root: str) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    run = common.run_pipeline(root, ["--to", "example_validator"])
    found = common.summary_step(run.summary, "example_validator")["properties"]["leakage"]
    statistics_seconds = common.summary_step(run.summary, "statistics_gen")["seconds"]
    return {
        "leakage_seconds": found["seconds"],
        "read_seconds": found["read_seconds"],
        "statistics_gen_seconds": statistics_seconds,
        "share_of_statistics_gen": round(found["seconds"] / statistics_seconds, 3),
        "found": found,
    }


def nearest_candidates(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Per training digit: the fewest differing pixels to a candidate test digit (784 if none)."""
    best = np.full(len(train), leakage.IMAGE_PIXELS)
    for keys, test_keys in zip(leakage.block_signatures(train), leakage.block_signatures(test)):
        rows, test_rows = leakage.candidate_pairs(keys, test_keys)
        for start in range(0, len(rows), 100_000):
            r, t = rows[start : start + 100_000], test_rows[start : start + 100_000]
            np.minimum.at(best, r, leakage.differing_pixels(train[r], test[t]))
    return best


def alterations(digits: np.ndarray, rng: np.random.Generator) -> dict:
    """{name: altered copies of `digits`}."""
    repainted = digits.copy()
    for row in repainted:
        pixels = rng.choice(leakage.IMAGE_PIXELS, size=5, replace=False)
        row[pixels] = rng.integers(0, 256, size=5)
    noise = rng.integers(-10, 11, size=digits.shape)
    images = digits.reshape(-1, 28, 28)
    shifted = np.zeros_like(images)
    shifted[:, :, 1:] = images[:, :, :-1]
    return {
        "5 pixels repainted": repainted,
        "noise +-10 grey levels": np.clip(digits.astype(np.int16) + noise, 0, 255).astype(np.uint8),
        "10% darker": (digits * 0.9).astype(np.uint8),
        "shifted 1 pixel right": shifted.reshape(digits.shape),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--altered", type=int, default=2000, help="test digits altered per alteration")
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/leakage.json")
    args = parser.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="mnist-bench-leakage-")
    runs = [one_run(f"{work}/run") for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["share_of_statistics_gen"])
    found = best["found"]

    train, test = read_idx_images("train-images-idx3-ubyte.gz"), read_idx_images("t10k-images-idx3-ubyte.gz")
    nearest = nearest_candidates(train, test)
    natural = {n: int((nearest <= n).sum()) for n in NEAR_THRESHOLDS}

    rng = np.random.default_rng(0)
    planted_from = test[: args.altered]
    caught = {}
    for name, altered in alterations(planted_from, rng).items():
        result = leakage.find_leakage({"train": np.concatenate([train, altered])}, test)
        planted = set(range(len(train), len(train) + len(altered)))
        hits = planted & set(result.near["train"]) | planted & set(result.exact["train"])
        caught[name] = round(len(hits) / len(altered), 4)

    common.print_table(
        f"Train/test leakage on the full MNIST ({TOTAL_EXAMPLES} digits), best of {len(runs)}",
        [
            ["check (reading included), s", best["leakage_seconds"]],
            ["  of which reading the examples, s", best["read_seconds"]],
            ["StatisticsGen step, s", best["statistics_gen_seconds"]],
            ["check / StatisticsGen", best["share_of_statistics_gen"]],
            [
                "all repeats: check / StatisticsGen",
                ", ".join(str(r["share_of_statistics_gen"]) for r in runs),
            ],
            ["exact duplicates found", found["exact_duplicates"]],
            ["near duplicates found", f"{found['near_duplicates']} ({found['near_duplicate_rate']:.4%})"],
            *[[f"training digits with a candidate within {n} px", count] for n, count in natural.items()],
            *[[f"caught: {name}", f"{share:.1%}"] for name, share in caught.items()],
        ],
        ["figure", "value"],
    )
    common.write_json(
        "leakage",
        {"best": best, "runs": runs, "natural_within_pixels": natural, "caught": caught},
        args.json,
    )
    shutil.rmtree(work, ignore_errors=True) if not args.work_dir else None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
