"""The pipeline under a real Apache Airflow (its own venv, .venv-airflow, built by
scripts/ensure_airflow.sh; a temporary AIRFLOW_HOME on SQLite whose dags_folder is dags/).

`airflow dags test` runs the DAG mnist_pipeline on a few thousand real digits: end to end, with
the pipeline root locked by another holder (the task is retried), and with a span whose copy
completes with drifted data (the gate's task fails). A half-copied span (no ready marker) sits
in the data root from the start and is not read until its marker lands. Then, once,
`airflow standalone` on free ports: the new-span trigger fires the DAG when a span's marker
lands and the run completes; every process it started is ended by PID.

The dags-test cases share one data root and pipeline root and run in file order: the first
trains the model the later ones reuse from cache.
"""

import fcntl
import json
import os
import subprocess
import threading

import numpy as np
import pytest
from airflow_harness import (
    REPO,
    STEPS,
    Airflow,
    Standalone,
    ensure_airflow_venv,
    task_log,
)
from mnist_slices import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    read_real,
    write_idx,
    write_mnist_slice,
)
from run_configs import small_lenient

from pipeline.core.errors import EXIT_DATA_GATE, EXIT_LOCKED
from pipeline.core.lock import pipeline_lock_path

MARKER = "_SUCCESS"
TRAIN_STEPS = 30
# A failing run's one line ends with the lock file's path; the config gives up at once.
CONFIG = f'lock_timeout_s = 0\n\n[data]\nspan_ready_marker = "{MARKER}"\n' + small_lenient(TRAIN_STEPS)


def write_span(data_root: str, span: int, n_train: int, n_test: int, offset: int = 0) -> str:
    """A complete span: the four files, then its ready marker."""
    folder = write_mnist_slice(os.path.join(data_root, f"span-{span}"), n_train, n_test, offset)
    open(os.path.join(folder, MARKER), "w").close()
    return folder


def only_zeros_and_ones(name: str, count: int):
    """The first `count` digits labelled 0 or 1 from the shipped file pair of `name`."""
    labels_name = TRAIN_LABELS if name == TRAIN_IMAGES else TEST_LABELS
    pool = 6 * count
    labels, images = read_real(labels_name, pool), read_real(name, pool)
    keep = np.flatnonzero(labels <= 1)[:count]
    assert keep.size == count
    return images[keep], labels[keep]


def summary_of(pipeline_root: str, run_id: str) -> dict:
    with open(os.path.join(pipeline_root, "runs", run_id, "summary.json")) as f:
        return json.load(f)


def serving_versions(serving_dir: str) -> list:
    return (
        sorted(int(v) for v in os.listdir(serving_dir) if v.isdigit()) if os.path.isdir(serving_dir) else []
    )


@pytest.fixture(scope="module")
def airflow_exe():
    return ensure_airflow_venv()


@pytest.fixture(scope="module")
def ws(tmp_path_factory, airflow_exe):
    """The data root (span 1 complete; span 2 half-copied: two of its four files, no marker), the
    pipeline's config, and an Airflow whose Variables point the DAG at them."""
    base = tmp_path_factory.mktemp("airflow")
    data = str(base / "data")
    write_span(data, 1, 2000, 500)
    half = os.path.join(data, "span-2")
    os.makedirs(half)
    images, labels = only_zeros_and_ones(TRAIN_IMAGES, 1000)
    write_idx(os.path.join(half, TRAIN_IMAGES), images)
    write_idx(os.path.join(half, TRAIN_LABELS), labels)
    config = base / "pipeline.toml"
    config.write_text(CONFIG)
    paths = {
        "data_root": data,
        "pipeline_root": str(base / "root"),
        "serving_dir": str(base / "serving"),
        "config": str(config),
    }
    variables = {f"mnist_pipeline_{k}": v for k, v in paths.items()}
    variables.update({"mnist_pipeline_lock_retries": 3, "mnist_pipeline_lock_retry_delay_s": 5})
    airflow = Airflow.create(airflow_exe, str(base / "airflow_home"), variables)
    return {"base": base, "airflow": airflow, **paths}


