"""Day-to-day operations outside a pipeline run: rollback, run history, serving status.

Each reads or writes the same metadata store the runner uses; rollback takes the pipeline
root's lock, so it never races a scheduled run. The serving folder's layout, lock and staged
commit are the PushedModel format's (`pipeline.formats.pushed_model`, shared with the pusher);
which version to re-publish and whether it may be loaded is decided here, since only this
operation rolls back.
"""

from __future__ import annotations

import functools
import glob
import json
import os
from datetime import datetime, timezone
from typing import Optional

from pipeline.config import PipelineConfig
from pipeline.core.digest import directory_digest
from pipeline.core.errors import ConfigError, ModelIntegrityError, PushError
from pipeline.core.lock import exclusive_lock, pipeline_lock_path
from pipeline.core.metadata import open_store
from pipeline.formats import blessing as blessing_format, examples as examples_format
from pipeline.formats import model as model_format, pushed_model as pushed_format

# The headline metrics `status` shows of the serving model's evaluation.
STATUS_METRICS = ("example_count", "accuracy", "log_loss")


def republish(serving_dir: str, to_version: Optional[int] = None,
              verify_fn: Optional[pushed_format.VerifyFn] = None,
              lock_timeout_s: float = pushed_format.LOCK_TIMEOUT_S,
              expected_digest: Optional[str] = None) -> int:
    """Re-publishes serving version `to_version` (default: the one before the newest) as a new
    newest version of `serving_dir`; TF Serving serves the highest, so this rolls back.

    The source is chosen under the serving folder's lock (a concurrent push cannot shift "the
    one before the newest") and goes through the same staging, digest check and atomic rename
    as a push; published versions are never modified or deleted.
    verify_fn: serving check of the staged copy; default loads it and calls both signatures
        (serving_images on blank images).
    expected_digest: the digest recorded for the model of that version when it was exported;
        the version's files must match it before anything is copied or loaded (None skips this,
        for callers that verified the source themselves).
    Returns the new version. Raises ConfigError for a bad choice of version (or the newest),
    ModelIntegrityError when the version's files do not match `expected_digest`, PushError when
    the copy cannot be made or verified (nothing is published then).
    """
    if not os.path.isdir(serving_dir):
        raise ConfigError(f"rollback: serving dir {serving_dir} does not exist")
    with pushed_format.locked_versions(serving_dir, lock_timeout_s, "rollback") as versions:
        source_version = pushed_format.rollback_version(versions, to_version, serving_dir)
        if source_version == versions[-1]:
            raise ConfigError(f"rollback: version {source_version} is already the newest in {serving_dir}")
        source = os.path.join(serving_dir, str(source_version))
        try:
            source_digest = directory_digest(source)
        except (OSError, ValueError) as e:
            raise PushError(f"rollback: cannot read version {source_version} in {serving_dir}: {e}") from e
        # Models are programs: a version altered since it was published must not be loaded.
        if expected_digest is not None and source_digest != expected_digest:
            raise ModelIntegrityError(
                f"rollback: version {source_version} in {serving_dir} has digest {source_digest[:12]}..., "
                f"not the recorded {expected_digest[:12]}...; its files changed after publishing")
        if verify_fn is None:  # no examples at hand: serving_images must answer blank images
            verify_fn = functools.partial(model_format.check_serving, records=[])
        try:
            return pushed_format.stage_and_commit(source, serving_dir, versions[-1] + 1, source_digest,
                                                  verify_fn)
        except PushError as e:
            raise PushError(f"rollback to version {source_version}: {e}") from e


