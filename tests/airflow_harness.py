"""A real Apache Airflow for the tests: its own venv (scripts/ensure_airflow.sh), a temporary
AIRFLOW_HOME with SQLite whose dags_folder is the repository's dags/, `airflow dags test` runs,
and `airflow standalone` started on free ports and ended process by process.

Task states and DAG runs are read from Airflow's SQLite database (quicker than its CLI, which
takes seconds to start)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time

from pipeline.factory import STEP_NAMES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DAG_ID = "mnist_pipeline"
# The pipeline's steps in order, from the one list the DAG is checked against.
STEPS = STEP_NAMES


def ensure_airflow_venv() -> str:
    """Builds .venv-airflow when needed; returns its `airflow` executable (the script's last line)."""
    out = subprocess.run(
        [os.path.join(REPO, "scripts", "ensure_airflow.sh")],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return out.stdout.strip().splitlines()[-1]


def free_port() -> int:
    """A TCP port nobody listens on now (the kernel's choice for port 0)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class DagsTestResult:
    returncode: int
    output: str
    run_id: str


@dataclasses.dataclass
class Airflow:
    """One AIRFLOW_HOME and the environment every Airflow command of a test runs with."""

    executable: str
    home: str
    env: dict

    @classmethod
    def create(cls, executable: str, home: str, variables: dict, migrate: bool = True) -> Airflow:
        """A fresh AIRFLOW_HOME at `home` (SQLite; its tables made unless not `migrate`),
        dags_folder = the repo's dags/, no examples, new DAGs unpaused; `variables` become
        Airflow Variables (AIRFLOW_VAR_<KEY> environment)."""
        os.makedirs(home, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHON"))}
        env.update(
            {
                "AIRFLOW_HOME": home,
                "AIRFLOW__CORE__DAGS_FOLDER": os.path.join(REPO, "dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                # `standalone` starts its parts through `airflow` on PATH.
                "PATH": os.path.dirname(executable) + os.pathsep + os.environ.get("PATH", ""),
            }
        )
        env.update({f"AIRFLOW_VAR_{k.upper()}": str(v) for k, v in variables.items()})
        airflow = cls(executable, home, env)
        if migrate:
            airflow.cli("db", "migrate")
        return airflow

    def cli(self, *args: str, env: dict | None = None, timeout: float = 300) -> str:
        """Runs `airflow ARGS`; returns its output; raises CalledProcessError on failure."""
        out = subprocess.run(
            [self.executable, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise subprocess.CalledProcessError(out.returncode, out.args, out.stdout, out.stderr)
        return out.stdout + out.stderr

    def dags_test(self, conf: dict, env: dict | None = None, timeout: float = 600) -> DagsTestResult:
        """`airflow dags test mnist_pipeline -c CONF`: every task in this process, in order."""
        before = set(self.run_ids())
        out = subprocess.run(
            [self.executable, "dags", "test", DAG_ID, "-c", json.dumps(conf)],
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )
        [run_id] = set(self.run_ids()) - before
        with open(os.path.join(self.home, f"dags-test-{len(before) + 1}.log"), "w") as f:
            f.write(out.stdout)  # for a look after a failure
        return DagsTestResult(out.returncode, out.stdout, run_id)

    def query(self, sql: str, *params) -> list:
        with contextlib.closing(sqlite3.connect(os.path.join(self.home, "airflow.db"), timeout=30)) as db:
            return db.execute(sql, params).fetchall()

    def run_ids(self) -> list:
        return [r[0] for r in self.query("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id", DAG_ID)]

    def dag_runs(self) -> list:
        """[(run_id, run_type, state)] of mnist_pipeline, oldest first."""
        return self.query("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = ? ORDER BY id", DAG_ID)

    def task_states(self, run_id: str) -> dict:
        """{task_id: (state, try_number)} of one DAG run (state None: never scheduled)."""
        rows = self.query(
            "SELECT task_id, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            DAG_ID,
            run_id,
        )
        return {task: (state, tries) for task, state, tries in rows}


def task_log(output: str, task_id: str) -> str:
    """The part of `airflow dags test` output that one task wrote (from its start to its end)."""
    start = output.index(f"[DAG TEST] starting task_id={task_id} ")
    end = output.index(f"[DAG TEST] end task task_id={task_id} ", start)
    return output[start:end]


# ---------------------------------------------------------------- airflow standalone


def _environ_of(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read()
    except OSError:  # gone, or not ours to read
        return b""


def _state_and_session(pid: int) -> tuple | None:
    """(state letter, session id) of process `pid`; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[3])


def processes_of(home: str, sessions: set) -> list:
    """PIDs of the live processes started for AIRFLOW_HOME `home`: those whose environment names
    it (inherited by every child, orphans included), and those in one of `sessions`, because a
    process may overwrite its environment with its title (setproctitle does, for Airflow's API
    server and LocalExecutor workers) but keeps its session. Adds to `sessions` each session
    led by a process found (the steps' commands start sessions of their own); never this
    process's session."""
    marker = b"\0AIRFLOW_HOME=" + home.encode() + b"\0"
    own_session = os.getsid(0)
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        pid = int(name)
        stat = _state_and_session(pid)
        if stat is None or stat[0] == "Z":  # gone, or a zombie (already ended)
            continue
        state, session = stat
        if session in sessions or marker in b"\0" + _environ_of(pid):
            pids.append(pid)
            if session == pid and session != own_session:
                sessions.add(session)
    return pids


def end_processes(home: str, sessions: set, grace_s: float = 10) -> list:
    """Ends every process of `home` (see `processes_of`) by PID: SIGTERM, then SIGKILL for any
    still there after `grace_s` (LocalExecutor workers ignore SIGTERM). Returns the PIDs it
    signalled."""
    signalled: list = []
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10)):
        pids = processes_of(home, sessions)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        signalled += pids
        deadline = time.monotonic() + wait_s
        while processes_of(home, sessions) and time.monotonic() < deadline:
            time.sleep(0.2)
    return sorted(set(signalled))


