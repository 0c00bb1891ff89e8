"""The `[metadata]` config section, the deadlock retry, and pipeline scoping in one store,
without a database server (the same scoping on MariaDB: tests/test_mysql_store.py)."""

import os

import pytest

from pipeline.config import config_to_dict, load_config
from pipeline.core import store_retry
from pipeline.core.errors import ConfigError, StoreUnavailableError
from pipeline.core.metadata import COMPLETE, FAILED, RUNNING, MetadataStore, open_store
from pipeline.core.store_settings import MySqlSettings, lock_name, pipeline_identity
from pipeline.metadata_settings import store_settings

MYSQL = {"backend": "mysql", "host": "db.example", "port": 3307, "database": "mlmd_prod", "user": "pipeline"}


def test_the_default_store_is_the_sqlite_file_of_the_pipeline_root():
    config = load_config()
    assert config.metadata.backend == "sqlite"
    assert store_settings(config, environ={}) is None


def test_a_mysql_section_becomes_settings_with_the_password_from_the_environment_only():
    config = load_config(
        overrides={"metadata": {**MYSQL, "skip_db_creation": True, "pipeline_name": "mnist-prod"}}
    )
    settings = store_settings(config, environ={"MLMD_MYSQL_PASSWORD": "s3cr3t-value"})
    assert (settings.host, settings.port, settings.database, settings.user) == (
        "db.example",
        3307,
        "mlmd_prod",
        "pipeline",
    )
    assert (
        settings.password == "s3cr3t-value"
        and settings.skip_db_creation
        and settings.pipeline_name == "mnist-prod"
    )
    assert "s3cr3t-value" not in repr(settings) and "s3cr3t-value" not in settings.describe()
    assert settings.describe() == "mysql pipeline@db.example:3307/mlmd_prod"
    assert "password" not in config_to_dict(config)["metadata"]


def test_a_mysql_store_without_the_password_variable_is_a_usage_error_naming_it():
    config = load_config(overrides={"metadata": MYSQL})
    with pytest.raises(
        ConfigError, match=r"db\.example:3307/mlmd_prod: set the environment variable MLMD_MYSQL_PASSWORD"
    ):
        store_settings(config, environ={})


def test_a_password_in_the_config_file_is_refused_without_echoing_it(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[metadata]\nbackend = "mysql"\nuser = "u"\npassword = "hunter2-in-a-file"\n')
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert "metadata.password" in str(info.value) and "MLMD_MYSQL_PASSWORD" in str(info.value)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"backend": "postgres"}, "metadata.backend"),
        ({"port": 0}, "metadata.port"),
        ({"port": 70000}, "metadata.port"),
        ({"database": "mlmd; DROP TABLE x"}, "metadata.database"),
        ({"database": ""}, "metadata.database"),
        ({"user": ""}, "metadata.user"),
        ({"host": " "}, "metadata.host"),
        ({"pipeline_name": "x" * 256}, "metadata.pipeline_name"),
        ({"port": "3306"}, "metadata.port"),
    ],
)
def test_bad_mysql_settings_name_their_key(changes, key):
    with pytest.raises(ConfigError, match=f"config key {key}"):
        load_config(overrides={"metadata": {**MYSQL, **changes}})


def test_mysql_keys_are_not_checked_while_the_backend_is_sqlite():
    config = load_config(overrides={"metadata": {"user": "", "database": "x y"}})
    assert store_settings(config, environ={}) is None


def test_pipeline_identity_and_lock_name(tmp_path):
    settings = MySqlSettings("h", 1, "mlmd", "u", "pw")
    assert pipeline_identity(None, str(tmp_path)) == "mnist"  # every SQLite store names it so
    link = tmp_path / "link"
    os.symlink(tmp_path, link)
    assert pipeline_identity(settings, str(link)) == os.path.realpath(tmp_path)
    assert pipeline_identity(MySqlSettings("h", 1, "mlmd", "u", pipeline_name="prod"), "/any") == "prod"
    assert pipeline_identity(settings, "/" + "d" * 300).startswith("sha256:")
    names = {
        lock_name(settings, "a"),
        lock_name(settings, "b"),
        lock_name(MySqlSettings("h", 1, "other", "u"), "a"),
    }
    assert len(names) == 3 and all(len(n) <= 64 for n in names)


# ---- the deadlock retry ----------------------------------------------------------------------
class FakeStatusError(Exception):
    """What ML Metadata raises when MySQL ends a transaction with an error."""


DEADLOCK = FakeStatusError(
    "mysql_query failed: errno: Deadlock found when trying to get lock; try restarting "
    "transaction, error: Deadlock found when trying to get lock; try restarting transaction"
)
LOST = FakeStatusError(
    "mysql_query failed: errno: Lost connection to MySQL server during query, error: Lost ..."
)