@pytest.fixture(scope="module")
def first_run(ws):
    """The DAG's first run: trains on span 1 (train_steps given as a run param)."""
    return ws["airflow"].dags_test({"train_steps": TRAIN_STEPS})


def test_the_dag_runs_the_pipeline_end_to_end_as_one_run(ws, first_run):
    airflow = ws["airflow"]
    assert first_run.returncode == 0, first_run.output[-3000:]
    assert airflow.task_states(first_run.run_id) == {step: ("success", 1) for step in STEPS}
    summary = summary_of(ws["pipeline_root"], first_run.run_id)
    assert summary["run_id"] == first_run.run_id and summary["status"] == "completed"
    assert list(summary["steps"]) == list(STEPS)
    assert {s["state"] for s in summary["steps"].values()} == {"ran"}
    # The half-copied span 2 (no marker) is not read.
    assert summary["data"]["spans"] == [1]
    assert summary["push"]["pushed"] == 1 and serving_versions(ws["serving_dir"]) == [1]
    # Each task ran its own step of the same run, with the run param and the Variables' settings.
    log = task_log(first_run.output, "trainer")
    assert f"--run-id {first_run.run_id} --from trainer --to trainer" in log
    assert f"--train-steps {TRAIN_STEPS}" in log and f"--config {ws['config']}" in log
    assert "push: version 1" in task_log(first_run.output, "pusher")


