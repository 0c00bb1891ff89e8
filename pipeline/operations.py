"""Day-to-day operations outside a pipeline run: rollback, run history, serving status.

Each reads or writes the same metadata store the runner uses; rollback takes the pipeline
root's lock, so it never races a scheduled run.
"""

from __future__ import annotations

import glob
import json
import os
from datetime import datetime, timezone

from pipeline.config import PipelineConfig
from pipeline.errors import ConfigError, ModelIntegrityError
from pipeline.lock import exclusive_lock
from pipeline.metadata import open_store
from pipeline.resolvers import latest_pushed_model


def serving_versions(serving_dir: str) -> list:
    """Integer version folders present in `serving_dir`, ascending."""
    if not os.path.isdir(serving_dir):
        return []
    return sorted(int(n) for n in os.listdir(serving_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(serving_dir, n)))


def rollback(config: PipelineConfig, to_version: int | None = None) -> tuple:
    """Re-publishes serving version `to_version` (default: the one before the newest) as a new
    newest version, and records it in ML Metadata as a push of the same model.

    Returns (new_version, source_version). Raises ConfigError when there is nothing to roll
    back to, ModelIntegrityError when that version has no push record here or its files no
    longer match the digest recorded for its model, PushError when publishing fails (nothing
    is published then).
    """
    from components.pusher.rollback import rollback as republish

    serving_dir = config.serving_dir
    with exclusive_lock(os.path.join(config.pipeline_root, ".pipeline.lock"), config.lock_timeout_s):
        versions = serving_versions(serving_dir)
        if to_version is None:
            if len(versions) < 2:
                raise ConfigError(f"rollback: {serving_dir} holds {len(versions)} version(s); "
                                  "need at least two to roll back")
            to_version = versions[-2]
        elif to_version not in versions:
            raise ConfigError(f"rollback: version {to_version} does not exist in {serving_dir} "
                              f"(versions: {versions})")
        store = open_store(config.pipeline_root)
        source = next((a for a in store.artifacts_of_type("PushedModel")
                       if a.properties.get("pushed") == 1 and a.properties.get("version") == to_version
                       and a.properties.get("serving_dir", serving_dir) == serving_dir), None)
        new_version = republish(serving_dir, to_version,
                                expected_digest=_recorded_digest(store, source, to_version, serving_dir))
        run_id = "rollback-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        contexts = store.run_contexts(run_id, {"pipeline_root": config.pipeline_root})
        inputs = {"pushed_model": source.id} if source else {}
        execution_id = store.start_execution("rollback", run_id, "", contexts, inputs)
        properties = {"pushed": 1, "version": new_version, "rolled_back_from": to_version,
                      "serving_dir": serving_dir,
                      "model_id": int(source.properties.get("model_id", 0)) if source else 0}
        store.complete_execution(
            execution_id,
            {"pushed_model": ("PushedModel", os.path.join(serving_dir, str(new_version)), properties)},
            {"properties": properties}, contexts)
    return new_version, to_version


def _recorded_digest(store, source, version: int, serving_dir: str) -> str:
    """The export digest of the model that push record `source` published as `version`.

    Raises ModelIntegrityError when there is no such record or it names no model digest: a
    version this pipeline cannot vouch for is never loaded (rollback runs a serving check on it).
    """
    model_id = int(source.properties.get("model_id") or 0) if source is not None else 0
    digest = store.artifact(model_id).properties.get("digest") if model_id else None
    if not isinstance(digest, str) or not digest:
        raise ModelIntegrityError(f"rollback: version {version} in {serving_dir} has no push record with a "
                                  "model digest in this pipeline's metadata; refusing to load an unverified model")
    return digest


def list_runs(config: PipelineConfig) -> list:
    """One dict per past run (oldest first) from the runs' summary files."""
    runs = []
    for path in sorted(glob.glob(os.path.join(config.pipeline_root, "runs", "*", "summary.json"))):
        with open(path) as f:
            summary = json.load(f)
        states = [s["state"] for s in summary.get("steps", {}).values()]
        push = summary.get("push") or {}
        runs.append({
            "run_id": summary["run_id"],
            "status": summary.get("status"),
            "exit_code": summary.get("exit_code"),
            "spans": summary.get("data", {}).get("spans", []),
            "ran": states.count("ran"),
            "cached": states.count("cached"),
            "push": (f"version {push.get('version')}" if push.get("pushed") else
                     f"no ({push.get('reason')})" if push else "-"),
            "message": summary.get("message"),
        })
    return runs


def serving_status(config: PipelineConfig) -> dict:
    """The model serving now and its lineage: version, run, spans, evaluation metrics."""
    store = open_store(config.pipeline_root)
    status = {"serving_dir": config.serving_dir, "versions": serving_versions(config.serving_dir)}
    pushes = [a for a in store.artifacts_of_type("PushedModel") if a.properties.get("pushed") == 1]
    if not pushes:
        status["serving"] = None
        return status
    latest = pushes[0]
    model = latest_pushed_model(store)
    lineage = {"version": latest.properties.get("version"), "model_id": model.id if model else None,
               "model_uri": model.uri if model else None,
               "rolled_back_from": latest.properties.get("rolled_back_from")}
    trainer_execution = store.producer_of(model.id) if model else None
    if trainer_execution:
        [execution] = store.store.get_executions_by_id([trainer_execution])
        lineage["trained_in_run"] = execution.custom_properties["run_id"].string_value
        examples_id = store.inputs_of(trainer_execution).get("examples")
        if examples_id:
            lineage["spans"] = store.artifact(examples_id).properties.get("spans")
        for evaluation in store.executions_of("evaluator"):
            if store.inputs_of(evaluation.id).get("model") == model.id:
                props = store.execution_outcome(evaluation).get("properties", {})
                lineage["blessed"] = props.get("blessed")
                overall = (props.get("metrics") or {}).get("candidate", {}).get("overall")
                lineage["metrics"] = overall
                break
    status["serving"] = lineage
    return status