class Flaky:
    def __init__(self, *errors):
        self.errors, self.calls = list(errors), []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.errors:
            raise self.errors.pop(0)
        return "committed"


def test_a_deadlocked_call_is_run_again_with_growing_pauses():
    call, pauses = Flaky(DEADLOCK, DEADLOCK), []
    assert store_retry.call_with_retry(call, 1, key="v", sleep=pauses.append) == "committed"
    assert call.calls == [((1,), {"key": "v"})] * 3
    assert pauses == [0.05, 0.1]


def test_a_deadlock_on_every_attempt_raises_it_after_the_last():
    call, pauses = Flaky(*[DEADLOCK] * 5), []
    with pytest.raises(FakeStatusError, match="Deadlock"):
        store_retry.call_with_retry(call, sleep=pauses.append)
    assert len(call.calls) == 5 and pauses == [0.05, 0.1, 0.2, 0.4]


def test_a_lost_connection_is_not_retried_and_names_the_store():
    call, pauses = Flaky(LOST), []
    with pytest.raises(StoreUnavailableError, match=r"metadata store mysql u@h:1/db: connection lost"):
        store_retry.call_with_retry(call, where="mysql u@h:1/db", sleep=pauses.append)
    assert len(call.calls) == 1 and pauses == []


def test_other_errors_pass_through_unchanged_and_at_once():
    error = FakeStatusError("NOT_FOUND: no artifact with id 7")
    call = Flaky(error)
    with pytest.raises(FakeStatusError) as info:
        store_retry.call_with_retry(call, sleep=lambda s: pytest.fail("slept"))
    assert info.value is error and len(call.calls) == 1


def test_the_retrying_store_wraps_every_method():
    class Store:
        calls = 0
        kind = "fake"

        def put_executions(self, executions):
            Store.calls += 1
            if Store.calls == 1:
                raise DEADLOCK
            return [len(executions)]

    wrapped = store_retry.RetryingStore(Store(), "fake")
    assert wrapped.put_executions(["a", "b"]) == [2] and Store.calls == 2
    assert wrapped.kind == "fake"


# ---- one pipeline per context ----------------------------------------------------------------
def _record(store: MetadataStore, run_id: str, uri: str, complete: bool = True):
    contexts = store.run_contexts(run_id, {})
    execution_id = store.start_execution("trainer", run_id, "key", contexts, {})
    if complete:
        store.complete_execution(
            execution_id, {"model": ("Model", uri, {"content_digest": "d"})}, {}, contexts
        )
    return execution_id


