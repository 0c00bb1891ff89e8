"""Training on a local TensorFlow cluster: launching, supervising and ending the tasks.

`train_on_cluster` starts a chief, N workers and M parameter servers as processes of
`python -m components.trainer.cluster_task` on free loopback ports, each with its `TF_CONFIG`,
all sharing the model_run folder as `model_dir`. The chief trains and evaluates (the same
exporters as in one process) and writes a `TrainingResult`; workers train; parameter servers
hold the variables and never exit on their own, so the launcher ends them.

No orphans:
- each task sets a parent-death signal first thing (`tie_to_launcher`: SIGKILL when the
  launching thread ends, by SIGKILL too), then checks that its parent is still the launcher
  (which closes the race of a launcher that died before that);
- each task is its own process group, ended as a group;
- the tasks' PIDs and start times are recorded in `<pipeline_root>/<step>/.cluster-tasks.json`
  while they run; the next launch ends any that are still alive (matching PID and start time,
  so a reused PID is never killed) before it starts its own.

Any task that exits with an error, or any parameter server that exits at all, before the chief
has finished, fails the step with one line naming the task; nothing is exported then.

Files under `<model_run>/cluster/`: `spec.json` (what every task trains), `<type>-<index>.log`
(each task's output), `result-<type>-<index>.json` (what each training task reports).
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time

from components.trainer.params import TrainerParams
from components.trainer.result import TrainingResult
from pipeline.core import errors
from pipeline.core.atomic_files import write_text_atomic
from pipeline.core.errors import PipelineError, TrainingError

# A free port can be taken by another process before the task binds it: the task then fails
# to start and the step fails naming it, nothing exported, so a retry is safe.
from pipeline.core.ports import LOOPBACK
from pipeline.core.ports import free_loopback_port as free_port

TASK_MODULE = "components.trainer.cluster_task"
REGISTRY_FILE = ".cluster-tasks.json"
CLUSTER_DIR = "cluster"
SPEC_FILE = "spec.json"
# Lines a task logs for the step start with this; the launcher forwards the chief's.
LOG_PREFIX = "trainer| "
# After the chief has finished, workers get this long to stop on their own before they are
# ended (training is over: the chief's final checkpoint is the model).
WORKER_GRACE_S = 15.0
POLL_S = 0.2
PR_SET_PDEATHSIG = 1

# Environment variables whose names contain one of these are not passed to tasks
# (MLMD_MYSQL_PASSWORD among them).
SECRET_ENV_WORDS = ("PASSWORD", "SECRET", "TOKEN")
# The environment variable naming the launcher's PID for its tasks.
LAUNCHER_PID_ENV = "MNIST_CLUSTER_LAUNCHER_PID"

# The project's root, so `python -m components.trainer.cluster_task` imports this checkout.
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def layout(workers: int, parameter_servers: int) -> dict[str, int]:
    """The cluster's shape as recorded in the step's properties: {"chief": 1, "worker": N, "ps": M}."""
    return {"chief": 1, "worker": workers, "ps": parameter_servers}


def cluster_spec(shape: dict[str, int]) -> dict[str, list[str]]:
    """The TF_CONFIG "cluster" for `shape` (see `layout`), every task on a free loopback port;
    job types with no task are left out."""
    return {
        job: [f"{LOOPBACK}:{free_port()}" for _ in range(count)] for job, count in shape.items() if count > 0
    }


def tf_config(spec: dict[str, list[str]], task_type: str, index: int) -> str:
    """The TF_CONFIG value of task `task_type`:`index` in cluster `spec`."""
    return json.dumps({"cluster": spec, "task": {"type": task_type, "index": index}})


def registry_path(pipeline_root: str, step_name: str) -> str:
    """Where a run's live cluster tasks are recorded: `<pipeline_root>/<step>/.cluster-tasks.json`."""
    return os.path.join(pipeline_root, step_name, REGISTRY_FILE)


