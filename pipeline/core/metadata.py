"""The pipeline's record in ML Metadata (SQLite at `<pipeline_root>/metadata.sqlite`).

What is recorded, so that the stock ml-metadata client can read it:
- contexts: one `pipeline` context (name "mnist") and one `pipeline_run` context per run id;
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
from dataclasses import dataclass
from typing import Any, Optional

from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from pipeline.core.step import Artifact
from pipeline.core.store_backup import check_store

PIPELINE_CONTEXT_TYPE = "pipeline"
RUN_CONTEXT_TYPE = "pipeline_run"
PIPELINE_NAME = "mnist"

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
    return Artifact(uri=recorded.uri, type_name=recorded.type_name,
                    properties=dict(recorded.properties), id=recorded.id)


class MetadataStore:
    """A thin, typed wrapper over `ml_metadata.MetadataStore` for the pipeline's needs."""

    def __init__(self, sqlite_path: str):
        """Opens (creating when missing) the SQLite store at `sqlite_path`.

        Raises StoreDamagedError, before ml-metadata touches the file, when it fails SQLite's
        integrity check or is missing while its backup exists (see `store_backup.check_store`).
        """
        check_store(sqlite_path)
        config = mlmd.ConnectionConfig()
        config.sqlite.filename_uri = sqlite_path
        config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
        self.path = sqlite_path
        self.store = metadata_store.MetadataStore(config)
        self._type_ids: dict = {}

    # ---- types and contexts -------------------------------------------------------------
    def _artifact_type_id(self, name: str) -> int:
        key = ("artifact", name)
        if key not in self._type_ids:
            self._type_ids[key] = self.store.put_artifact_type(mlmd.ArtifactType(name=name))
        return self._type_ids[key]

    def _execution_type_id(self, name: str) -> int:
        key = ("execution", name)
        if key not in self._type_ids:
            self._type_ids[key] = self.store.put_execution_type(mlmd.ExecutionType(name=name))
        return self._type_ids[key]

    def _context(self, type_name: str, name: str, properties: Optional[dict] = None) -> mlmd.Context:
        existing = self.store.get_context_by_type_and_name(type_name, name)
        if existing is not None:
            return existing
        key = ("context", type_name)
        if key not in self._type_ids:
            self._type_ids[key] = self.store.put_context_type(mlmd.ContextType(name=type_name))
        context = mlmd.Context(type_id=self._type_ids[key], name=name)
        for k, v in (properties or {}).items():
            _set_value(context.custom_properties[k], v)
        [context.id] = self.store.put_contexts([context])
        return context

    def run_contexts(self, run_id: str, run_properties: dict) -> list:
        """Returns the pipeline context and this run's context, creating them when missing."""
        return [self._context(PIPELINE_CONTEXT_TYPE, PIPELINE_NAME),
                self._context(RUN_CONTEXT_TYPE, run_id, run_properties)]

    # ---- executions ---------------------------------------------------------------------
    def start_execution(self, step: str, run_id: str, cache_key: str, contexts: list,
                        inputs: dict) -> int:
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
            artifact = mlmd.Artifact(type_id=self._artifact_type_id(type_name), uri=uri,
                                     state=mlmd.Artifact.LIVE)
            for k, v in properties.items():
                _set_value(artifact.custom_properties[k], v)
            event = mlmd.Event(type=mlmd.Event.OUTPUT)
            event.path.steps.add().key = key
            artifacts_and_events.append((artifact, event))
            keys.append(key)
        _, artifact_ids, _ = self.store.put_execution(execution, artifacts_and_events, contexts)
        return dict(zip(keys, artifact_ids))

    def record_cached(self, step: str, run_id: str, cache_key: str, contexts: list,
                      inputs: dict, outputs: dict, outcome: dict) -> int:
        """Records a CACHED execution linking existing output artifacts; returns its id.

        inputs / outputs: key -> artifact id.
        """
        execution = mlmd.Execution(type_id=self._execution_type_id(step), last_known_state=CACHED)
        _set_value(execution.custom_properties["run_id"], run_id)
        _set_value(execution.custom_properties["cache_key"], cache_key)
        _set_value(execution.custom_properties["outcome"], outcome)
        pairs = (_events(self.store, mlmd.Event.INPUT, inputs)
                 + _events(self.store, mlmd.Event.OUTPUT, outputs))
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

        Called under the pipeline lock, when no other run can be active: a RUNNING execution
        then belongs to a process that was killed.
        """
        abandoned = []
        for execution in self.store.get_executions():
            if execution.last_known_state == RUNNING:
                execution.last_known_state = FAILED
                _set_value(execution.custom_properties["error"], "abandoned: its process ended mid-step")
                abandoned.append(execution)
        if abandoned:
            self.store.put_executions(abandoned)
        return [e.id for e in abandoned]

    def executions_of(self, step: str) -> list:
        """All executions of `step`, newest first."""
        try:
            executions = self.store.get_executions_by_type(step)
        except Exception:  # noqa: BLE001 - the type does not exist yet
            return []
        return sorted(executions, key=lambda e: e.id, reverse=True)

    def execution_outcome(self, execution) -> dict:
        """The JSON outcome recorded on an execution ({} when none)."""
        return properties_of(execution).get("outcome") or {}

    # ---- artifacts and events -----------------------------------------------------------
    def put_external_artifact(self, type_name: str, uri: str, properties: dict) -> int:
        """Registers an input that no step produced (raw data); reuses an identical record."""
        for artifact in self.store.get_artifacts_by_uri(uri):
            if (artifact.type_id == self._artifact_type_id(type_name)
                    and properties_of(artifact) == json.loads(json.dumps(properties))):
                return artifact.id
        artifact = mlmd.Artifact(type_id=self._artifact_type_id(type_name), uri=uri,
                                 state=mlmd.Artifact.LIVE)
        for k, v in properties.items():
            _set_value(artifact.custom_properties[k], v)
        [artifact_id] = self.store.put_artifacts([artifact])
        return artifact_id

    def artifact(self, artifact_id: int) -> RecordedArtifact:
        """Reads one artifact by id."""
        [artifact] = self.store.get_artifacts_by_id([artifact_id])
        [artifact_type] = self.store.get_artifact_types_by_id([artifact.type_id])
        return RecordedArtifact(artifact.id, artifact_type.name, artifact.uri, artifact.state,
                                properties_of(artifact))

    def artifacts_of_type(self, type_name: str) -> list:
        """LIVE artifacts of `type_name`, newest first."""
        try:
            artifacts = self.store.get_artifacts_by_type(type_name)
        except Exception:  # noqa: BLE001 - the type does not exist yet
            return []
        return [self.artifact(a.id) for a in sorted(artifacts, key=lambda a: a.id, reverse=True)
                if a.state == mlmd.Artifact.LIVE]

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

    def producer_of(self, artifact_id: int) -> Optional[int]:
        """Id of the execution that produced the artifact (first OUTPUT event), or None."""
        for event in self.store.get_events_by_artifact_ids([artifact_id]):
            if event.type == mlmd.Event.OUTPUT:
                return event.execution_id
        return None


STORE_FILE = "metadata.sqlite"


def store_path(pipeline_root: str) -> str:
    """Where the metadata store of a pipeline root lives."""
    return os.path.join(pipeline_root, STORE_FILE)


def open_store(pipeline_root: str) -> MetadataStore:
    """Opens the store of a pipeline root, creating the root when missing; StoreDamagedError
    when the store's file is damaged (see `MetadataStore`)."""
    os.makedirs(pipeline_root, exist_ok=True)
    return MetadataStore(store_path(pipeline_root))
