"""The pipeline's record in ML Metadata: SQLite at `<pipeline_root>/metadata.sqlite` (the
default), or a shared MySQL / MariaDB database (`pipeline.core.store_settings.MySqlSettings`).

What is recorded, so that the stock ml-metadata client can read it:
- contexts: one `pipeline` context and one `pipeline_run` context per run id. The pipeline
  context is named "mnist" in a SQLite store (one file per pipeline root) and after the
  pipeline's identity in a shared one (`store_settings.pipeline_identity`); every execution is
  associated with it and every artifact attributed to it, and every query below reads only
  this pipeline's, so pipelines sharing one database never see each other's executions,
  caches or baselines;
- executions: one per step per run, typed by step name, with `last_known_state`
  RUNNING -> COMPLETE / FAILED / CACHED, and custom properties `run_id`, `cache_key`,
  `outcome` (JSON), `error`;
- artifacts: typed (Examples, Model, ...), `uri` = final committed directory, state LIVE only once
  the producing step has completed, custom properties from the step plus `content_digest`;
- events: INPUT and OUTPUT events keyed by the step's input/output names (the lineage).

Property values: int/bool -> int_value, float -> double_value, str -> string_value,
lists and dicts -> string_value holding JSON.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from ml_metadata import errors as mlmd_errors
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.core.errors import StoreSettingsError
from pipeline.core.step import Artifact
from pipeline.core.store_backup import check_store
from pipeline.core.store_retry import RetryingStore
from pipeline.core.store_settings import EMBEDDED_PIPELINE_NAME, MySqlSettings, pipeline_identity

PIPELINE_CONTEXT_TYPE = "pipeline"
RUN_CONTEXT_TYPE = "pipeline_run"
PIPELINE_NAME = EMBEDDED_PIPELINE_NAME
# Type names are written into ML Metadata filter queries; they come from code, never from users.
_QUERY_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")

RUNNING = mlmd.Execution.RUNNING
COMPLETE = mlmd.Execution.COMPLETE
FAILED = mlmd.Execution.FAILED
CACHED = mlmd.Execution.CACHED


def _set_value(value_proto, value: Any) -> None:
    if isinstance(value, bool):
        value_proto.int_value = int(value)
    elif isinstance(value, int):
        value_proto.int_value = value
    elif isinstance(value, float):
        value_proto.double_value = value
    elif isinstance(value, str):
        value_proto.string_value = value
    else:
        value_proto.string_value = json.dumps(value, sort_keys=True, default=str)


def _get_value(value_proto) -> Any:
    kind = value_proto.WhichOneof("value")
    if kind == "int_value":
        return value_proto.int_value
    if kind == "double_value":
        return value_proto.double_value
    if kind == "string_value":
        text = value_proto.string_value
        if text[:1] in ("{", "["):
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text
    return None


def properties_of(proto) -> dict:
    """The custom properties of an MLMD artifact, execution or context as a plain dict."""
    return {k: _get_value(v) for k, v in proto.custom_properties.items()}


def _events(store, event_type: int, keyed_ids: dict) -> list:
    """(artifact, event) pairs for key -> artifact id; one event per artifact.

    MLMD allows one event of a type per (artifact, execution): an artifact that fills two
    inputs (the candidate that is also the serving model) gets one event whose path lists
    both keys.
    """
    by_artifact: dict = {}
    for key, artifact_id in keyed_ids.items():
        by_artifact.setdefault(artifact_id, []).append(key)
    pairs = []
    for artifact_id, keys in by_artifact.items():
        [artifact] = store.get_artifacts_by_id([artifact_id])
        event = mlmd.Event(type=event_type)
        for key in keys:
            event.path.steps.add().key = key
        pairs.append((artifact, event))
    return pairs


@dataclass(frozen=True)
class RecordedArtifact:
    """An artifact as read back from the store."""

    id: int
    type_name: str
    uri: str
    state: int
    properties: dict


def to_step_artifact(recorded: RecordedArtifact) -> Artifact:
    """Converts an artifact read from the store into the `Artifact` an executor receives."""
    return Artifact(
        uri=recorded.uri, type_name=recorded.type_name, properties=dict(recorded.properties), id=recorded.id
    )


def _safe(name: str) -> str:
    if not _QUERY_SAFE.match(name):
        raise ValueError(f"type name {name!r} cannot be used in a metadata query")
    return name


def _mysql_config(settings: MySqlSettings) -> mlmd.ConnectionConfig:
    config = mlmd.ConnectionConfig()
    config.mysql.host = settings.host
    config.mysql.port = settings.port
    config.mysql.database = settings.database
    config.mysql.user = settings.user
    config.mysql.password = settings.password
    config.mysql.skip_db_creation = settings.skip_db_creation
    return config


class MetadataStore:
    """A thin, typed wrapper over `ml_metadata.MetadataStore` for one pipeline's needs."""

    def __init__(self, location: str | MySqlSettings, pipeline_name: str = PIPELINE_NAME):
        """Opens the store and this pipeline's context in it (creating either when missing).

        location: the path of a SQLite file, or the settings of a MySQL / MariaDB database.
        pipeline_name: the pipeline context that scopes every query (see the module docstring).
        Raises StoreDamagedError, before ml-metadata touches a SQLite file, when it fails
        SQLite's integrity check or is missing while its backup exists (see
        `store_backup.check_store`); StoreSettingsError naming host, port and database when a
        MySQL store cannot be reached or opened.
        """
        if isinstance(location, MySqlSettings):
            from pipeline.core.mysql_session import check_reachable  # noqa: PLC0415  pymysql loads only for a MySQL store (not for the embedded one, nor the report)

            check_reachable(location)
            self.path: str | None = None
            self.where = location.describe()
            try:
                store = metadata_store.MetadataStore(_mysql_config(location))
            except Exception as e:  # noqa: BLE001 - the client raises bare RuntimeErrors
                raise StoreSettingsError(
                    f"metadata store {self.where}: ML Metadata cannot open it "
                    f"({location.scrub(' '.join(str(e).split()))[:200]}); the account must use "
                    "mysql_native_password, the only login ML Metadata's client knows"
                ) from None
        else:
            check_store(location)
            config = mlmd.ConnectionConfig()
            config.sqlite.filename_uri = location
            config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
            self.path = location
            self.where = location
            store = metadata_store.MetadataStore(config)
        self.store = RetryingStore(store, self.where)
        self.pipeline_name = pipeline_name
        self._type_ids: dict = {}
        self.pipeline_context = self._context(PIPELINE_CONTEXT_TYPE, pipeline_name)

    # ---- types and contexts -------------------------------------------------------------
    def _type_id(self, kind: str, name: str, put, proto) -> int:
        key = (kind, name)
        if key not in self._type_ids:
            try:
                self._type_ids[key] = put(proto(name=name))
            except mlmd_errors.AlreadyExistsError:  # another pipeline created it just now
                self._type_ids[key] = put(proto(name=name))
        return self._type_ids[key]

    def _artifact_type_id(self, name: str) -> int:
        return self._type_id("artifact", name, self.store.put_artifact_type, mlmd.ArtifactType)

    def _execution_type_id(self, name: str) -> int:
        return self._type_id("execution", name, self.store.put_execution_type, mlmd.ExecutionType)

    def _context(self, type_name: str, name: str, properties: dict | None = None) -> mlmd.Context:
        existing = self.store.get_context_by_type_and_name(type_name, name)
        if existing is not None:
            return existing
        type_id = self._type_id("context", type_name, self.store.put_context_type, mlmd.ContextType)
        context = mlmd.Context(type_id=type_id, name=name)
        for k, v in (properties or {}).items():
            _set_value(context.custom_properties[k], v)
        try:
            [context.id] = self.store.put_contexts([context])
        except mlmd_errors.AlreadyExistsError:  # a command of the same pipeline made it just now
            return self.store.get_context_by_type_and_name(type_name, name)
        return context

    def run_contexts(self, run_id: str, run_properties: dict) -> list:
        """Returns the pipeline context and this run's context, creating the latter when missing."""
        return [self.pipeline_context, self._context(RUN_CONTEXT_TYPE, run_id, run_properties)]

    def _in_pipeline(self, condition: str) -> metadata_store.ListOptions:
        return metadata_store.ListOptions(
            filter_query=f"contexts_a.id = {int(self.pipeline_context.id)} AND {condition}"
        )

    # ---- executions ---------------------------------------------------------------------
    def start_execution(self, step: str, run_id: str, cache_key: str, contexts: list, inputs: dict) -> int:
        """Records a RUNNING execution of `step` with INPUT events; returns its id.

        inputs: input key -> artifact id (ids of artifacts already in the store).
        """
        execution = mlmd.Execution(type_id=self._execution_type_id(step), last_known_state=RUNNING)
        _set_value(execution.custom_properties["run_id"], run_id)
        _set_value(execution.custom_properties["cache_key"], cache_key)
        artifacts_and_events = _events(self.store, mlmd.Event.INPUT, inputs)
        execution_id, _, _ = self.store.put_execution(execution, artifacts_and_events, contexts)
        return execution_id

    def complete_execution(self, execution_id: int, outputs: dict, outcome: dict, contexts: list) -> dict:
        """Atomically marks the execution COMPLETE and records its outputs as LIVE artifacts.

        outputs: output key -> (type_name, uri, properties). Returns output key -> artifact id.
        """
        [execution] = self.store.get_executions_by_id([execution_id])
        execution.last_known_state = COMPLETE
        _set_value(execution.custom_properties["outcome"], outcome)
        artifacts_and_events = []
        keys = []
        for key, (type_name, uri, properties) in outputs.items():
            artifact = mlmd.Artifact(
                type_id=self._artifact_type_id(type_name), uri=uri, state=mlmd.Artifact.LIVE
            )
            for k, v in properties.items():
                _set_value(artifact.custom_properties[k], v)
            event = mlmd.Event(type=mlmd.Event.OUTPUT)
            event.path.steps.add().key = key
            artifacts_and_events.append((artifact, event))
            keys.append(key)
        _, artifact_ids, _ = self.store.put_execution(execution, artifacts_and_events, contexts)
        return dict(zip(keys, artifact_ids))

    def record_cached(
        self,
        step: str,
        run_id: str,
        cache_key: str,
        contexts: list,
        inputs: dict,
        outputs: dict,
        outcome: dict,
    ) -> int:
        """Records a CACHED execution linking existing output artifacts; returns its id.

        inputs / outputs: key -> artifact id.
        """
        execution = mlmd.Execution(type_id=self._execution_type_id(step), last_known_state=CACHED)
        _set_value(execution.custom_properties["run_id"], run_id)
        _set_value(execution.custom_properties["cache_key"], cache_key)
        _set_value(execution.custom_properties["outcome"], outcome)
        pairs = _events(self.store, mlmd.Event.INPUT, inputs) + _events(
            self.store, mlmd.Event.OUTPUT, outputs
        )
        execution_id, _, _ = self.store.put_execution(execution, pairs, contexts)
        return execution_id

    def fail_execution(self, execution_id: int, error: str) -> None:
        """Marks the execution FAILED with `error`; its outputs were never recorded."""
        [execution] = self.store.get_executions_by_id([execution_id])
        execution.last_known_state = FAILED
        _set_value(execution.custom_properties["error"], error)
        self.store.put_executions([execution])

    def abandon_running_executions(self) -> list:
        """Marks every RUNNING execution FAILED ("abandoned"); returns their ids.

        Called under the pipeline lock, when no other run of this pipeline can be active: a
        RUNNING execution of this pipeline then belongs to a process that was killed. Other
        pipelines' executions in a shared store are not touched.
        """
        abandoned = []
        for execution in self.store.get_executions(
            list_options=self._in_pipeline("last_known_state = RUNNING")
        ):
            execution.last_known_state = FAILED
            _set_value(execution.custom_properties["error"], "abandoned: its process ended mid-step")
            abandoned.append(execution)
        if abandoned:
            self.store.put_executions(abandoned)
        return [e.id for e in abandoned]

    def executions_of(self, step: str) -> list:
        """All executions of `step` in this pipeline, newest first."""
        executions = self.store.get_executions(list_options=self._in_pipeline(f"type = '{_safe(step)}'"))
        return sorted(executions, key=lambda e: e.id, reverse=True)

    def run_of(self, execution_id: int) -> str | None:
        """The run id recorded on an execution of this pipeline; None when there is no such
        execution in this pipeline."""
        executions = self.store.get_executions_by_id([execution_id])
        if not executions or not self._execution_in_this_pipeline(execution_id):
            return None
        run_id = properties_of(executions[0]).get("run_id")
        return str(run_id) if run_id is not None else None

    def _execution_in_this_pipeline(self, execution_id: int) -> bool:
        contexts = self.store.get_contexts_by_execution(execution_id)
        return any(c.id == self.pipeline_context.id for c in contexts)

    def execution_outcome(self, execution) -> dict:
        """The JSON outcome recorded on an execution ({} when none)."""
        return properties_of(execution).get("outcome") or {}

    # ---- artifacts and events -----------------------------------------------------------
    def put_external_artifact(self, type_name: str, uri: str, properties: dict) -> int:
        """Registers an input that no step produced (raw data) in this pipeline; reuses an
        identical record of this pipeline."""
        wanted = json.loads(json.dumps(properties))
        for artifact in self.store.get_artifacts_by_uri(uri):
            if (
                artifact.type_id == self._artifact_type_id(type_name)
                and properties_of(artifact) == wanted
                and self._in_this_pipeline(artifact.id)
            ):
                return artifact.id
        artifact = mlmd.Artifact(type_id=self._artifact_type_id(type_name), uri=uri, state=mlmd.Artifact.LIVE)
        for k, v in properties.items():
            _set_value(artifact.custom_properties[k], v)
        # One transaction: the artifact never exists outside its pipeline.
        _, [artifact_id], _ = self.store.put_lineage_subgraph([], [artifact], [self.pipeline_context], [])
        return artifact_id

    def _in_this_pipeline(self, artifact_id: int) -> bool:
        try:
            contexts = self.store.get_contexts_by_artifact(artifact_id)
        except mlmd_errors.NotFoundError:  # attributed to no context (stores of before)
            return False
        return any(c.id == self.pipeline_context.id for c in contexts)

    def artifact(self, artifact_id: int) -> RecordedArtifact:
        """Reads one artifact by id."""
        [artifact] = self.store.get_artifacts_by_id([artifact_id])
        [artifact_type] = self.store.get_artifact_types_by_id([artifact.type_id])
        return RecordedArtifact(
            artifact.id, artifact_type.name, artifact.uri, artifact.state, properties_of(artifact)
        )

    def artifacts_of_type(self, type_name: str) -> list:
        """LIVE artifacts of `type_name` in this pipeline, newest first."""
        artifacts = self.store.get_artifacts(
            list_options=self._in_pipeline(f"type = '{_safe(type_name)}' AND state = LIVE")
        )
        return [
            RecordedArtifact(a.id, type_name, a.uri, a.state, properties_of(a))
            for a in sorted(artifacts, key=lambda a: a.id, reverse=True)
        ]

    def events(self, execution_id: int, event_type: int) -> dict:
        """key -> artifact id of the execution's INPUT or OUTPUT events."""
        result = {}
        for event in self.store.get_events_by_execution_ids([execution_id]):
            if event.type == event_type:
                for step in event.path.steps:
                    result[step.key] = event.artifact_id
        return result

    def outputs_of(self, execution_id: int) -> dict:
        """Output key -> artifact id of an execution."""
        return self.events(execution_id, mlmd.Event.OUTPUT)

    def inputs_of(self, execution_id: int) -> dict:
        """Input key -> artifact id of an execution."""
        return self.events(execution_id, mlmd.Event.INPUT)

    def producer_of(self, artifact_id: int) -> int | None:
        """Id of the execution that produced the artifact (first OUTPUT event), or None."""
        for event in self.store.get_events_by_artifact_ids([artifact_id]):
            if event.type == mlmd.Event.OUTPUT:
                return event.execution_id
        return None


STORE_FILE = "metadata.sqlite"


def store_path(pipeline_root: str) -> str:
    """Where the SQLite metadata store of a pipeline root lives."""
    return os.path.join(pipeline_root, STORE_FILE)


def open_store(pipeline_root: str, settings: MySqlSettings | None = None) -> MetadataStore:
    """Opens the store of a pipeline root, creating the root when missing: its SQLite file
    (settings None), or its pipeline in the MySQL / MariaDB database of `settings` (no file is
    created then). Raises as `MetadataStore`."""
    os.makedirs(pipeline_root, exist_ok=True)
    if settings is None:
        return MetadataStore(store_path(pipeline_root))
    return MetadataStore(settings, pipeline_identity(settings, pipeline_root))
