"""ExampleGen and StatisticsGen on the full shipped MNIST (70,000 digits).

    .venv/bin/python benchmarks/bench_data_steps.py [--repeats 3] [--beam-arg=...]

Each repeat runs `run_local.py --to statistics_gen` into a fresh pipeline root (nothing
cached) as its own process, and reads the figures from the run summary:
- ExampleGen processing: validating the raw files plus encoding and writing every shard (the
  step's own `validation_seconds` + `write_seconds`), and its rate in examples/s; start-up (the
  step's remaining time: Beam pipeline construction and the runner's start) reported apart;
- StatisticsGen: the step's wall time and rate (TFDV statistics of the three splits);
- the peak resident memory of the pipeline process during each step.
The best repeat (by ExampleGen processing time) is reported with the spread of all repeats.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile

import common

TOTAL_EXAMPLES = 70_000


def one_run(root: str, beam_args: list) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    run = common.run_pipeline(root, ["--to", "statistics_gen", *[f"--beam-arg={a}" for a in beam_args]])
    example_gen = common.summary_step(run.summary, "example_gen")
    statistics_gen = common.summary_step(run.summary, "statistics_gen")
    props = example_gen["properties"]
    processing = props["validation_seconds"] + props["write_seconds"]
    total = sum(props["split_counts"].values())
    return {
        "example_gen": {
            "examples": total,
            "processing_seconds": round(processing, 2),
            "validation_seconds": props["validation_seconds"],
            "write_seconds": props["write_seconds"],
            "startup_seconds": round(example_gen["seconds"] - processing, 2),
            "step_seconds": example_gen["seconds"],
            "examples_per_second": round(total / processing, 0),
            "peak_memory_mib": example_gen.get("peak_memory_mib"),
        },
        "statistics_gen": {
            "step_seconds": statistics_gen["seconds"],
            "examples_per_second": round(total / statistics_gen["seconds"], 0),
            "peak_memory_mib": statistics_gen.get("peak_memory_mib"),
        },
        "process_wall_seconds": round(run.wall_seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        help="Beam option passed to the pipeline (repeatable), e.g. --direct_running_mode=multi_processing",
    )
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/data_steps.json")
    args = parser.parse_args()

    work = args.work_dir or tempfile.mkdtemp(prefix="mnist-bench-data-")
    runs = [one_run(f"{work}/run", args.beam_arg) for _ in range(args.repeats)]
    best = min(runs, key=lambda r: r["example_gen"]["processing_seconds"])
    eg, sg = best["example_gen"], best["statistics_gen"]

    def spread(key, field):
        return f"{min(r[key][field] for r in runs)}..{max(r[key][field] for r in runs)}"

    common.print_table(
        f"Data steps on the full MNIST ({eg['examples']} examples), best of {len(runs)}",
        [
            [
                "example_gen processing",
                eg["processing_seconds"],
                eg["examples_per_second"],
                eg["peak_memory_mib"],
                spread("example_gen", "processing_seconds"),
            ],
            ["example_gen start-up", eg["startup_seconds"], "", "", spread("example_gen", "startup_seconds")],
            [
                "statistics_gen",
                sg["step_seconds"],
                sg["examples_per_second"],
                sg["peak_memory_mib"],
                spread("statistics_gen", "step_seconds"),
            ],
        ],
        ["step", "seconds", "examples/s", "peak MiB", "seconds (all repeats)"],
    )
    common.write_json("data_steps", {"beam_args": args.beam_arg, "best": best, "runs": runs}, args.json)
    shutil.rmtree(work, ignore_errors=True) if not args.work_dir else None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
