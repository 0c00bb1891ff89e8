"""The pipeline's metadata-bound operations on SQLite vs MariaDB, side by side in one run.

    .venv/bin/python benchmarks/bench_metadata_backends.py [--repeats 5] [--train 1000 --test 200]

For each backend a fresh pipeline root gets one real run of the whole pipeline on a small slice
of the shipped digits (a tiny training budget: the figures are about the store, not the model),
then these are timed, median of --repeats:
- no-op rerun: `run_local.py` with nothing changed (every step a verified cache hit; the pusher
  says "already serving"), as a process, start-up included, and the same run in-process
  (`run_pipeline` on the built pipeline: the runner's own time, imports excluded);
- `run_local.py runs` and `run_local.py status` as processes, and `serving_status` in-process.
The two backends take turns within each repeat, so other load on the machine slows both alike.
MariaDB is this checkout's private server (scripts/ensure_mariadb.sh: Debian's mariadb-server,
TCP on 127.0.0.1, a database of its own), so the difference is the client/server round trips,
not a network.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time

import common

from pipeline.config import load_config
from pipeline.core.runner import run_pipeline
from pipeline.factory import create_pipeline
from pipeline.operations import serving_status

CONFIG = """
[trainer]
train_steps = 60
batch_size = 50
eval_every_steps = 60
early_stopping_evals = 0

[evaluator]
accuracy_floor = 0.10
promotion_policy = "non_inferiority"
non_inferiority_margin = 1.0
slice_accuracy_floor = 0.0
slice_max_regression = 1.0
"""


def start_mariadb() -> dict:
    """Starts (or reuses) the private server with a fresh account; returns its settings."""
    user, password = "mlmd_b" + secrets.token_hex(3), secrets.token_urlsafe(18)
    done = subprocess.run(
        [str(common.PROJECT_ROOT / "scripts" / "ensure_mariadb.sh")],
        capture_output=True,
        text=True,
        env=dict(os.environ, MLMD_MYSQL_PASSWORD=password, MARIADB_TEST_USER=user),
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr.strip())
    values = dict(item.split("=", 1) for item in done.stdout.split())
    return {
        "host": values["MARIADB_HOST"],
        "port": int(values["MARIADB_PORT"]),
        "user": user,
        "password": password,
        "socket": values["MARIADB_SOCKET"],
        "database": "mlmd_bench_" + secrets.token_hex(4),
    }


def drop_mariadb(server: dict) -> None:
    sql = (
        f"DROP DATABASE IF EXISTS `{server['database']}`; DROP USER IF EXISTS '{server['user']}'@'127.0.0.1';"
    )
    subprocess.run(
        ["mariadb", "--no-defaults", f"--socket={server['socket']}", "-uroot", "-e", sql], check=True
    )


class NotANoOp(Exception):
    """A rerun that ran a step: the code changed under the benchmark (it then runs again)."""


def _check_noop(backend: str, summary: dict) -> None:
    ran = [name for name, step in summary["steps"].items() if name != "pusher" and step["state"] != "cached"]
    if summary["exit_code"] != 0 or ran:
        raise NotANoOp(f"{backend}: the rerun ran {ran} (exit {summary['exit_code']})")


def prepare(backend: str, work: str, data: str, server: dict) -> dict:
    """A pipeline root of `backend` after one real run; returns the operations to time on it
    (name -> callable) and the first run's wall time."""
    root = os.path.join(work, backend)
    config_path = os.path.join(work, f"{backend}.toml")
    section = (
        ""
        if backend == "sqlite"
        else (
            f'[metadata]\nbackend = "mysql"\nhost = "{server["host"]}"\nport = {server["port"]}\n'
            f'database = "{server["database"]}"\nuser = "{server["user"]}"\n'
        )
    )
    with open(config_path, "w") as f:
        f.write(CONFIG + section)
    env = dict(os.environ, MLMD_MYSQL_PASSWORD=server["password"], TF_CPP_MIN_LOG_LEVEL="3")

    def cli(*args):
        command = [
            sys.executable,
            str(common.PROJECT_ROOT / "run_local.py"),
            *args,
            "--config",
            config_path,
            "--pipeline-root",
            root,
        ]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: {done.stderr[-2000:]}")

    started = time.perf_counter()
    cli("--data-root", data)
    first_run_s = time.perf_counter() - started
    config = load_config(config_path, {"pipeline_root": root, "data": {"data_root": data}})
    pipeline = create_pipeline(config)

    def noop_cli():
        summary = os.path.join(work, f"{backend}-noop.json")
        cli("--data-root", data, "--summary-json", summary)
        with open(summary) as f:
            _check_noop(backend, json.load(f))

    return {
        "first_run_s": first_run_s,
        "operations": {
            "noop_rerun_cli_s": noop_cli,
            "noop_rerun_in_process_s": lambda: _check_noop(backend, run_pipeline(pipeline).summary),
            "runs_cli_s": lambda: cli("runs"),
            "status_cli_s": lambda: cli("status"),
            "status_in_process_s": lambda: serving_status(config),
        },
    }


