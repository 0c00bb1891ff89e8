"""A scheduled retrain warm started from the serving model against a cold training of the same data.

    .venv/bin/python benchmarks/bench_warm_retrain.py [--sequences chain halves thirds]
                                                       [--work-dir DIR] [--json FILE]

The span sequences cut MNIST's 60,000 training digits, shuffled by the sequence's seed, into a
first span and later ones (the 10,000 test digits are dealt round-robin over the spans, so the
pipeline's own evaluator always has test digits of every span it reads):

- chain: a first span of 50,000, then 5 spans of 2,000 (5 successive warm retrains);
- halves: 30,000, then 30,000 (the setting where warm starts are known to generalise worst);
- thirds: 40,000, then 20,000.

Each sequence runs `run_local.py` as a process, one run per span, into one pipeline root with the
default config plus `trainer.warm_start = true` and `data.window_spans` covering every span so
far: the first run trains cold (nothing serves yet), each later one warm starts from the model
the gate pushed last. The cold comparison is one default run on all 60,000 training digits
(`data/mnist`): content-hashed eval buckets make its train and eval splits the very digits each
sequence ends with. Every model is scored here on all 10,000 test digits (the serving
signature, as users get it), and each warm model is compared with the cold one by the gate's
paired statistics: non-inferior when the lower bound of the 95% Newcombe interval of warm minus
cold is >= -0.003. Cost: the trainer's training seconds (`train_seconds`), warm over the cold
comparison and over the sequence's own first (cold, default) training minutes before, both from
this one run, with each run's examples/s to see the machine's load at the time. The gate pushes
a retrain that is not worse than the serving model (`evaluator.promotion_policy =
"non_inferiority"`), so each retrain is the next one's base.

The work dir is kept: a later call with the same `--work-dir` reuses the cold run and resumes
each sequence in its pipeline root (its completed runs are cache hits).

Prints the tables and writes benchmarks/results/warm_retrain.json. Takes about 70 minutes on
2 cores (4 cold trainings, 7 warm ones). Exit 1 when a run fails or a goal is missed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile

import common
import numpy as np

from components.evaluator import paired_stats
from pipeline.config import DEFAULT_DATA_ROOT
from pipeline.formats import idx
from pipeline.formats.model import SERVING_SUBDIR

MARGIN = -0.003
ALPHA = 0.05
TARGET_COST = 0.25
TARGET_EACH_GENERATION = 0.9960


@dataclasses.dataclass(frozen=True)
class SpanSequence:
    """MNIST's training digits shuffled by `seed`, cut into spans of these sizes (first first)."""

    seed: int
    sizes: tuple[int, ...]


SEQUENCES = {
    "chain": SpanSequence(101, (50_000,) + (2_000,) * 5),
    "halves": SpanSequence(102, (30_000, 30_000)),
    "thirds": SpanSequence(103, (40_000, 20_000)),
}


def load_mnist() -> tuple[idx.MnistDataset, np.ndarray, np.ndarray]:
    """The shipped MNIST: (dataset, test images float32 [10000, 784], test labels)."""
    dataset = idx.load_dataset(DEFAULT_DATA_ROOT)
    test = dataset.test
    return (
        dataset,
        test.images.array.reshape(len(test.labels.array), -1).astype(np.float32),
        test.labels.array,
    )


def write_spans(dataset: idx.MnistDataset, sequence: SpanSequence, data_root: str) -> None:
    """Writes `sequence`'s span-N folders under data_root (kept when already complete)."""
    done = os.path.join(data_root, ".complete")
    if os.path.exists(done):
        return
    train_images, train_labels = dataset.train.images.array, dataset.train.labels.array
    if sum(sequence.sizes) != len(train_labels):
        raise ValueError(f"spans {sequence.sizes} must cut all {len(train_labels)} training digits")
    order = np.random.default_rng(sequence.seed).permutation(len(train_labels))
    test_images, test_labels = dataset.test.images.array, dataset.test.labels.array
    n_spans, start = len(sequence.sizes), 0
    for span, size in enumerate(sequence.sizes):
        folder = os.path.join(data_root, f"span-{span}")
        os.makedirs(folder, exist_ok=True)
        rows = np.sort(order[start : start + size])
        start += size
        test_rows = np.arange(span, len(test_labels), n_spans)
        idx.write_idx(os.path.join(folder, idx.TRAIN_IMAGES), train_images[rows])
        idx.write_idx(os.path.join(folder, idx.TRAIN_LABELS), train_labels[rows])
        idx.write_idx(os.path.join(folder, idx.TEST_IMAGES), test_images[test_rows])
        idx.write_idx(os.path.join(folder, idx.TEST_LABELS), test_labels[test_rows])
    open(done, "w").close()


