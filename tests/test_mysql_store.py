"""ML Metadata on a real MariaDB server (Debian's mariadb-server, started by the `mariadb`
fixture): the whole pipeline on a small slice of real digits, a fully cached rerun, `runs`,
`status`, `rollback` and `predict`; a second pipeline root on the same database kept apart; a
concurrent run of the same pipeline refused with exit 4 by the lock held in the store; a killed
run resumed; a lost connection failing the run cleanly; bad settings refused before any step
with one line and exit 2; and the password in no file the runs wrote and no line they logged.

The tests of this module run in order and share one database: each builds on the last.

Last, scripts/ensure_mariadb.sh with a second private server on the machine: when another
checkout's server (here the session's own, from the `mariadb` fixture) holds the port, a new
server takes the next free one and says so; a running server is reused on its own port; a
MARIADB_PORT that is taken is refused in one line before any server or datadir is created.
Every test of the `mariadb` fixture lives in this module, so that one pytest-xdist worker
(`--dist loadfile`) starts that server once and sets its test account's password once.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pymysql
import pytest
from mariadb_server import ENSURE
from mnist_slices import write_mnist_slice
from run_configs import small_lenient

from pipeline.factory import STEP_NAMES

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = small_lenient(train_steps=60)
# The pipeline's steps in order, from the one list the DAG is checked against.
STEPS = STEP_NAMES
# Everything the commands of this module printed, for the password check at the end.
OUTPUTS: list = []


@pytest.fixture(scope="module")
def ws(tmp_path_factory, mariadb):
    base = tmp_path_factory.mktemp("mysql_store")
    data = write_mnist_slice(str(base / "data"), 1000, 200)
    database = mariadb.new_database()
    config = base / "config.toml"
    config.write_text(CONFIG + mariadb.config_section(database))
    return {
        "base": base,
        "data": data,
        "config": str(config),
        "db": database,
        "server": mariadb,
        "A": base / "rootA",
        "B": base / "rootB",
    }


def _command(ws, root, *args, config=None):
    return [
        sys.executable,
        os.path.join(PROJECT, "run_local.py"),
        *args,
        "--config",
        config or ws["config"],
        "--pipeline-root",
        str(root),
    ]


def start(ws, root, *extra, config=None, summary=None):
    """A pipeline run as its own process (so it can be killed); output merged, as text."""
    command = _command(ws, root, config=config) + ["--data-root", ws["data"], *extra]
    if summary:
        command += ["--summary-json", str(summary)]
    return subprocess.Popen(
        command,
        env=dict(ws["server"].env(), TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=PROJECT),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(process, timeout=600):
    out, _ = process.communicate(timeout=timeout)
    OUTPUTS.append(out)
    return process.returncode, out


def run(ws, root, *extra, config=None):
    """Runs the pipeline to its end; returns (exit status, output, summary or None)."""
    summary = ws["base"] / f"summary-{time.monotonic_ns()}.json"
    code, out = finish(start(ws, root, *extra, config=config, summary=summary))
    return code, out, (json.loads(summary.read_text()) if summary.exists() else None)


def command(ws, root, *args, config=None, env=None):
    """Runs `run_local.py COMMAND ...`; returns (exit status, stdout, stderr)."""
    result = subprocess.run(
        _command(ws, root, *args, config=config),
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(env or ws["server"].env(), TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=PROJECT),
    )
    OUTPUTS.append(result.stdout + result.stderr)
    return result.returncode, result.stdout, result.stderr


def store_of(ws, root, pipeline_name=""):
    from pipeline.core.metadata import open_store

    return open_store(str(root), ws["server"].settings(ws["db"], pipeline_name=pipeline_name))


def states(summary) -> dict:
    return {name: step["state"] for name, step in summary["steps"].items()}


def wait_for(process, pattern, timeout=300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if glob.glob(pattern):
            return True
        time.sleep(0.02)
    return False


def test_the_store_lock_is_one_holder_per_pipeline_and_ends_with_its_connection(mariadb, tmp_path):
    from pipeline.core.errors import LockTimeoutError, StoreUnavailableError
    from pipeline.core.lock import run_lock
    from pipeline.core.store_lock import StoreLock

    settings = mariadb.settings(mariadb.new_database())
    holder, other_pipeline = StoreLock(settings, "pipeline-1"), StoreLock(settings, "pipeline-2")
    holder.acquire(0)
    other_pipeline.acquire(0)  # another pipeline's lock is another lock
    started = time.monotonic()
    with pytest.raises(LockTimeoutError, match=r"holds the lock on pipeline 'pipeline-1'"):
        with run_lock(
            str(tmp_path / "elsewhere"), 0.6, mariadb.settings(settings.database, pipeline_name="pipeline-1")
        ):
            pytest.fail("took a lock another run holds")
    assert time.monotonic() - started >= 0.5
    holder.check()
    mariadb.admin(f"KILL {holder._connection.thread_id()}")  # as a lost network would
    with pytest.raises(
        StoreUnavailableError,
        match=rf"lost the run lock of pipeline 'pipeline-1' in the metadata store "
        rf"127.0.0.1:{mariadb.port}/{settings.database}",
    ):
        holder.check()
    follower = StoreLock(settings, "pipeline-1")
    follower.acquire(0)  # the server freed it with the connection
    follower.check()
    for lock in (holder, other_pipeline, follower):
        lock.release()


def test_two_pipelines_in_one_database_see_only_their_own_records(mariadb, tmp_path):
    from pipeline.core.metadata import open_store

    settings = mariadb.settings(mariadb.new_database())
    one, two = open_store(str(tmp_path / "one"), settings), open_store(str(tmp_path / "two"), settings)
    for store, uri in ((one, "/one/model"), (two, "/two/model")):
        contexts = store.run_contexts(f"run-{uri[1:4]}", {})
        execution_id = store.start_execution("trainer", "r", "k", contexts, {})
        store.complete_execution(execution_id, {"model": ("Model", uri, {})}, {}, contexts)
    running = one.start_execution("trainer", "r2", "k", one.run_contexts("run-one-2", {}), {})
    assert [a.uri for a in one.artifacts_of_type("Model")] == ["/one/model"]
    assert [a.uri for a in two.artifacts_of_type("Model")] == ["/two/model"]
    assert two.abandon_running_executions() == [] and one.abandon_running_executions() == [running]
    assert one.pipeline_context.name == os.path.realpath(tmp_path / "one")
    assert one.path is None and not os.path.exists(tmp_path / "one" / "metadata.sqlite")


def test_the_pipeline_runs_on_mariadb_creates_no_sqlite_file_and_reruns_fully_cached(ws):
    code, out, first = run(ws, ws["A"])
    assert code == 0, out[-3000:]
    assert set(states(first).values()) == {"ran"}
    assert first["push"]["pushed"] == 1 and first["push"]["version"] == 1
    assert glob.glob(str(ws["base"] / "**" / "*.sqlite*"), recursive=True) == []

    code, out, rerun = run(ws, ws["A"])
    assert code == 0, out[-3000:]
    assert states(rerun) == {**{step: "cached" for step in STEPS[:-1]}, "pusher": "ran"}, states(rerun)
    assert rerun["push"]["pushed"] == 0 and "already serving" in rerun["push"]["reason"]
    # The lineage is in the database: the rerun's executions link the first run's artifacts.
    store = store_of(ws, ws["A"])
    [model] = store.artifacts_of_type("Model")
    assert model.uri == first["steps"]["trainer"]["outputs"]["model"]
    trainer_runs = store.executions_of("trainer")
    assert [e.last_known_state for e in trainer_runs] == [store_module().CACHED, store_module().COMPLETE]
    assert store.outputs_of(trainer_runs[0].id) == store.outputs_of(trainer_runs[1].id)
    assert store.outputs_of(trainer_runs[0].id)["model"] == model.id
    saved = json.loads((ws["A"] / "runs" / rerun["run_id"] / "config.json").read_text())
    assert saved["metadata"]["backend"] == "mysql" and "password" not in saved["metadata"]


def store_module():
    from pipeline.core import metadata

    return metadata


def test_runs_status_rollback_and_predict_read_the_shared_store(ws):
    code, out, second = run(ws, ws["A"], "--train-steps", "61")
    assert code == 0, out[-3000:]
    assert second["steps"]["trainer"]["state"] == "ran" and second["push"]["version"] == 2

    code, out, err = command(ws, ws["A"], "runs", "--json")
    assert code == 0, err
    pushes = [r["push"] for r in json.loads(out)]
    assert pushes[0] == "version 1" and "already serving" in pushes[1] and pushes[2] == "version 2", pushes

    code, out, err = command(ws, ws["A"], "status")
    assert code == 0, err
    status = json.loads(out)
    assert status["serving"]["version"] == 2 and status["serving"]["trained_in_run"] == second["run_id"]
    assert status["serving"]["blessed"] == 1 and status["serving"]["metrics"]["example_count"] == 200

    code, out, err = command(ws, ws["A"], "rollback")
    assert code == 0, err
    assert "version 3 now serves the model of version 1" in err
    status = json.loads(command(ws, ws["A"], "status")[1])
    assert status["serving"]["version"] == 3 and status["serving"]["rolled_back_from"] == 1

    code, out, err = command(ws, ws["A"], "predict", os.path.join(ws["data"], "t10k-images-idx3-ubyte.gz"))
    assert code == 0, err
    assert len(out.splitlines()) == 200 and "verified" in err


def test_a_second_pipeline_on_the_database_is_kept_apart_and_its_killed_run_resumes(ws):
    server, root_b = ws["server"], ws["B"]
    serving_a = json.loads(command(ws, ws["A"], "status")[1])["serving"]["version"]
    victim = start(ws, root_b, "--train-steps", "100000")  # still training when it is killed
    assert wait_for(victim, str(root_b / "trainer" / "model_run" / ".staging-*" / "*")), (
        "B never reached its trainer"
    )

    # Another machine (another local root) running the same pipeline waits for the lock held in
    # the store, then gives up with exit 4.
    same_pipeline = ws["base"] / "same_pipeline.toml"
    same_pipeline.write_text(
        CONFIG.replace("[trainer]", "lock_timeout_s = 1.0\n\n[trainer]")
        + server.config_section(ws["db"], pipeline_name=os.path.realpath(root_b))
    )
    code, out, _ = run(ws, ws["base"] / "rootB-elsewhere", config=str(same_pipeline))
    assert code == 4, out[-3000:]
    assert "holds the lock on pipeline" in out and f"127.0.0.1:{server.port}/{ws['db']}" in out, out[-3000:]

    victim.send_signal(signal.SIGKILL)
    victim.wait()
    store_b = store_of(ws, root_b)
    assert [e.last_known_state for e in store_b.executions_of("trainer")] == [store_module().RUNNING]
    # Pipeline A's crash recovery does not touch B's interrupted step, and sees none of B's.
    store_a = store_of(ws, ws["A"])
    assert store_a.abandon_running_executions() == []
    assert {a.uri.split(os.sep + "trainer")[0] for a in store_a.artifacts_of_type("Model")} == {str(ws["A"])}
    assert store_b.artifacts_of_type("Model") == []

    code, out, resumed = run(ws, root_b)
    assert code == 0, out[-3000:]
    assert "1 execution(s) marked failed" in out
    steps = states(resumed)
    assert steps["example_gen"] == "cached" and steps["trainer"] == "ran", steps
    # B's own cache, outputs and baseline: nothing of A's (A serves its version 3 meanwhile).
    assert all(
        uri.startswith(str(root_b)) for step in resumed["steps"].values() for uri in step["outputs"].values()
    )
    assert resumed["push"]["pushed"] == 1 and resumed["push"]["version"] == 1
    store_b = store_of(ws, root_b)
    [evaluation] = store_b.executions_of("evaluator")
    assert set(store_b.inputs_of(evaluation.id)) == {"examples", "model"}  # no baseline: B serves nothing yet
    assert resumed["evaluation"]["policy"] is None
    [b_example_gen] = store_b.executions_of("example_gen")[1:]
    assert b_example_gen.last_known_state == store_module().COMPLETE  # ran for B, not A's cache reused
    assert json.loads(command(ws, ws["A"], "status")[1])["serving"]["version"] == serving_a


def test_a_lost_connection_fails_the_run_cleanly_and_the_next_run_recovers(ws):
    serving = json.loads(command(ws, ws["A"], "status")[1])["serving"]["version"]
    # Long enough to be training still when its connections are killed; it fails at its commit.
    victim = start(ws, ws["A"], "--train-steps", "400", "--to", "trainer")
    assert wait_for(victim, str(ws["A"] / "trainer" / "model_run" / ".staging-*" / "*")), (
        "never reached the trainer"
    )
    assert ws["server"].kill_connections() >= 1
    code, out = finish(victim, timeout=300)
    assert code == 1, out[-3000:]
    [line] = [line for line in out.splitlines() if line.startswith("error: ")]
    assert "lost the run lock" in line and f"127.0.0.1:{ws['server'].port}/{ws['db']}" in line, line

    code, out, recovered = run(ws, ws["A"], "--train-steps", "62", "--to", "trainer")
    assert code == 0, out[-3000:]
    assert "1 execution(s) marked failed" in out
    assert states(recovered)["trainer"] == "ran"
    assert glob.glob(str(ws["A"] / "**" / ".staging-*"), recursive=True) == []
    store = store_of(ws, ws["A"])
    newest, interrupted = store.executions_of("trainer")[:2]
    assert newest.last_known_state == store_module().COMPLETE
    assert interrupted.last_known_state == store_module().FAILED
    assert "abandoned" in interrupted.custom_properties["error"].string_value
    # Nothing of the failed run was recorded or published.
    assert json.loads(command(ws, ws["A"], "status")[1])["serving"]["version"] == serving


@pytest.mark.parametrize(
    "case", ["wrong password", "unreachable port", "missing database", "database not allowed"]
)
def test_bad_settings_are_one_line_naming_the_server_and_exit_2_before_any_step(ws, case, tmp_path):
    server = ws["server"]
    port, database, extra, env = server.port, ws["db"], {}, server.env()
    if case == "wrong password":
        env = dict(env, MLMD_MYSQL_PASSWORD="not-" + server.password)
    elif case == "unreachable port":
        port = 1
    elif case == "database not allowed":  # the account may create mlmd_* databases only
        database = "other_" + server.new_database()
    else:
        database, extra = server.new_database(), {"skip_db_creation": True}
    config = tmp_path / "bad.toml"
    config.write_text(
        CONFIG + server.config_section(database, **extra).replace(f"port = {server.port}", f"port = {port}")
    )
    root = tmp_path / "root"
    code, out, err = command(ws, root, "--data-root", ws["data"], config=str(config), env=env)
    assert code == 2, err[-3000:]
    [line] = [line for line in err.splitlines() if line.strip()]
    assert line.startswith(f"error: metadata store mysql {server.user}@127.0.0.1:{port}/{database}: "), line
    assert server.password not in line
    assert not (root / "runs").exists() and not glob.glob(str(root / "*" / "*"))


def test_metadata_restore_refuses_a_mysql_store(ws):
    code, _, err = command(ws, ws["A"], "metadata", "restore")
    assert code == 2
    assert "mysqldump" in err and ws["db"] in err


def test_the_password_is_in_no_file_the_runs_wrote_and_no_line_they_logged(ws):
    password = ws["server"].password
    files = [p for p in glob.glob(str(ws["base"] / "**" / "*"), recursive=True) if os.path.isfile(p)]
    assert len(files) > 50 and any(p.endswith("config.json") for p in files)
    for path in files:
        with open(path, "rb") as f:
            assert password.encode() not in f.read(), path
    assert len(OUTPUTS) >= 10
    assert not [out for out in OUTPUTS if password in out]


# ---- scripts/ensure_mariadb.sh beside the session's server ------------------------------------


def _ensure(directory, password, port=None):
    env = dict(
        os.environ, MARIADB_DIR=str(directory), MLMD_MYSQL_PASSWORD=password, MARIADB_TEST_USER="mlmd_second"
    )
    env.pop("MARIADB_PORT", None)
    if port is not None:
        env["MARIADB_PORT"] = str(port)
    return subprocess.run([ENSURE], env=env, capture_output=True, text=True, timeout=600)


def _settings(result) -> dict:
    return dict(item.split("=", 1) for item in result.stdout.strip().splitlines()[-1].split())


def _stop(directory) -> None:
    pid_file = directory / "mariadbd.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    for _ in range(120):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.25)
    os.kill(pid, signal.SIGKILL)


def test_a_second_server_takes_a_free_port_and_is_reused_on_it(mariadb, tmp_path):
    directory = tmp_path / "second"
    try:
        first = _ensure(directory, "pw-second-1")
        assert first.returncode == 0, first.stderr
        port = int(_settings(first)["MARIADB_PORT"])
        pid = (directory / "mariadbd.pid").read_text().strip()
        assert port != mariadb.port
        with pymysql.connect(host="127.0.0.1", port=port, user="mlmd_second", password="pw-second-1") as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT @@datadir")
                assert cursor.fetchone()[0].startswith(str(directory))

        again = _ensure(directory, "pw-second-2")
        assert again.returncode == 0, again.stderr
        assert int(_settings(again)["MARIADB_PORT"]) == port
        assert (directory / "mariadbd.pid").read_text().strip() == pid  # the same server, not a new one
        with pymysql.connect(host="127.0.0.1", port=port, user="mlmd_second", password="pw-second-2") as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone()[0] == 1
    finally:
        _stop(directory)


def test_a_taken_mariadb_port_is_refused_in_one_line_before_any_server_or_datadir_is_created(
    mariadb, tmp_path
):
    directory = tmp_path / "third"
    result = _ensure(directory, "pw-third", port=mariadb.port)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: MARIADB_PORT={mariadb.port} is already in use on 127.0.0.1 "
        "(unset MARIADB_PORT to take a free port)"
    )
    assert not (directory / "data").exists()
    assert not (directory / "mariadbd.pid").exists()