def measure(prepared: dict, repeats: int) -> dict:
    """Median seconds of every operation per backend. The backends take turns within each
    repeat, so a machine busy with other work slows both alike."""
    times = {backend: {name: [] for name in p["operations"]} for backend, p in prepared.items()}
    for _ in range(repeats):
        for name in next(iter(prepared.values()))["operations"]:
            for backend, p in prepared.items():
                for _attempt in range(3):
                    started = time.perf_counter()
                    try:
                        p["operations"][name]()
                    except NotANoOp as e:  # the rerun rebuilt the cache: time the next one
                        print(f"note: {e}; timing it again", file=sys.stderr)
                        continue
                    times[backend][name].append(time.perf_counter() - started)
                    break
    return {
        backend: {
            "backend": backend,
            "first_run_s": round(prepared[backend]["first_run_s"], 1),
            **{name: round(statistics.median(values), 4) for name, values in ops.items()},
        }
        for backend, ops in times.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train", type=int, default=1000, help="training digits of the slice")
    parser.add_argument("--test", type=int, default=200, help="test digits of the slice")
    parser.add_argument("--json", metavar="FILE", help="default: benchmarks/results/metadata_backends.json")
    args = parser.parse_args()
    sys.path.insert(0, str(common.PROJECT_ROOT / "tests"))
    from mnist_slices import write_mnist_slice

    server = start_mariadb()
    try:
        with tempfile.TemporaryDirectory(prefix="bench_backends_") as work:
            data = write_mnist_slice(os.path.join(work, "data"), args.train, args.test)
            logging.disable(logging.WARNING)  # the in-process runs' progress lines
            os.environ["MLMD_MYSQL_PASSWORD"] = server["password"]  # for the in-process operations
            prepared = {backend: prepare(backend, work, data, server) for backend in ("sqlite", "mysql")}
            by_backend = measure(prepared, args.repeats)
    finally:
        os.environ.pop("MLMD_MYSQL_PASSWORD", None)
        drop_mariadb(server)
    sqlite, mysql = by_backend["sqlite"], by_backend["mysql"]
    results = [sqlite, mysql]
    keys = (
        "noop_rerun_cli_s",
        "noop_rerun_in_process_s",
        "runs_cli_s",
        "status_cli_s",
        "status_in_process_s",
    )
    rows = [(key, sqlite[key], mysql[key], f"{mysql[key] / sqlite[key]:.2f}x") for key in keys]
    rows.append(
        (
            "first_run_s (once, not a median)",
            sqlite["first_run_s"],
            mysql["first_run_s"],
            f"{mysql['first_run_s'] / sqlite['first_run_s']:.2f}x",
        )
    )
    common.print_table(
        f"metadata-bound operations, median of {args.repeats} (MariaDB on 127.0.0.1)",
        rows,
        ("operation", "SQLite", "MariaDB", "MariaDB / SQLite"),
    )
    common.write_json(
        "metadata_backends",
        {
            "repeats": args.repeats,
            "slice": [args.train, args.test],
            "results": results,
            "ratios": {key: round(mysql[key] / sqlite[key], 2) for key in keys},
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