def rollback(config: PipelineConfig, to_version: Optional[int] = None) -> tuple:
    """Re-publishes serving version `to_version` (default: the one before the newest) as a new
    newest version (see `republish`), and records it in ML Metadata as a push of the same model.

    Returns (new_version, source_version). Raises ConfigError when there is nothing to roll
    back to, ModelIntegrityError when that version has no push record here or its files no
    longer match the digest recorded for its model, PushError when publishing fails (nothing
    is published then).
    """
    serving_dir = config.serving_dir
    with exclusive_lock(pipeline_lock_path(config.pipeline_root), config.lock_timeout_s):
        source_version = pushed_format.rollback_version(pushed_format.list_versions(serving_dir),
                                                        to_version, serving_dir)
        store = open_store(config.pipeline_root)
        source = pushed_format.find_push(store, serving_dir, source_version)
        new_version = republish(serving_dir, source_version,
                                expected_digest=_recorded_digest(store, source, source_version, serving_dir))
        run_id = "rollback-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        contexts = store.run_contexts(run_id, {"pipeline_root": config.pipeline_root})
        execution_id = store.start_execution("rollback", run_id, "", contexts, {"pushed_model": source.id})
        properties = {pushed_format.PUSHED: 1, pushed_format.VERSION: new_version,
                      pushed_format.ROLLED_BACK_FROM: source_version, pushed_format.SERVING_DIR: serving_dir,
                      pushed_format.MODEL_ID: pushed_format.pushed_model_id(source.properties)}
        store.complete_execution(
            execution_id,
            {"pushed_model": (pushed_format.ARTIFACT_TYPE, os.path.join(serving_dir, str(new_version)),
                              properties)},
            {"properties": properties}, contexts)
    return new_version, source_version


def _recorded_digest(store, source, version: int, serving_dir: str) -> str:
    """The export digest of the model that push record `source` published as `version`.

    Raises ModelIntegrityError when there is no such record or it names no model digest: a
    version this pipeline cannot vouch for is never loaded (rollback runs a serving check on it).
    """
    model_id = pushed_format.pushed_model_id(source.properties) if source is not None else 0
    digest = store.artifact(model_id).properties.get(model_format.DIGEST) if model_id else None
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
    """The model serving now and its lineage: version, run, spans, its blessing and metrics."""
    store = open_store(config.pipeline_root)
    status = {"serving_dir": config.serving_dir, "versions": pushed_format.list_versions(config.serving_dir)}
    latest = pushed_format.latest_push(store)
    if latest is None:
        status["serving"] = None
        return status
    model = store.artifact(pushed_format.pushed_model_id(latest.properties))
    lineage = {"version": latest.properties.get(pushed_format.VERSION), "model_id": model.id,
               "model_uri": model.uri, "rolled_back_from": latest.properties.get(pushed_format.ROLLED_BACK_FROM)}
    trainer_execution = store.producer_of(model.id)
    if trainer_execution:
        [execution] = store.store.get_executions_by_id([trainer_execution])
        lineage["trained_in_run"] = execution.custom_properties["run_id"].string_value
        examples_id = store.inputs_of(trainer_execution).get("examples")
        if examples_id:
            lineage["spans"] = store.artifact(examples_id).properties.get(examples_format.SPANS)
        lineage.update(_evaluation_of(store, model.id))
    status["serving"] = lineage
    return status


def _evaluation_of(store, model_id: int) -> dict:
    """{"blessed", "metrics"} from the blessing of the newest evaluation of model `model_id`
    ({"blessed": None, "blessing_error"} when that blessing cannot be read; {} when none)."""
    for evaluation in store.executions_of("evaluator"):
        blessing_id = store.outputs_of(evaluation.id).get("blessing")
        if store.inputs_of(evaluation.id).get("model") != model_id or not blessing_id:
            continue
        blessing = store.artifact(blessing_id)
        try:
            record = blessing_format.read_blessing(blessing.uri, recorded=blessing.properties)
        except blessing_format.BlessingError as e:
            return {"blessed": None, "blessing_error": str(e)}
        overall = ((record.metrics or {}).get("candidate") or {}).get("overall") or {}
        return {"blessed": int(record.blessed),
                "metrics": {name: overall[name] for name in STATUS_METRICS if name in overall}}
    return {}
