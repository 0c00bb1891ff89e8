"""What the metadata store's integrity check, backup and restore cost, by store size.

    .venv/bin/python benchmarks/bench_metadata_store.py [--runs 10 1000] [--store FILE ...]

For each count in --runs, a fresh pipeline root gets that many runs of a 7-step pipeline of
fake steps (plain Python, tiny outputs) through the real runner, so the store holds exactly
what real runs record: the first run and every 24th (a new "span") run every step, the others
are cached, like an hourly schedule that gets new data once a day. Its store is then measured:
- quick_check: `store_backup.integrity_problem` (what every open of the store adds);
- backup: `store_backup.backup_store` (copy, fsync, quick_check of the copy, rename);
- restore: `store_backup.restore_store` on a store cut to a third;
- open: ml-metadata's own open of the store, for comparison.
Each figure is the median of --repeats timings, page cache warm (the file was just written).
`--store FILE` measures existing store files too (copied first; the file is not changed).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import tempfile
import time

import common  # noqa: F401 - puts the project on sys.path

from pipeline.core import store_backup
from pipeline.core.metadata import MetadataStore, store_path
from pipeline.core.pipeline import Pipeline
from pipeline.core.runner import run_pipeline
from pipeline.core.step import InputSpec, StepOutcome, StepSpec

STEPS = ("example_gen", "statistics_gen", "schema_gen", "example_validator", "trainer", "evaluator", "pusher")
NEW_SPAN_EVERY = 24


def _write_output(ctx) -> StepOutcome:
    for name, folder in ctx.outputs.items():
        with open(os.path.join(folder, f"{name}.txt"), "w") as f:
            f.write(f"{ctx.step_name} {ctx.params}\n")
    # About the size of what the real steps record (the evaluator's comparisons are the most).
    return StepOutcome(
        execution_properties={"detail": {"x": list(range(60)), "step": ctx.step_name}},
        output_properties={name: {"count": 1} for name in ctx.outputs},
    )


def fake_pipeline(root: str, span: int) -> Pipeline:
    steps, previous = [], None
    for name in STEPS:
        inputs = {"upstream": InputSpec(producer=previous)} if previous else {}
        params = {"span": span} if name == "example_gen" else {}
        steps.append(StepSpec(name, inputs, {"out": name.title().replace("_", "")}, _write_output, params))
        previous = f"{name}.out"
    return Pipeline(steps=tuple(steps), root=root, lock_timeout_s=10.0)


def build_store(root: str, runs: int) -> float:
    """Runs the fake pipeline `runs` times into `root`; returns the seconds it took."""
    started = time.perf_counter()
    for n in range(runs):
        result = run_pipeline(fake_pipeline(root, n // NEW_SPAN_EVERY))
        if result.exit_code != 0:
            raise RuntimeError(f"fake run {n} failed: {result.summary['message']}")
    return time.perf_counter() - started


def _median_ms(action, repeats: int, prepare=None) -> float:
    timings = []
    for _ in range(repeats):
        if prepare is not None:
            prepare()
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return round(statistics.median(timings) * 1000, 2)


def measure(store: str, repeats: int) -> dict:
    """quick_check, backup, restore and ml-metadata open times (ms) of the store file `store`."""
    sound = store + ".sound"
    shutil.copy(store, sound)
    size = os.path.getsize(store)

    def check():
        assert store_backup.integrity_problem(store) is None

    def damage():
        shutil.copy(sound, store)
        store_backup.backup_store(store)
        os.truncate(store, size // 3)

    def clear_aside():
        for name in os.listdir(os.path.dirname(store)):
            if store_backup.DAMAGED_INFIX in name:
                os.unlink(os.path.join(os.path.dirname(store), name))

    figures = {
        "store_bytes": size,
        "quick_check_ms": _median_ms(check, repeats),
        "backup_ms": _median_ms(lambda: store_backup.backup_store(store), repeats),
        "restore_ms": _median_ms(
            lambda: store_backup.restore_store(store), repeats, prepare=lambda: (clear_aside(), damage())
        ),
        "mlmd_open_ms": _median_ms(lambda: MetadataStore(store), repeats),
    }
    clear_aside()
    figures["mlmd_open_ms"] = round(figures["mlmd_open_ms"] - figures["quick_check_ms"], 2)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[10, 1000])
    parser.add_argument(
        "--store", nargs="*", default=[], help="existing metadata.sqlite files to measure too"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/metadata_store.json")
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the fake runs' progress lines

    results, rows = [], []
    with tempfile.TemporaryDirectory(prefix="bench_metadata_") as work:
        for runs in args.runs:
            root = os.path.join(work, f"runs-{runs}")
            build_seconds = build_store(root, runs)
            figures = {
                "source": f"{runs} runs of 7 fake steps",
                "runs": runs,
                "build_seconds": round(build_seconds, 1),
                **measure(store_path(root), args.repeats),
            }
            results.append(figures)
        for i, path in enumerate(args.store):
            folder = os.path.join(work, f"given-{i}")
            os.makedirs(folder)
            shutil.copy(path, store_path(folder))
            results.append({"source": path, **measure(store_path(folder), args.repeats)})
    for r in results:
        rows.append(
            (
                r["source"],
                f"{r['store_bytes'] / 1024:,.0f}",
                r["quick_check_ms"],
                r["backup_ms"],
                r["restore_ms"],
                r["mlmd_open_ms"],
            )
        )
    common.print_table(
        "metadata store: median ms (page cache warm)",
        rows,
        ("store", "KiB", "quick_check", "backup", "restore", "mlmd open"),
    )
    common.write_json("metadata_store", {"repeats": args.repeats, "results": results}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
