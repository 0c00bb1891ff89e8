"""Shared plumbing of the benchmark scripts: machine facts, peak memory, tables and JSON.

Every benchmark prints a table of figures to stdout and writes the same figures as JSON
(`--json FILE`, default `benchmarks/results/<name>.json`), with the date, the machine and the
command line, so results can be compared across runs and copied into the README.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
# TensorFlow's C++ start-up chatter (CUDA probing on a CPU machine) stays out of the tables.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))


def machine() -> dict:
    """CPU model, logical CPUs usable by this process, memory and Python version."""
    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_gib = None
    try:
        with open("/proc/meminfo") as f:
            memory_gib = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cpu": model,
        "cpus": len(os.sched_getaffinity(0)),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def print_table(title: str, rows: Sequence[Sequence], headers: Sequence[str]) -> None:
    """Prints `rows` under `headers` as an aligned plain-text table."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"\n{title}")
    for n, row in enumerate(cells):
        print(
            "  "
            + "  ".join(v.rjust(w) if n and _numeric(v) else v.ljust(w) for v, w in zip(row, widths)).rstrip()
        )
        if n == 0:
            print("  " + "  ".join("-" * w for w in widths))


def _numeric(text: str) -> bool:
    try:
        float(text.rstrip("%x"))
        return True
    except ValueError:
        return False


def write_json(name: str, figures: dict, path: str | None = None) -> Path:
    """Writes {"benchmark", "date", "machine", "command", **figures} to `path` (default
    benchmarks/results/<name>.json); returns the path."""
    target = Path(path) if path else RESULTS_DIR / f"{name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        **figures,
    }
    target.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nfigures written to {target}")
    return target


@dataclass
class PipelineRun:
    """One run_local.py process: its run summary and its wall time (start-up included);
    `tree_peak_mib`: the largest summed resident memory of the process and every process it
    started, sampled (None unless asked for)."""

    summary: dict
    wall_seconds: float
    tree_peak_mib: float | None = None


class TreeMemorySampler:
    """Samples the summed resident memory (VmRSS) of process `pid` and all its descendants
    every `interval` seconds in a thread, keeping the largest sum: the memory of a pipeline
    whose Beam workers are processes of their own, which its in-process peak does not count.
    Pages shared between processes are counted once per process; a peak shorter than the
    interval can be missed. Linux (/proc); elsewhere `peak_mib` stays None."""

    def __init__(self, pid: int, interval: float = 0.5):
        self._pid = pid
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.peak_mib: float | None = None

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            total = tree_rss_mib(self._pid)
            if total is not None:
                self.peak_mib = max(self.peak_mib or 0.0, total)
            if self._stop.wait(self._interval):
                return


def tree_rss_mib(pid: int) -> float | None:
    """Summed VmRSS of `pid` and its descendants in MiB; None when /proc cannot tell."""
    parents = {}
    try:
        names = [n for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return None
    for name in names:
        try:
            with open(f"/proc/{name}/stat") as f:
                # The command name (field 2) may hold spaces; the parent id follows its ")".
                parents[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier and p not in tree]
        tree.update(children)
        frontier = children
    total_kib = 0
    for member in tree:
        try:
            with open(f"/proc/{member}/status") as f:
                total_kib += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
    return round(total_kib / 1024, 1) if total_kib else None


def run_pipeline(pipeline_root: str, extra: Iterable[str] = (), sample_tree: bool = False) -> PipelineRun:
    """Runs run_local.py with `extra` arguments into `pipeline_root` as a subprocess (its memory
    and start-up are its own, as for a user); with `sample_tree`, also samples the memory of
    its process tree (`TreeMemorySampler`). Raises RuntimeError when it fails."""
    summary_path = Path(pipeline_root) / "bench_summary.json"
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        str(PROJECT_ROOT / "run_local.py"),
        "--pipeline-root",
        pipeline_root,
        "--summary-json",
        str(summary_path),
        *extra,
    ]
    started = time.perf_counter()
    tree_peak = None
    with subprocess.Popen(command, cwd=PROJECT_ROOT) as process:
        if sample_tree:
            with TreeMemorySampler(process.pid) as sampler:
                returncode = process.wait()
            tree_peak = sampler.peak_mib
        else:
            returncode = process.wait()
    wall = time.perf_counter() - started
    if returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {returncode}")
    return PipelineRun(json.loads(summary_path.read_text()), wall, tree_peak)


def examples_uri(pipeline_root: str) -> str:
    """The Examples artifact of the full shipped MNIST, made (or reused from cache) by
    running the pipeline up to example_gen in `pipeline_root`."""
    run = run_pipeline(pipeline_root, ["--to", "example_gen"])
    return summary_step(run.summary, "example_gen")["outputs"]["examples"]


def summary_step(summary: dict, name: str) -> dict:
    """The record of step `name` in a run summary."""
    if name not in summary["steps"]:
        raise KeyError(f"step {name} not in the run summary")
    return summary["steps"][name]
