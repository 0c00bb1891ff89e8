"""ExampleGen, StatisticsGen and the Evaluator on 1x, 4x and 16x the MNIST volume, in one run.

    .venv/bin/python benchmarks/bench_data_scaling.py [--sizes 1 4 16] [--work-dir DIR]
        [--beam-arg=OPTION ...] [--compare-beam-arg=OPTION ...] [--steps ...]
        [--train-steps 300] [--json FILE]

The data (`scaled_mnist.py`): size n is n spans of 70,000 real digits each, span-0 the shipped
MNIST and every other span each digit moved by its own small rotation, shift and scale, so no
digit is a byte copy of another span's; a fraction below 1 is one span of the first part of
the shipped digits (`--sizes 0.1 0.4` is a quick check that the benchmark works). The data
roots are kept in `--work-dir` (default a temporary folder, removed at the end), so a rerun
with the same folder rebuilds nothing; the 16x root takes about 250 MB there.

What runs, per Beam setting, in one pipeline root of its own (fresh each time):
- each size, smallest first: `run_local.py --to statistics_gen` with `--data-root` the size's
  root and `data.window_spans` = its spans (every span read together); after the smallest size,
  `--from schema_gen --to trainer --train-steps 300` trains the one model every size's evaluator
  then scores (not measured);
- then `run_local.py --from evaluator --to evaluator`: the evaluator on the test split of the
  size just written (10,000 digits per span), one model, no baseline (nothing is pushed, so
  none serves).
Figures per step and size, from the run summary: the step's wall seconds (the executor, Beam
start-up included, process start-up not), examples/s (ExampleGen and StatisticsGen: every
split; the evaluator: the test digits evaluated) and the peak resident memory of the pipeline
process during the step (as the launcher records it); per process, the sampled peak of the
process with every process it started (Beam's multi_processing workers are processes of their
own). Then per step: b of wall = a * examples^b, least squares on log-log over the sizes, and
the peak memory at the largest size over that at the smallest. Goals: b <= 1.1 and the ratio
<= 1.25 for every step. A fixed start-up lowers b; the marginal rate between consecutive sizes
(extra examples / extra seconds), also reported, is free of it. With `--compare-beam-arg`, every size also runs with those Beam options
(e.g. `--compare-beam-arg=--direct_running_mode=multi_processing
--compare-beam-arg=--direct_num_workers=2`) in a root of its own, and the speed-up of each step
(its wall with `--beam-arg` over its wall with `--compare-beam-arg`) is reported.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import tempfile

import common
import scaled_mnist

from pipeline.config import DEFAULT_DATA_ROOT

STEPS = ("example_gen", "statistics_gen", "evaluator")
DATA_STEPS = ("example_gen", "statistics_gen")
GOAL_EXPONENT = 1.1
GOAL_MEMORY_RATIO = 1.25


def fit_exponent(sizes, walls) -> float:
    """b of wall = a * size^b fitted by least squares on log(wall) against log(size).

    Raises ValueError unless there are at least two points, all positive, of two or more sizes.
    """
    points = list(zip(sizes, walls))
    if len(points) < 2 or any(s <= 0 or w <= 0 for s, w in points):
        raise ValueError(f"need two or more points with positive size and wall, got {points}")
    xs = [math.log(s) for s, _ in points]
    ys = [math.log(w) for _, w in points]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    if spread == 0:
        raise ValueError(f"need two or more different sizes, got {sorted(set(sizes))}")
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / spread


def step_figures(summary: dict, step: str, process: common.PipelineRun) -> dict:
    """The figures of `step` in one run summary: examples, seconds, examples/s, peak MiB, plus
    the process's wall and sampled tree peak. Raises RuntimeError when the step did not run
    (a cached step measures nothing)."""
    record = common.summary_step(summary, step)
    if record["state"] != "ran":
        raise RuntimeError(f"step {step} was {record['state']}, not run: nothing to measure")
    props = record.get("properties", {})
    if step == "evaluator":
        examples = int(props["examples_evaluated"])
    else:
        examples = int(sum(props["split_counts"].values()))
    seconds = float(record["seconds"])
    return {
        "examples": examples,
        "seconds": round(seconds, 2),
        "examples_per_second": round(examples / seconds, 1),
        "peak_memory_mib": record.get("peak_memory_mib"),
        "process_wall_seconds": round(process.wall_seconds, 2),
        "process_tree_peak_mib": process.tree_peak_mib,
    }


def code_version() -> str:
    """The checkout's commit, with "+changes" when the pipeline's code differs from it (the
    figures belong to the code that ran); "unknown" outside a git checkout."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=common.PROJECT_ROOT, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "components", "pipeline", "run_local.py"],
            cwd=common.PROJECT_ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (commit or "unknown") + ("+changes" if changed else "")