class Standalone:
    """`airflow standalone` (API server, scheduler, DAG processor, triggerer) on free ports."""

    READY = re.compile(r"Airflow is ready")

    def __init__(self, airflow: Airflow, log_path: str):
        self.airflow = airflow
        self.log_path = log_path
        port = free_port()
        self.env = {
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__PARALLELISM": "2",
            # No login, so no generated password in the log.
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        }
        self.process: subprocess.Popen | None = None
        self.sessions: set = set()  # its own, once started, and those its processes lead
        self._ready = threading.Event()

    def start(self, timeout_s: float = 300) -> None:
        """Starts it and waits for its "ready" banner; raises RuntimeError with the log's tail."""
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [self.airflow.executable, "standalone"],
            env={**self.airflow.env, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.sessions.add(self.process.pid)

        def pump():
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if self.READY.search(line):
                    self._ready.set()
            log.close()

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not self._ready.wait(1):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"airflow standalone did not start:\n{self.log_tail()}")

    def wait_for_run(self, timeout_s: float) -> tuple:
        """Waits for the first run of mnist_pipeline to end; returns (run_id, run_type, state).
        Raises RuntimeError with the log's tail when none ended within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if os.path.exists(os.path.join(self.airflow.home, "airflow.db")):
                ended = [r for r in self.airflow.dag_runs() if r[2] in ("success", "failed")]
                if ended:
                    return ended[0]
            time.sleep(1)
        raise RuntimeError(f"no run of {DAG_ID} ended in {timeout_s:g}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        with open(self.log_path) as f:
            return "".join(f.readlines()[-lines:])

    def stop(self) -> list:
        """Ends every process it started, by PID; returns their PIDs."""
        pids = end_processes(self.airflow.home, self.sessions)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        return pids

    def leftovers(self) -> list:
        """PIDs of its processes still alive (none after `stop`)."""
        return processes_of(self.airflow.home, self.sessions)
