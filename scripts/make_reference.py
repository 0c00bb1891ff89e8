#!/usr/bin/env python3
"""Regenerates the reference statistics the data gate compares a first span with.

    .venv/bin/python scripts/make_reference.py            # data/mnist -> data/reference/mnist_train_statistics.json
    .venv/bin/python scripts/make_reference.py --check    # exit 1 when the shipped file would change
    .venv/bin/python scripts/make_reference.py --data-root DIR --out FILE --name "the reference of DIR"

It runs the project's own code path, `run_local.py --to statistics_gen` (in-process through
`pipeline.cli.main`), on the data root into a temporary pipeline root, then sums the exact label
and pixel-value histograms of the splits ExampleGen makes from the *training* files (train and
eval: the whole training set; the t10k files form the test split and are left out), and writes
them with the sha256 of the source files (`pipeline.formats.reference`). The output is
deterministic (sorted keys, no timestamp), so regenerating from the same files gives the same
bytes; its sha256 goes into `SHA256SUMS` beside it (`sha256sum -c SHA256SUMS` checks it).

Input: a folder holding the four MNIST-format IDX .gz files (not a folder of span-N/ folders).
Output: the reference JSON and SHA256SUMS. Exit status: 0 written (or, with --check,
unchanged), 1 the shipped file differs (--check), 2 bad usage or input. About 20 s on the
full MNIST with 2 cores.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parent.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from pipeline.cli import main as run_local  # noqa: E402
from pipeline.config import DEFAULT_DATA_ROOT, DEFAULT_REFERENCE_PATH  # noqa: E402
from pipeline.core.atomic_files import write_bytes_atomic, write_text_atomic  # noqa: E402
from pipeline.formats import reference as reference_format  # noqa: E402
from pipeline.formats import statistics as stats_format  # noqa: E402
from pipeline.formats.idx import DATASET_FILES, TRAIN_IMAGES, TRAIN_LABELS  # noqa: E402

# ExampleGen's splits of the training files (components/example_gen/encode.py: the t10k files
# form "test"). Their sum is the whole training set, whatever eval_hash_buckets is.
TRAINING_SPLITS = ("train", "eval")
SHIPPED_NAME = "the shipped MNIST reference"


class UsageError(Exception):
    """Bad arguments or input folder (exit status 2)."""


def compute_histograms(data_root: str, work_dir: str) -> dict:
    """Runs ExampleGen and StatisticsGen on `data_root` into `work_dir`; returns the summed
    histograms of TRAINING_SPLITS.

    Returns {"histograms": {feature: int64 counts}, "out_of_range": {feature: int},
    "splits": {split: examples}}. Raises UsageError when the data root is not a folder of the
    four files, RuntimeError when the run fails or a histogram is missing.
    """
    missing = [name for name in DATASET_FILES if not os.path.isfile(os.path.join(data_root, name))]
    if missing:
        raise UsageError(
            f"{data_root}: expected a folder holding the four MNIST IDX files, {missing[0]} is missing"
        )
    # The reference must not depend on itself: the gate's reference check is off for this run
    # (it stops after statistics_gen anyway, but the pipeline is built whole, and checks its file).
    config = os.path.join(work_dir, "config.json")
    with open(config, "w", encoding="utf-8") as f:
        json.dump({"validation": {"reference_check": False}}, f)
    summary_path = os.path.join(work_dir, "summary.json")
    code = run_local(
        [
            "--config",
            config,
            "--data-root",
            data_root,
            "--pipeline-root",
            os.path.join(work_dir, "root"),
            "--to",
            "statistics_gen",
            "--summary-json",
            summary_path,
        ]
    )
    if code != 0:
        raise RuntimeError(f"run_local.py --to statistics_gen on {data_root} exited with {code}")
    with open(summary_path, encoding="utf-8") as f:
        statistics_uri = json.load(f)["steps"]["statistics_gen"]["outputs"]["statistics"]

    split_stats = stats_format.read_split_statistics(statistics_uri)
    histograms = {f: np.zeros(bins, dtype=np.int64) for f, bins in reference_format.FEATURE_BINS.items()}
    out_of_range = dict.fromkeys(histograms, 0)
    splits = {}
    for split in TRAINING_SPLITS:
        if split not in split_stats:
            continue  # a tiny data root can leave eval empty
        dataset = split_stats[split].datasets[0]
        splits[split] = int(dataset.num_examples)
        for feature in histograms:
            found = stats_format.read_value_histogram(dataset, feature)
            if found is None:
                raise RuntimeError(f"{statistics_uri}: split {split} has no exact histogram of {feature}")
            histograms[feature] += found[0]
            out_of_range[feature] += found[1]
    return {"histograms": histograms, "out_of_range": out_of_range, "splits": splits}


def source_digests(data_root: str) -> dict:
    """{file: {"sha256", "sha256_decompressed"}} of the two training files the reference counts.

    The decompressed digest is the one `run_local.py download` pins for the canonical MNIST
    (the .gz bytes depend on the compressor).
    """
    digests = {}
    for name in (TRAIN_IMAGES, TRAIN_LABELS):
        raw = Path(data_root, name).read_bytes()
        digests[name] = {
            "sha256": hashlib.sha256(raw).hexdigest(),
            "sha256_decompressed": hashlib.sha256(gzip.decompress(raw)).hexdigest(),
        }
    return digests


def _display(path: str) -> str:
    """`path` relative to the project when inside it (the shipped file names no machine's paths)."""
    absolute = Path(path).resolve()
    try:
        return str(absolute.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(absolute)


def build_reference(data_root: str, name: str | None = None, work_dir: str | None = None) -> bytes:
    """The reference file's bytes for `data_root` (see the module docstring)."""
    name = name or (
        SHIPPED_NAME
        if Path(data_root).resolve() == DEFAULT_DATA_ROOT.resolve()
        else f"the reference of {_display(data_root)}"
    )
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        figures = compute_histograms(data_root, tmp)
    count = sum(figures["splits"].values())
    return reference_format.reference_bytes(
        name=name,
        description=(
            f"Label and pixel-value histograms of the {count} training examples of "
            f"{_display(data_root)} (ExampleGen's train and eval splits), by StatisticsGen."
        ),
        histograms=figures["histograms"],
        out_of_range=figures["out_of_range"],
        splits=figures["splits"],
        sources=source_digests(data_root),
        generated_by=f"scripts/make_reference.py --data-root {_display(data_root)}",
    )


def write_reference(out: str, data: bytes) -> str:
    """Writes `data` to `out` and its sha256 into `SHA256SUMS` beside it; returns the digest."""
    folder = os.path.dirname(os.path.abspath(out))
    os.makedirs(folder, exist_ok=True)
    write_bytes_atomic(out, data)
    sums_path = os.path.join(folder, reference_format.SUMS_FILE)
    sums = reference_format.parse_sums(Path(sums_path).read_text()) if os.path.isfile(sums_path) else {}
    sums[os.path.basename(out)] = digest = hashlib.sha256(data).hexdigest()
    write_text_atomic(sums_path, reference_format.format_sums(sums))
    return digest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data-root",
        default=str(DEFAULT_DATA_ROOT),
        help="a folder of the four IDX .gz files (default: the shipped data/mnist)",
    )
    parser.add_argument("--out", default=str(DEFAULT_REFERENCE_PATH), help="the reference JSON to write")
    parser.add_argument("--name", help=f"how the gate names it (default: {SHIPPED_NAME!r} for data/mnist)")
    parser.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = parser.parse_args(argv)
    try:
        data = build_reference(args.data_root, args.name)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.check:
        same = os.path.isfile(args.out) and Path(args.out).read_bytes() == data
        print(f"{args.out}: {'up to date' if same else 'DIFFERS from what the data gives'}")
        return 0 if same else 1
    digest = write_reference(args.out, data)
    print(f"wrote {args.out} (sha256 {digest}) and {reference_format.SUMS_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