def write_config(work: str, label: str, spans: int) -> str:
    """A config file reading all `spans` spans of a data root together; returns its path."""
    path = os.path.join(work, f"config-{label}.toml")
    with open(path, "w") as f:
        f.write(f"[data]\nwindow_spans = {spans}\n")
    return path


def measure(root: str, roots: dict, steps: tuple, beam_args: list, train_steps: int) -> dict:
    """{step: {size label: figures}} of every size of `roots` ({size: (data root, spans)}),
    smallest first, with `beam_args`, in the fresh pipeline root `root`."""
    shutil.rmtree(root, ignore_errors=True)
    figures: dict = {step: {} for step in steps}
    beam = [f"--beam-arg={a}" for a in beam_args]
    trained = False
    for size in sorted(roots):
        label = scaled_mnist.size_label(size)
        data, spans = roots[size]
        base = ["--data-root", data, "--config", write_config(os.path.dirname(root), label, spans), *beam]
        load = os.getloadavg()[0]
        # Up to the last data step measured; ExampleGen runs in any case (it writes the size's
        # examples), StatisticsGen too where the model is trained after it.
        to = "statistics_gen" if {"statistics_gen", "evaluator"} & set(steps) else "example_gen"
        print(f"\n== {label}: {data} ({spans} span(s)), beam args {beam_args or 'none'}", flush=True)
        run = common.run_pipeline(root, [*base, "--to", to], sample_tree=True)
        for step in DATA_STEPS:
            if step in steps:
                figures[step][label] = {**step_figures(run.summary, step, run), "load_before": round(load, 2)}
        if "evaluator" in steps and not trained:
            # The one model every size's evaluator scores, trained on the smallest size (not measured).
            common.run_pipeline(
                root, [*base, "--from", "schema_gen", "--to", "trainer", "--train-steps", str(train_steps)]
            )
            trained = True
        if "evaluator" in steps:
            load = os.getloadavg()[0]
            run = common.run_pipeline(
                root, [*base, "--from", "evaluator", "--to", "evaluator"], sample_tree=True
            )
            figures["evaluator"][label] = {
                **step_figures(run.summary, "evaluator", run),
                "load_before": round(load, 2),
            }
    return figures


def marginal_rates(rows: list) -> list:
    """Examples/s between consecutive sizes: (extra examples) / (extra seconds), None where the
    wall did not grow. Start-up cancels out: a step whose time grows faster than its data has a
    falling marginal rate even where a fixed start-up keeps its fitted exponent low."""
    rates = []
    for small, large in zip(rows, rows[1:]):
        extra = large["seconds"] - small["seconds"]
        rates.append(round((large["examples"] - small["examples"]) / extra, 1) if extra > 0 else None)
    return rates


def scaling(figures: dict) -> dict:
    """{step: {"exponent", "memory_ratio", "marginal_examples_per_second", "exponent_met",
    "memory_met"}} over the sizes measured."""
    result = {}
    for step, by_size in figures.items():
        rows = list(by_size.values())  # smallest size first
        entry: dict = {
            "exponent": None,
            "memory_ratio": None,
            "marginal_examples_per_second": marginal_rates(rows),
        }
        if len(rows) >= 2:
            entry["exponent"] = round(
                fit_exponent([r["examples"] for r in rows], [r["seconds"] for r in rows]), 3
            )
            if rows[0]["peak_memory_mib"] and rows[-1]["peak_memory_mib"]:
                entry["memory_ratio"] = round(rows[-1]["peak_memory_mib"] / rows[0]["peak_memory_mib"], 3)
        entry["exponent_met"] = entry["exponent"] is not None and entry["exponent"] <= GOAL_EXPONENT
        entry["memory_met"] = entry["memory_ratio"] is not None and entry["memory_ratio"] <= GOAL_MEMORY_RATIO
        result[step] = entry
    return result