def test_a_locked_pipeline_root_is_retried_then_a_model_not_blessed_is_a_successful_run(ws, first_run):
    """The test holds the pipeline root's lock until example_gen's first try has ended (exit 4);
    its retry runs the pipeline. A per-run config with a floor no model reaches makes the run
    evaluate without blessing: the DAG run succeeds and the pusher task says why nothing was
    pushed."""
    airflow = ws["airflow"]
    strict = ws["base"] / "strict.toml"
    strict.write_text(CONFIG.replace("accuracy_floor = 0.30", "accuracy_floor = 0.999"))
    lock_fd = os.open(pipeline_lock_path(ws["pipeline_root"]), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    released = threading.Event()
    before = set(airflow.run_ids())
    process = subprocess.Popen(
        [airflow.executable, "dags", "test", "mnist_pipeline", "-c", json.dumps({"config": str(strict)})],
        env=airflow.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            # The retry waits retry_delay (5 s) after this line: the lock is free well before.
            if not released.is_set() and "[DAG TEST] end task task_id=example_gen " in line:
                os.close(lock_fd)
                released.set()
        process.wait(60)
    finally:
        if not released.is_set():
            os.close(lock_fd)
    output = "".join(lines)
    [run_id] = set(airflow.run_ids()) - before
    assert process.returncode == 0, output[-3000:]
    states = airflow.task_states(run_id)
    assert states.pop("example_gen") == ("success", 2)
    assert states == {step: ("success", 1) for step in STEPS[1:]}
    first_try = output[output.index("[DAG TEST] starting task_id=example_gen ") :]
    first_try = first_try[: first_try.index("[DAG TEST] end task task_id=example_gen ")]
    assert f"Command exited with return code {EXIT_LOCKED}" in first_try
    assert "another run holds the pipeline root (exit 4), retrying later: error: another run" in first_try
    summary = summary_of(ws["pipeline_root"], run_id)
    assert summary["status"] == "completed" and summary["evaluation"]["blessed"] == 0
    assert summary["push"]["pushed"] == 0 and serving_versions(ws["serving_dir"]) == [1]
    assert "push: not pushed (" in task_log(output, "pusher")


@pytest.fixture(scope="module")
def gate_run(ws, first_run):
    """Span 2's copy completes, its digits all 0s and 1s (label drift), and its marker lands."""
    span2 = os.path.join(ws["data_root"], "span-2")
    images, labels = only_zeros_and_ones(TEST_IMAGES, 300)
    write_idx(os.path.join(span2, TEST_IMAGES), images)
    write_idx(os.path.join(span2, TEST_LABELS), labels)
    open(os.path.join(span2, MARKER), "w").close()
    return ws["airflow"].dags_test({"train_steps": TRAIN_STEPS})


def test_a_span_is_read_once_its_marker_lands(ws, gate_run):
    summary = summary_of(ws["pipeline_root"], gate_run.run_id)
    assert summary["data"]["spans"] == [2]
    assert summary["steps"]["example_gen"]["state"] == "ran"


def test_a_bad_span_fails_the_gate_task_and_nothing_after_it_runs(ws, gate_run):
    airflow = ws["airflow"]
    assert gate_run.returncode != 0
    states = airflow.task_states(gate_run.run_id)
    assert states["example_validator"] == ("failed", 1)  # no retry
    assert {step: states[step][0] for step in ("trainer", "evaluator", "pusher")} == dict.fromkeys(
        ("trainer", "evaluator", "pusher"), "upstream_failed"
    )
    summary = summary_of(ws["pipeline_root"], gate_run.run_id)
    assert summary["exit_code"] == EXIT_DATA_GATE
    reason = summary["message"]
    log = task_log(gate_run.output, "example_validator")
    assert f"Command exited with return code {EXIT_DATA_GATE}" in log
    # The pipeline's one line is the task's failure message, at the end of its log.
    failure = log[log.index("Task failed with exception") :]
    assert f"AirflowFailException: stopped by the data gate (exit 3): error: {reason}" in failure
    assert serving_versions(ws["serving_dir"]) == [1]
    assert "pusher" not in summary["steps"] or summary["steps"]["pusher"]["state"] != "ran"


def test_on_data_gate_skip_skips_the_gate_task_and_the_dag_run_succeeds(ws, gate_run):
    """A team that wants no alert: the same gate stop, skipped (span 2 is still the newest)."""
    airflow = ws["airflow"]
    result = airflow.dags_test({"on_data_gate": "skip"})
    assert result.returncode == 0, result.output[-3000:]
    states = {task: state for task, (state, _) in airflow.task_states(result.run_id).items()}
    assert states == {
        "example_gen": "success",
        "statistics_gen": "success",
        "schema_gen": "success",
        "example_validator": "skipped",
        "trainer": "skipped",
        "evaluator": "skipped",
        "pusher": "skipped",
    }
    assert airflow.dag_runs()[-1][2] == "success"
    assert serving_versions(ws["serving_dir"]) == [1]


def test_under_a_real_scheduler_a_new_span_marker_triggers_a_run_that_completes(
    tmp_path_factory, airflow_exe
):
    """`airflow standalone` with the schedule off (new spans only), watching an empty data root;
    a span is copied in, then its marker lands: the trigger fires one asset-triggered run."""
    base = tmp_path_factory.mktemp("standalone")
    data, root, serving = str(base / "data"), str(base / "root"), str(base / "serving")
    os.makedirs(data)
    config = base / "pipeline.toml"
    config.write_text(CONFIG)
    home = str(base / "airflow_home")
    variables = {
        "mnist_pipeline_data_root": data,
        "mnist_pipeline_pipeline_root": root,
        "mnist_pipeline_serving_dir": serving,
        "mnist_pipeline_config": str(config),
        "mnist_pipeline_schedule": "none",
    }
    airflow = Airflow.create(airflow_exe, home, variables, migrate=False)  # standalone migrates
    standalone = Standalone(airflow, str(base / "standalone.log"))
    try:
        standalone.start()
        folder = write_mnist_slice(os.path.join(data, "span-1"), 2000, 500)
        open(os.path.join(folder, MARKER), "w").close()
        run = standalone.wait_for_run(timeout_s=600)
    finally:
        pids = standalone.stop()
    assert len(pids) >= 5, pids  # standalone, API server, scheduler, DAG processor, triggerer, ...
    assert standalone.leftovers() == []
    run_id, run_type, state = run
    assert (run_type, state) == ("asset_triggered", "success"), standalone.log_tail()
    assert airflow.task_states(run_id) == {step: ("success", 1) for step in STEPS}
    assert [r[1] for r in airflow.dag_runs()] == ["asset_triggered"]  # one run: no schedule, one span
    summary = summary_of(root, run_id)
    assert summary["status"] == "completed" and summary["data"]["spans"] == [1]
    assert summary["push"]["pushed"] == 1 and serving_versions(serving) == [1]
    [event] = airflow.query("SELECT extra FROM asset_event")
    assert json.loads(event[0])["payload"]["span"] == 1


TRIGGER_CHECK = r"""
import asyncio, json, os, sys
from mnist_span_trigger import SpanReadyTrigger

root, marker = sys.argv[1], "_SUCCESS"


class Store:  # the asset state store the triggerer hands the trigger (a dict here)
    def __init__(self):
        self.values = {}

    async def aget(self, key, default=None):
        return self.values.get(key, default)

    async def aset(self, key, value):
        self.values[key] = value


def make(n, ready):
    os.makedirs(f"{root}/span-{n}", exist_ok=True)
    open(f"{root}/span-{n}/train-images-idx3-ubyte.gz", "w").close()
    if ready:
        open(f"{root}/span-{n}/{marker}", "w").close()


async def quiet(gen, polls=30):
    # No event while the trigger polls `polls` times (it polls every 0.01 s).
    pending = asyncio.ensure_future(gen.__anext__())
    await asyncio.sleep(polls * 0.01)
    return pending


async def main():
    store = Store()
    trigger = SpanReadyTrigger(root, marker, poke_interval=0.01)
    trigger.asset_state_store = store
    events = []
    gen = trigger.run()
    pending = await quiet(gen)  # an empty root
    make(1, ready=False)  # a folder being copied
    await asyncio.sleep(0.3)
    events.append(["span-1 folder without marker", pending.done()])
    make(1, ready=True)
    events.append(["span-1 marker", (await asyncio.wait_for(pending, 30)).payload])
    pending = await quiet(gen)
    events.append(["nothing new", pending.done()])
    make(3, ready=True)
    make(2, ready=True)
    events.append(["span-3 and span-2 markers", (await asyncio.wait_for(pending, 30)).payload])
    pending = await quiet(gen)
    events.append(["stored", store.values, pending.done()])
    pending.cancel()
    # A restarted trigger reads what was announced from the store: no repeat.
    again = SpanReadyTrigger(root, marker, poke_interval=0.01)
    again.asset_state_store = store
    pending = await quiet(again.run())
    events.append(["after a restart", pending.done()])
    pending.cancel()
    events.append(["serialized", again.serialize()])
    print(json.dumps(events))


asyncio.run(main())
"""


def test_the_span_trigger_fires_once_per_new_span_on_its_marker_not_its_folder(tmp_path, airflow_exe):
    """The trigger's own logic, in Airflow's venv, fed a dict as its asset state store."""
    python = os.path.join(os.path.dirname(airflow_exe), "python")
    env = {"AIRFLOW_HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"]}
    out = subprocess.run(
        [python, "-c", TRIGGER_CHECK, str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = str(tmp_path / "data")
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [
        ["span-1 folder without marker", False],
        ["span-1 marker", {"data_root": data, "span": 1, "marker": f"{data}/span-1/{MARKER}"}],
        ["nothing new", False],
        ["span-3 and span-2 markers", {"data_root": data, "span": 3, "marker": f"{data}/span-3/{MARKER}"}],
        ["stored", {"announced_span": 3}, False],
        ["after a restart", False],
        [
            "serialized",
            [
                "mnist_span_trigger.SpanReadyTrigger",
                {"data_root": data, "marker": MARKER, "poke_interval": 0.01},
            ],
        ],
    ]


DAG_CHECK = r"""
import importlib.util, json, sys
from airflow.dag_processing.dagbag import DagBag

bag = DagBag(dag_folder=sys.argv[1])
dag = bag.dags["mnist_pipeline"]
import mnist_pipeline_step as step


def outcome(status, on_gate):
    try:
        step.raise_for_exit(status, "error: the reason", on_gate)
    except Exception as e:
        return [type(e).__name__, str(e)]
    return None

print(json.dumps({
    "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
    "dags": sorted(bag.dags),
    "tensorflow": importlib.util.find_spec("tensorflow") is not None,
    "tasks": [t.task_id for t in dag.topological_sort()],
    "upstream": {t.task_id: sorted(t.upstream_task_ids) for t in dag.tasks},
    "max_active_runs": dag.max_active_runs,
    "schedule": [type(dag.timetable).__name__, dag.timetable.timetable.expression,
                 dag.timetable.asset_condition.name,
                 dag.timetable.asset_condition.watchers[0].trigger.serialize()],
    "params": sorted(dag.params),
    "retries": {t.retries for t in dag.tasks} == {3},
    "exit_codes": [step.EXIT_OK, step.EXIT_DATA_GATE, step.EXIT_LOCKED],
    "outcomes": {f"{status} {on_gate}": outcome(status, on_gate)
                 for status in (0, 1, 2, 3, 4, 137) for on_gate in ("fail", "skip")},
}))
"""


def test_the_dag_loads_in_airflows_venv_without_the_pipeline(tmp_path, airflow_exe):
    """Airflow's venv has no TensorFlow: the DAG only builds commands. Its exit statuses are
    the pipeline's, and each maps to the exception that gives the task its state."""
    from pipeline.core.errors import EXIT_OK

    python = os.path.join(os.path.dirname(airflow_exe), "python")
    env = {"AIRFLOW_HOME": str(tmp_path / "home"), "PATH": os.environ["PATH"]}
    out = subprocess.run(
        [python, "-c", DAG_CHECK, os.path.join(REPO, "dags")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    dag = json.loads(out.stdout.strip().splitlines()[-1])
    assert dag["import_errors"] == {} and dag["dags"] == ["mnist_pipeline"]
    assert dag["tensorflow"] is False
    assert dag["tasks"] == list(STEPS)
    assert dag["upstream"] == {step: ([STEPS[i - 1]] if i else []) for i, step in enumerate(STEPS)}
    assert dag["max_active_runs"] == 1
    # Hourly, and on each new span of the default data root (no Variables set here).
    data = os.path.join(REPO, "data", "mnist")
    assert dag["schedule"] == [
        "AssetOrTimeSchedule",
        "0 * * * *",
        "mnist_pipeline_new_span",
        ["mnist_span_trigger.SpanReadyTrigger", {"data_root": data, "marker": MARKER, "poke_interval": 10.0}],
    ]
    assert dag["params"] == sorted(
        ["data_root", "pipeline_root", "serving_dir", "config", "train_steps", "on_data_gate"]
    )
    assert dag["retries"] is True
    assert dag["exit_codes"] == [EXIT_OK, EXIT_DATA_GATE, EXIT_LOCKED]
    # AirflowFailException: failed, never retried; AirflowException: retried.
    for on_gate in ("fail", "skip"):
        outcomes = {status: dag["outcomes"][f"{status} {on_gate}"] for status in (0, 1, 2, 3, 4, 137)}
        assert outcomes[0] is None
        for status in (1, 2, 137):
            assert outcomes[status] == [
                "AirflowFailException",
                f"step failed (exit {status}): error: the reason",
            ]
        assert outcomes[4] == [
            "AirflowException",
            "another run holds the pipeline root (exit 4), retrying later: error: the reason",
        ]
    assert dag["outcomes"]["3 fail"] == [
        "AirflowFailException",
        "stopped by the data gate (exit 3): error: the reason",
    ]
    assert dag["outcomes"]["3 skip"] == [
        "AirflowSkipException",
        "stopped by the data gate (exit 3), skipped as on_data_gate = skip: error: the reason",
    ]