def test_two_pipelines_in_one_store_never_see_each_others_records(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    one, two = MetadataStore(path, "pipeline-one"), MetadataStore(path, "pipeline-two")
    _record(one, "r1", "/one/model/1")
    running = _record(one, "r2", "/one/model/2", complete=False)
    _record(two, "r3", "/two/model/3")
    assert [a.uri for a in one.artifacts_of_type("Model")] == ["/one/model/1"]
    assert [a.uri for a in two.artifacts_of_type("Model")] == ["/two/model/3"]
    assert len(one.executions_of("trainer")) == 2 and len(two.executions_of("trainer")) == 1
    assert two.abandon_running_executions() == []
    assert one.abandon_running_executions() == [running]
    # The same external file is one record per pipeline, reused within it.
    first = one.put_external_artifact("CuratedSchema", "/etc/schema.pbtxt", {"content_digest": "x"})
    assert one.put_external_artifact("CuratedSchema", "/etc/schema.pbtxt", {"content_digest": "x"}) == first
    second = two.put_external_artifact("CuratedSchema", "/etc/schema.pbtxt", {"content_digest": "x"})
    assert second != first
    assert [a.id for a in two.artifacts_of_type("CuratedSchema")] == [second]


def _write_store_as_the_previous_version_did(path: str, root) -> tuple:
    """A SQLite store laid out as before shared stores existed: executions associated with the
    "pipeline" context "mnist", outputs attributed to it, external inputs attributed to nothing.
    Returns (the RUNNING execution's id, the external artifact's id)."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    config = mlmd.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    pipeline_type = store.put_context_type(mlmd.ContextType(name="pipeline"))
    run_type = store.put_context_type(mlmd.ContextType(name="pipeline_run"))
    trainer = store.put_execution_type(mlmd.ExecutionType(name="trainer"))
    model_type = store.put_artifact_type(mlmd.ArtifactType(name="Model"))
    raw_type = store.put_artifact_type(mlmd.ArtifactType(name="RawData"))
    pipeline = mlmd.Context(type_id=pipeline_type, name="mnist")
    [pipeline.id] = store.put_contexts([pipeline])
    ids = []
    for run_id, state in (("old-run", mlmd.Execution.COMPLETE), ("killed-run", mlmd.Execution.RUNNING)):
        run = mlmd.Context(type_id=run_type, name=run_id)
        [run.id] = store.put_contexts([run])
        outputs = []
        if state == mlmd.Execution.COMPLETE:
            model = mlmd.Artifact(
                type_id=model_type, uri=str(root / "trainer/model/1"), state=mlmd.Artifact.LIVE
            )
            outputs = [(model, mlmd.Event(type=mlmd.Event.OUTPUT))]
        execution_id, _, _ = store.put_execution(
            mlmd.Execution(type_id=trainer, last_known_state=state), outputs, [pipeline, run]
        )
        ids.append(execution_id)
    raw = mlmd.Artifact(type_id=raw_type, uri="/data", state=mlmd.Artifact.LIVE)
    raw.custom_properties["content_digest"].string_value = "f"
    [raw_id] = store.put_artifacts([raw])
    return ids[1], raw_id


def test_a_store_written_by_the_previous_version_opens_as_one_pipeline(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    interrupted, raw = _write_store_as_the_previous_version_did(str(root / "metadata.sqlite"), root)

    store = open_store(str(root))
    assert [a.uri for a in store.artifacts_of_type("Model")] == [str(root / "trainer/model/1")]
    assert [e.last_known_state for e in store.executions_of("trainer")] == [RUNNING, COMPLETE]
    assert store.abandon_running_executions() == [interrupted]
    assert store.executions_of("trainer")[0].last_known_state == FAILED
    # Its external records were never attributed to the pipeline: registered again, same content.
    again = store.put_external_artifact("RawData", "/data", {"content_digest": "f"})
    assert again != raw and store.artifact(again).properties == {"content_digest": "f"}
    assert store.put_external_artifact("RawData", "/data", {"content_digest": "f"}) == again


# ---- a run that loses its store lock ---------------------------------------------------------
def _write(ctx):
    from pipeline.core.step import StepOutcome

    for folder in ctx.outputs.values():
        with open(os.path.join(folder, "out.txt"), "w") as f:
            f.write(ctx.step_name)
    return StepOutcome()


class LockLostAfter:
    """A RunLock whose `check` fails from its `n`-th call on, as after a lost connection."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def check(self):
        self.calls += 1
        if self.calls >= self.n:
            raise StoreUnavailableError(
                "lost the run lock of pipeline 'p' in the metadata store h:1/db (test)"
            )


def test_a_run_that_loses_its_lock_commits_nothing_more_and_the_next_run_recovers(tmp_path, monkeypatch):
    import contextlib

    from pipeline.core import runner
    from pipeline.core.pipeline import Pipeline
    from pipeline.core.step import InputSpec, StepSpec

    steps = (
        StepSpec("example_gen", {}, {"numbers": "Numbers"}, _write, {}),
        StepSpec(
            "trainer", {"numbers": InputSpec(producer="example_gen.numbers")}, {"model": "Model"}, _write, {}
        ),
        StepSpec("pusher", {"model": InputSpec(producer="trainer.model")}, {"pushed": "Pushed"}, _write, {}),
    )
    pipeline = Pipeline(steps=steps, root=str(tmp_path / "root"), lock_timeout_s=1.0)
    # Checks: before example_gen, before its commit, before trainer, before its commit (lost).
    lock = LockLostAfter(4)
    monkeypatch.setattr(runner, "run_lock", lambda *a: contextlib.nullcontext(lock))
    result = runner.run_pipeline(pipeline)
    assert result.exit_code == 1
    assert {n: s["state"] for n, s in result.summary["steps"].items()} == {
        "example_gen": "ran",
        "trainer": "failed",
        "pusher": "skipped",
    }
    assert "lost the run lock" in result.summary["message"]
    store = open_store(pipeline.root)
    [trainer] = store.executions_of("trainer")
    assert trainer.last_known_state == RUNNING  # nothing written after the lock was gone
    assert store.artifacts_of_type("Model") == []
    assert not os.listdir(tmp_path / "root" / "trainer" / "model")  # staging removed

    monkeypatch.undo()
    again = runner.run_pipeline(pipeline)
    assert again.exit_code == 0
    assert {n: s["state"] for n, s in again.summary["steps"].items()} == {
        "example_gen": "cached",
        "trainer": "ran",
        "pusher": "ran",
    }
    assert open_store(pipeline.root).executions_of("trainer")[1].last_known_state == FAILED