def process_start_time(pid: int) -> int | None:
    """The start time of process `pid` (clock ticks since boot, /proc/<pid>/stat field 22), or
    None when no such process exists."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, start_time: int) -> bool:
    return process_start_time(pid) == start_time


def clean_leftovers(path: str, log: logging.Logger) -> list[str]:
    """Ends the tasks a killed run recorded in the registry at `path` that are still alive (same
    PID and start time), then removes the file. Returns their names ("worker:0", ...)."""
    try:
        with open(path) as f:
            recorded = json.load(f)["tasks"]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable cluster task record %s (%s)", path, e)
        os.remove(path)
        return []
    ended = []
    for task in recorded:
        pid, start_time = int(task["pid"]), int(task["start_time"])
        if _alive(pid, start_time):
            _kill_group(pid)
            ended.append(task["name"])
    if ended:
        log.warning("ended %d cluster task(s) left by an earlier run: %s", len(ended), ", ".join(ended))
    os.remove(path)
    return ended


def _kill_group(pid: int) -> None:
    """SIGKILLs the process group `pid` leads (each task leads its own)."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tie_to_launcher() -> bool:
    """Called first by a task process: when `LAUNCHER_PID_ENV` names its launcher, asks the
    kernel for SIGKILL when the launching thread ends, then exits at once (status 125) when the
    launcher is already gone (it died before the request: the signal would never come).
    Returns False when the task was not started by a launcher (one machine of several)."""
    expected = os.environ.get(LAUNCHER_PID_ENV)
    if not expected:
        return False
    # Set in the task rather than in a preexec_fn: the launcher has TensorFlow's threads, and
    # code between fork and exec in such a process can deadlock.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0 or os.getppid() != int(expected):
        os._exit(125)
    return True


@dataclasses.dataclass
class Task:
    """One launched task: its name ("worker:0"), process, log file and start time."""

    name: str
    process: subprocess.Popen
    log_path: str
    start_time: int

    @property
    def task_type(self) -> str:
        return self.name.split(":")[0]

    @property
    def result_path(self) -> str:
        return result_path(os.path.dirname(self.log_path), self.name)


def result_path(cluster_dir: str, name: str) -> str:
    """`<cluster_dir>/result-<type>-<index>.json` for task `name` ("chief:0")."""
    return os.path.join(cluster_dir, f"result-{name.replace(':', '-')}.json")


def log_path(cluster_dir: str, name: str) -> str:
    """`<cluster_dir>/<type>-<index>.log` for task `name`."""
    return os.path.join(cluster_dir, f"{name.replace(':', '-')}.log")