def run_config(directory: str, span: int, warm_start_steps: int | None) -> str:
    """A config reading spans 0..`span` (the window ends at `span`, not at the newest span),
    warm starting (with `warm_start_steps` when given) and pushing a model that is not worse
    than the serving one (the non-inferiority gate: each retrain serves and is the next one's
    base, a chain); returns its path."""
    path = os.path.join(directory, f"span-{span}.toml")
    steps = f"warm_start_steps = {warm_start_steps}\n" if warm_start_steps else ""
    with open(path, "w") as f:
        f.write(f"[data]\nspan = {span}\nwindow_spans = {span + 1}\n")
        f.write(f"[trainer]\nwarm_start = true\n{steps}")
        f.write('[evaluator]\npromotion_policy = "non_inferiority"\n')
    return path


def score(model_uri: str, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per test digit, whether the model's serving signature classifies it right (bool [N])."""
    from pipeline.predict import classify  # noqa: PLC0415  TensorFlow only once a model is scored

    class_ids, _ = classify(os.path.join(model_uri, SERVING_SUBDIR), images)
    return class_ids == labels.astype(np.int64)


def one_run(pipeline_root: str, extra: list[str], images, labels) -> dict:
    """Runs the pipeline into `pipeline_root`; returns its figures and the model's test outcomes."""
    run = common.run_pipeline(pipeline_root, extra)
    steps = run.summary["steps"]
    trainer = steps["trainer"]
    correct = score(trainer["outputs"]["model"], images, labels)
    props = trainer["properties"]
    figures = {
        "test_accuracy": float(correct.mean()),
        "trainer_seconds": trainer["seconds"],
        "train_seconds": props["train_seconds"],
        "train_examples_per_sec": props["train_examples_per_sec"],
        "steps_trained": props["steps_trained"],
        "warm_started": props["warm_started"],
        "best_eval_accuracy": props["best_eval_accuracy"],
        "pushed": bool(steps.get("pusher", {}).get("properties", {}).get("pushed")),
        "blessed": steps.get("evaluator", {}).get("properties", {}).get("blessed"),
        "wall_seconds": round(run.wall_seconds, 1),
    }
    return {**figures, "correct": correct}


def cold_run(work: str, budget: list[str], images, labels) -> dict:
    """The cold comparison: a default run on all training digits into `work`/cold. Its figures
    (outcomes included) are kept in `work`/cold/figures.json and read back by a later call with
    the same work dir, so an interrupted benchmark does not train it again."""
    saved = os.path.join(work, "cold", "figures.json")
    if os.path.exists(saved):
        with open(saved) as f:
            figures = json.load(f)
        print(f"cold: the run of {saved} (kept from an earlier call)", flush=True)
        return {**figures, "correct": np.array(figures["correct"], dtype=bool)}
    print("cold: a default run on all 60,000 training digits", flush=True)
    root = os.path.join(work, "cold", "root")
    shutil.rmtree(root, ignore_errors=True)
    figures = one_run(root, budget, images, labels)
    with open(saved, "w") as f:
        json.dump({**figures, "correct": figures["correct"].astype(int).tolist()}, f)
    return figures


def against_cold(warm_correct: np.ndarray, cold_correct: np.ndarray) -> dict:
    """Warm minus cold on the same test digits: difference, 95% Newcombe interval, verdict."""
    table = paired_stats.PairedTable.from_correctness(warm_correct, cold_correct)
    low, high = paired_stats.newcombe_difference_interval(table, ALPHA)
    return {
        "difference": float(warm_correct.mean() - cold_correct.mean()),
        "ci95": [low, high],
        "warm_only": table.candidate_only,
        "cold_only": table.baseline_only,
        "non_inferior": low >= MARGIN,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sequences", nargs="+", choices=sorted(SEQUENCES), default=list(SEQUENCES))
    parser.add_argument("--work-dir", help="where span data and pipeline roots go (default: a temp dir)")
    parser.add_argument("--json", help="output JSON path (default benchmarks/results/warm_retrain.json)")
    parser.add_argument(
        "--train-steps", type=int, help="cold trainings' steps (default: the config's; for a smoke run)"
    )
    parser.add_argument(
        "--warm-start-steps", type=int, help="warm retrains' steps (default: the config's; for a smoke run)"
    )
    args = parser.parse_args()
    work = args.work_dir or tempfile.mkdtemp(prefix="bench_warm_")
    dataset, images, labels = load_mnist()
    budget = ["--train-steps", str(args.train_steps)] if args.train_steps else []

    cold = cold_run(work, budget, images, labels)
    figures: dict = {"cold": {k: v for k, v in cold.items() if k != "correct"}, "sequences": {}}
    failures = []
    for name in args.sequences:
        sequence = SEQUENCES[name]
        data_root = os.path.join(work, name, "data")
        write_spans(dataset, sequence, data_root)
        root = os.path.join(work, name, "root")
        generations = []
        for span in range(len(sequence.sizes)):
            print(f"{name}: span {span} ({sequence.sizes[span]:,} new digits)", flush=True)
            config = run_config(os.path.join(work, name), span, args.warm_start_steps)
            extra = ["--data-root", data_root, *budget]
            gen = one_run(root, [*extra, "--config", config], images, labels)
            gen["versus_cold"] = against_cold(gen.pop("correct"), cold["correct"])
            gen["cost"] = round(gen["train_seconds"] / cold["train_seconds"], 3)
            # Also against the sequence's own first, cold, training: the same steps of the same
            # network minutes before, so the closest side-by-side this run has on a shared machine.
            first = generations[0] if generations else gen
            gen["cost_vs_first"] = round(gen["train_seconds"] / first["train_seconds"], 3)
            gen["digits"] = sum(sequence.sizes[: span + 1])
            generations.append(gen)
        figures["sequences"][name] = {
            "seed": sequence.seed,
            "sizes": list(sequence.sizes),
            "generations": generations,
        }
        retrains = generations[1:]
        last = retrains[-1]
        if not last["versus_cold"]["non_inferior"]:
            failures.append(f"{name}: the last warm model is not non-inferior to the cold one")
        if max(max(g["cost"], g["cost_vs_first"]) for g in retrains) > TARGET_COST:
            failures.append(f"{name}: a warm retrain cost more than {TARGET_COST:.0%} of the cold training")
        if any(g["test_accuracy"] < TARGET_EACH_GENERATION for g in retrains):
            failures.append(f"{name}: a warm generation scored under {TARGET_EACH_GENERATION:.2%}")

    rows = [
        [
            "cold (all 60,000)",
            "-",
            f"{cold['test_accuracy']:.4f}",
            cold["steps_trained"],
            f"{cold['train_seconds']:.0f}",
            f"{cold['train_examples_per_sec']:.0f}",
            "1",
            "-",
            "-",
            "-",
        ]
    ]
    for name, seq in figures["sequences"].items():
        for span, gen in enumerate(seq["generations"]):
            vs = gen["versus_cold"]
            rows.append(
                [
                    f"{name} {span}" + (" (cold)" if not gen["warm_started"] else ""),
                    f"{gen['digits']:,}",
                    f"{gen['test_accuracy']:.4f}",
                    gen["steps_trained"],
                    f"{gen['train_seconds']:.0f}",
                    f"{gen['train_examples_per_sec']:.0f}",
                    f"{gen['cost']:.3f}",
                    f"{gen['cost_vs_first']:.3f}",
                    f"{vs['difference']:+.4f} ({vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f})",
                    "yes" if gen["pushed"] else "no",
                ]
            )
    common.print_table(
        "Warm retrains against a cold training of all 60,000 digits (test accuracy on 10,000 digits)",
        rows,
        [
            "run",
            "digits",
            "test acc",
            "steps",
            "train s",
            "ex/s",
            "cost vs cold",
            "vs first",
            "minus cold (95% CI)",
            "pushed",
        ],
    )
    for failure in failures:
        print(f"goal missed: {failure}")
    common.write_json("warm_retrain", {**figures, "goals_missed": failures}, args.json)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