def print_mode(title: str, figures: dict, fitted: dict) -> None:
    rows = [
        [
            step,
            label,
            f["examples"],
            f["seconds"],
            f["examples_per_second"],
            f["peak_memory_mib"],
            f["process_tree_peak_mib"],
            f["process_wall_seconds"],
            f["load_before"],
        ]
        for step, by_size in figures.items()
        for label, f in by_size.items()
    ]
    common.print_table(
        title,
        rows,
        ["step", "size", "examples", "wall s", "ex/s", "peak MiB", "tree peak MiB", "process s", "load"],
    )
    common.print_table(
        f"Scaling over the sizes (goals: exponent <= {GOAL_EXPONENT}, peak largest/smallest <= {GOAL_MEMORY_RATIO})",
        [
            [
                step,
                entry["exponent"],
                "met" if entry["exponent_met"] else "not met",
                f"{entry['memory_ratio']}x" if entry["memory_ratio"] is not None else None,
                "met" if entry["memory_met"] else "not met",
                " / ".join(str(r) for r in entry["marginal_examples_per_second"]),
            ]
            for step, entry in fitted.items()
        ],
        ["step", "wall exponent", "", "peak ratio", "", "marginal ex/s between sizes"],
    )


def speed_ups(main: dict, compared: dict) -> dict:
    """{step: {size label: main wall / compared wall}}."""
    return {
        step: {
            label: round(f["seconds"] / compared[step][label]["seconds"], 2)
            for label, f in by_size.items()
            if label in compared.get(step, {})
        }
        for step, by_size in main.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["1", "4", "16"], help="default: 1 4 16")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    parser.add_argument(
        "--beam-arg",
        action="append",
        default=[],
        help="Beam option of every measured run (repeatable), e.g. --direct_running_mode=multi_processing",
    )
    parser.add_argument(
        "--compare-beam-arg",
        action="append",
        default=[],
        help="when given: every size also runs with these Beam options (repeatable); the speed-up is reported",
    )
    parser.add_argument("--train-steps", type=int, default=300, help="the evaluator's model (default 300)")
    parser.add_argument("--work-dir", default=None, help="default: a temporary folder, removed at the end")
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/data_scaling.json")
    args = parser.parse_args()
    try:
        sizes = sorted({scaled_mnist.parse_size(s) for s in args.sizes})
    except ValueError as e:
        parser.error(f"--sizes: {e}")
    steps = tuple(s for s in STEPS if s in args.steps)

    work = os.path.abspath(args.work_dir or tempfile.mkdtemp(prefix="mnist-bench-scaling-"))
    os.makedirs(work, exist_ok=True)
    print(f"work folder {work}; free disk {shutil.disk_usage(work).free / 2**30:.1f} GiB", flush=True)
    roots = {size: scaled_mnist.data_root(work, size, DEFAULT_DATA_ROOT) for size in sizes}

    modes = {"main": args.beam_arg}
    if args.compare_beam_arg:
        modes["compared"] = args.compare_beam_arg
    record: dict = {
        "code": code_version(),
        "sizes": [scaled_mnist.size_label(s) for s in sizes],
        "train_steps": args.train_steps,
    }
    results = {}
    for name, beam_args in modes.items():
        figures = measure(os.path.join(work, f"pipeline-{name}"), roots, steps, beam_args, args.train_steps)
        results[name] = {"beam_args": beam_args, "steps": figures, "scaling": scaling(figures)}
        # Written after each setting, so a run cut short keeps what it measured.
        common.write_json("data_scaling", {**record, **results}, args.json)

    for name, result in results.items():
        print_mode(
            f"{name}: beam args {' '.join(result['beam_args']) or 'none (in-process DirectRunner)'}",
            result["steps"],
            result["scaling"],
        )
    record.update(results)
    if "compared" in results:
        record["speed_up"] = speed_ups(results["main"]["steps"], results["compared"]["steps"])
        labels = record["sizes"]
        common.print_table(
            f"Speed-up with {' '.join(args.compare_beam_arg)} (wall with the main args / wall with these)",
            [
                [step, *(f"{by_size.get(label)}x" for label in labels)]
                for step, by_size in record["speed_up"].items()
            ],
            ["step", *labels],
        )
        common.write_json("data_scaling", record, args.json)
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