def _launch(name: str, spec_path: str, tf_config_value: str, cluster_dir: str) -> Task:
    """Starts task `name` in its own process group, output into its log file."""
    env = dict(
        os.environ,
        TF_CONFIG=tf_config_value,
        **{LAUNCHER_PID_ENV: str(os.getpid())},
        PYTHONPATH=os.pathsep.join(p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH")) if p),
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    # Tasks train; they never open the metadata store, so they get no secret of the pipeline's.
    for secret in [key for key in env if any(word in key.upper() for word in SECRET_ENV_WORDS)]:
        del env[secret]
    path = log_path(cluster_dir, name)
    with open(path, "ab") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", TASK_MODULE, "--spec", spec_path],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=_PROJECT_ROOT,
            start_new_session=True,
        )
    start_time = process_start_time(process.pid)
    return Task(name, process, path, start_time if start_time is not None else -1)


def _write_registry(path: str, tasks: list[Task]) -> None:
    write_text_atomic(
        path,
        json.dumps(
            {
                "launcher_pid": os.getpid(),
                "tasks": [{"name": t.name, "pid": t.process.pid, "start_time": t.start_time} for t in tasks],
            },
            indent=2,
        )
        + "\n",
    )


def last_line(path: str) -> str:
    """The last non-empty line of the file at `path` (without the task log prefix), or
    "(no output)"."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 8192))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        lines = []
    if not lines:
        return "(no output)"
    line = lines[-1]
    return line[len(LOG_PREFIX) :] if line.startswith(LOG_PREFIX) else line


def _exit_description(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _task_error(task: Task) -> PipelineError:
    """The one-line error for a task that ended badly: the pipeline error it reported in its
    result file (same class, e.g. TrainingError for a NaN loss), else its exit and last log line."""
    code = task.process.returncode
    try:
        with open(task.result_path) as f:
            reported = json.load(f).get("error")
    except (OSError, ValueError, AttributeError):
        reported = None
    if reported:
        error_class = getattr(errors, str(reported.get("type")), None)
        if not (isinstance(error_class, type) and issubclass(error_class, PipelineError)):
            error_class = TrainingError
        return error_class(f"cluster task {task.name} {_exit_description(code)}: {reported.get('message')}")
    return TrainingError(f"cluster task {task.name} {_exit_description(code)}: {last_line(task.log_path)}")


class _LogForwarder:
    """Forwards the lines a task logs for the step (those with LOG_PREFIX) to `log`."""

    def __init__(self, path: str, log: logging.Logger):
        self._path, self._log, self._offset, self._partial = path, log, 0, b""

    def poll(self) -> None:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").rstrip()
            # The chief's own "train step" lines count its own steps only (the task's log has
            # them); its "cluster step" lines give the global step.
            if line.startswith(LOG_PREFIX) and " train step " not in line[: len(LOG_PREFIX) + 16]:
                level, _, message = line[len(LOG_PREFIX) :].partition(" ")
                self._log.log(
                    logging.getLevelName(level)
                    if level in ("DEBUG", "INFO", "WARNING", "ERROR")
                    else logging.INFO,
                    "chief: %s",
                    message,
                )


def _end(tasks: list[Task]) -> None:
    """SIGKILLs every task still running (as a group) and reaps it."""
    for task in tasks:
        if task.process.poll() is None:
            _kill_group(task.process.pid)
    for task in tasks:
        task.process.wait()


def _supervise(tasks: list[Task], forwarder: _LogForwarder) -> None:
    """Waits until the chief has finished and the workers have stopped (or been ended after
    WORKER_GRACE_S). Raises the task's error when one fails first (see `_task_error`)."""
    chief = next(t for t in tasks if t.task_type == "chief")
    chief_done_at = None
    while True:
        forwarder.poll()
        for task in tasks:
            code = task.process.poll()
            if code is None:
                continue
            if code != 0:
                raise _task_error(task)
            if task.task_type == "ps" and chief_done_at is None:
                raise TrainingError(
                    f"cluster task {task.name} exited before the chief finished: {last_line(task.log_path)}"
                )
        if chief_done_at is None and chief.process.returncode == 0:
            chief_done_at = time.monotonic()
        if chief_done_at is not None:
            workers = [t for t in tasks if t.task_type == "worker"]
            if all(t.process.returncode is not None for t in workers):
                return
            if time.monotonic() - chief_done_at > WORKER_GRACE_S:
                # Ended by the caller: steps after the chief's final checkpoint are lost anyway.
                return
        time.sleep(POLL_S)


def _read_result(path: str, name: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise TrainingError(f"cluster task {name} finished without a readable result {path} ({e})") from e


def train_on_cluster(
    cfg: TrainerParams,
    examples_uri: str,
    run_dir: str,
    warm_start_checkpoint: str | None,
    registry: str,
    log: logging.Logger,
    module_digest: str | None = None,
) -> TrainingResult:
    """Trains `cfg` (its `workers` and `parameter_servers` give the cluster) on
    the Examples artifact at `examples_uri` with `run_dir` as the shared model_dir, and returns
    the chief's `TrainingResult` (its throughput is the whole cluster's, measured on the chief
    from the global step; `train_seconds` is the chief's `train_and_evaluate`).

    warm_start_checkpoint: a verified checkpoint prefix every task warm starts from, or None.
    registry: the file recording the live tasks (`registry_path`); leftovers found there are
        ended first.
    module_digest: the sha256 `cfg.module_file` must still have in every task (None: unchecked).
    Raises the pipeline error a task reported, or TrainingError naming the task that failed;
    every task has ended when this returns or raises.
    """
    clean_leftovers(registry, log)
    cluster_dir = os.path.join(run_dir, CLUSTER_DIR)
    os.makedirs(cluster_dir, exist_ok=True)
    spec_path = os.path.join(cluster_dir, SPEC_FILE)
    write_text_atomic(
        spec_path,
        json.dumps(
            {
                "params": cfg.to_dict(),
                "examples_uri": examples_uri,
                "model_dir": run_dir,
                "warm_start_checkpoint": warm_start_checkpoint,
                "module_digest": module_digest,
                "cluster_dir": cluster_dir,
            },
            indent=2,
        )
        + "\n",
    )
    shape = layout(cfg.workers, cfg.parameter_servers)
    spec = cluster_spec(shape)
    log.info(
        "cluster: chief, %d worker(s), %d parameter server(s) on %s; task logs in %s",
        cfg.workers,
        cfg.parameter_servers,
        ", ".join(f"{job}={','.join(addrs)}" for job, addrs in spec.items()),
        cluster_dir,
    )
    tasks: list[Task] = []
    forwarder = None
    try:
        # Parameter servers first, so the chief finds them listening.
        for job in ("ps", "chief", "worker"):
            for index in range(shape[job]):
                tasks.append(_launch(f"{job}:{index}", spec_path, tf_config(spec, job, index), cluster_dir))
                _write_registry(registry, tasks)
        chief = tasks[shape["ps"]]
        forwarder = _LogForwarder(chief.log_path, log)
        _supervise(tasks, forwarder)
    finally:
        _end(tasks)
        if forwarder is not None:
            forwarder.poll()  # the chief's last lines
        if os.path.exists(registry):
            os.remove(registry)
    return TrainingResult.from_json(_read_result(chief.result_path, chief.name)["result"])
