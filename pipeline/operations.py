"""Day-to-day operations outside a pipeline run: rollback, run history, serving status,
restoring the metadata store from its backup.

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
import logging
import os
from datetime import UTC, datetime

from pipeline.config import PipelineConfig
from pipeline.core.artifacts import SUMMARY_FILE, runs_dir
from pipeline.core.digest import directory_digest
from pipeline.core.errors import ConfigError, ModelIntegrityError, PushError
from pipeline.core.lock import exclusive_lock, pipeline_lock_path, run_lock
from pipeline.core.metadata import open_store, store_path
from pipeline.core.store_backup import keep_backup, restore_store
from pipeline.formats import blessing as blessing_format
from pipeline.formats import model as model_format
from pipeline.formats import pushed_model as pushed_format
from pipeline.metadata_settings import store_settings
from pipeline.resolvers import training_spans

logger = logging.getLogger(__name__)

# The headline metrics `status` shows of the serving model's evaluation.
STATUS_METRICS = ("example_count", "accuracy", "log_loss")
# A restore is done by hand: it should say at once that a run is active, not wait for it.
RESTORE_LOCK_TIMEOUT_S = 3.0


def republish(
    serving_dir: str,
    to_version: int | None = None,
    verify_fn: pushed_format.VerifyFn | None = None,
    lock_timeout_s: float = pushed_format.LOCK_TIMEOUT_S,
    expected_digest: str | None = None,
    record: dict | None = None,
) -> int:
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
    record: `pushed_model.version_record` of this rollback, written beside the new version before
        it appears (None writes none).
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
                f"not the recorded {expected_digest[:12]}...; its files changed after publishing"
            )
        if verify_fn is None:  # no examples at hand: serving_images must answer blank images
            verify_fn = functools.partial(model_format.check_serving, records=[])
        try:
            return pushed_format.stage_and_commit(
                source, serving_dir, versions[-1] + 1, source_digest, verify_fn, record
            )
        except PushError as e:
            raise PushError(f"rollback to version {source_version}: {e}") from e


def rollback(config: PipelineConfig, to_version: int | None = None) -> tuple:
    """Re-publishes serving version `to_version` (default: the one before the newest) as a new
    newest version (see `republish`), and records it in ML Metadata as a push of the same model.

    First the newest version is reconciled with the store (`recover_interrupted_publish`). When
    it was an interrupted rollback to `to_version` (or to any version, when none is named: a
    rerun of a killed `rollback`), it is recorded and nothing is published again.
    Returns (new_version, source_version). Raises ConfigError when there is nothing to roll
    back to, ModelIntegrityError when that version has no push record here or its files no
    longer match the digest recorded for its model, PushError when publishing fails (nothing
    is published then).
    """
    serving_dir = config.serving_dir
    settings = store_settings(config)
    with run_lock(config.pipeline_root, config.lock_timeout_s, settings):
        store = open_store(config.pipeline_root, settings)
        recovered = recover_interrupted_publish(store, config)
        rolled_back_from = (recovered or {}).get(pushed_format.ROLLED_BACK_FROM)
        if rolled_back_from is not None and to_version in (None, rolled_back_from):
            logger.warning(
                "already serving (version %d, recovered from an interrupted rollback to version %d); "
                "not publishing again",
                recovered[pushed_format.VERSION],
                rolled_back_from,
            )
            return recovered[pushed_format.VERSION], rolled_back_from
        source_version = pushed_format.rollback_version(
            pushed_format.list_versions(serving_dir), to_version, serving_dir
        )
        source = pushed_format.find_push(store, serving_dir, source_version)
        expected_digest = _recorded_digest(store, source, source_version, serving_dir)
        model_id = pushed_format.pushed_model_id(source.properties)
        run_id = "rollback-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        record = pushed_format.version_record(
            config.pipeline_root,
            run_id,
            model_id,
            store.artifact(model_id).uri,
            expected_digest,
            rolled_back_from=source_version,
        )
        new_version = republish(serving_dir, source_version, expected_digest=expected_digest, record=record)
        _record_publish(
            store,
            config,
            "rollback",
            run_id,
            {"pushed_model": source.id},
            {
                pushed_format.PUSHED: 1,
                pushed_format.VERSION: new_version,
                pushed_format.ROLLED_BACK_FROM: source_version,
                pushed_format.SERVING_DIR: serving_dir,
                pushed_format.MODEL_ID: model_id,
            },
        )
    return new_version, source_version


def recover_interrupted_publish(store, config: PipelineConfig) -> dict | None:
    """Records the newest serving version in the store when a push or rollback of this pipeline
    root published it and was killed before recording it; returns its version record (None
    when there was nothing to recover).

    Believed only when the version's files have the digest the store records for the model its
    record names: a partial or altered version is left unrecorded (and so never loaded as
    trusted by `predict` or `rollback`). Only the newest version is recovered: its record becomes
    the store's newest push, which must be what serves. The caller holds the pipeline root's lock.
    """
    serving_dir = config.serving_dir
    versions = pushed_format.list_versions(serving_dir)
    if not versions or pushed_format.find_push(store, serving_dir, versions[-1]) is not None:
        return None
    newest = versions[-1]
    record = pushed_format.read_version_record(serving_dir, newest, config.pipeline_root)
    if record is None:
        return None
    model_id = record.get(pushed_format.MODEL_ID)
    model = _recorded_model(store, model_id)
    if model is None or not pushed_format.version_holds(
        serving_dir, newest, record, model_id, model.uri, model.properties[model_format.DIGEST]
    ):
        logger.warning(
            "serving version %d in %s is recorded as model %r, which this pipeline's store does not "
            "know or whose digest its files do not have; not adopted",
            newest,
            serving_dir,
            model_id,
        )
        return None
    properties = {
        pushed_format.PUSHED: 1,
        pushed_format.VERSION: newest,
        pushed_format.MODEL_ID: model_id,
        pushed_format.SERVING_DIR: serving_dir,
    }
    rolled_back_from = record.get(pushed_format.ROLLED_BACK_FROM)
    if isinstance(rolled_back_from, int) and not isinstance(rolled_back_from, bool):
        properties[pushed_format.ROLLED_BACK_FROM] = rolled_back_from
    run_id = "recovery-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    _record_publish(store, config, "serving_recovery", run_id, {"model": model_id}, properties)
    logger.warning(
        "recorded serving version %d in %s (model %d): its %s was interrupted before it was recorded",
        newest,
        serving_dir,
        model_id,
        "rollback" if rolled_back_from is not None else "push",
    )
    return record


def _recorded_model(store, model_id):
    """The store's Model artifact `model_id` when it has an export digest; None otherwise."""
    if isinstance(model_id, bool) or not isinstance(model_id, int) or model_id <= 0:
        return None
    try:
        model = store.artifact(model_id)
    except ValueError:  # no artifact with that id
        return None
    digest = model.properties.get(model_format.DIGEST)
    return (
        model
        if model.type_name == model_format.ARTIFACT_TYPE and isinstance(digest, str) and digest
        else None
    )


def _record_publish(
    store, config: PipelineConfig, step: str, run_id: str, inputs: dict, properties: dict
) -> None:
    """Records one COMPLETE execution `step` whose output is the PushedModel `properties` describe,
    then backs the store up (`keep_backup`). The caller holds the pipeline root's lock."""
    contexts = store.run_contexts(run_id, {"pipeline_root": config.pipeline_root})
    execution_id = store.start_execution(step, run_id, "", contexts, inputs)
    uri = os.path.join(config.serving_dir, str(properties[pushed_format.VERSION]))
    store.complete_execution(
        execution_id,
        {"pushed_model": (pushed_format.ARTIFACT_TYPE, uri, properties)},
        {"properties": properties},
        contexts,
    )
    # A restore from an older backup would bring back the previous baseline.
    if store.path is not None:  # a MySQL store is backed up by its server's tools
        keep_backup(store.path)


def restore_metadata(config: PipelineConfig, force: bool = False) -> tuple:
    """Puts the backup of the pipeline root's metadata store in place (`restore_store`), under
    the pipeline root's lock.

    Returns (the store file, the path the replaced file is kept at, or None when there was
    none). Raises LockTimeoutError when a run holds the lock for RESTORE_LOCK_TIMEOUT_S seconds,
    StoreRestoreError (nothing changed) as `restore_store`, ConfigError when the store is a
    MySQL database (its server's backups restore it, not this command).
    """
    settings = store_settings(config)
    if settings is not None:
        raise ConfigError(
            f"metadata restore: the metadata store is {settings.describe()}, not a SQLite file; "
            "a MySQL / MariaDB store is backed up and restored with the server's own tools "
            "(mysqldump), not by this command"
        )
    store = store_path(config.pipeline_root)
    with exclusive_lock(pipeline_lock_path(config.pipeline_root), RESTORE_LOCK_TIMEOUT_S):
        kept = restore_store(store, force)
    return store, kept


def _recorded_digest(store, source, version: int, serving_dir: str) -> str:
    """The export digest of the model that push record `source` published as `version`.

    Raises ModelIntegrityError when there is no such record or it names no model digest: a
    version this pipeline cannot vouch for is never loaded (rollback runs a serving check on it).
    """
    model_id = pushed_format.pushed_model_id(source.properties) if source is not None else 0
    digest = store.artifact(model_id).properties.get(model_format.DIGEST) if model_id else None
    if not isinstance(digest, str) or not digest:
        raise ModelIntegrityError(
            f"rollback: version {version} in {serving_dir} has no push record with a "
            "model digest in this pipeline's metadata; refusing to load an unverified model"
        )
    return digest


def list_runs(config: PipelineConfig) -> list:
    """One dict per past run (oldest first: by start time, then run id) from the runs' summary
    files; a run made of several calls (`--run-id`) is one run."""
    runs = []
    summaries = []
    for path in glob.glob(os.path.join(runs_dir(config.pipeline_root), "*", SUMMARY_FILE)):
        with open(path) as f:
            summaries.append(json.load(f))
    for summary in sorted(summaries, key=lambda s: (s.get("started") or "", s["run_id"])):
        states = [s["state"] for s in summary.get("steps", {}).values()]
        push = summary.get("push") or {}
        runs.append(
            {
                "run_id": summary["run_id"],
                "status": summary.get("status"),
                "exit_code": summary.get("exit_code"),
                "spans": summary.get("data", {}).get("spans", []),
                "ran": states.count("ran"),
                "cached": states.count("cached"),
                "push": (
                    f"version {push.get('version')}"
                    if push.get("pushed")
                    else f"no ({push.get('reason')})"
                    if push
                    else "-"
                ),
                "message": summary.get("message"),
            }
        )
    return runs


def serving_status(config: PipelineConfig) -> dict:
    """The model serving now and its lineage: version, run, spans, its blessing and metrics."""
    store = open_store(config.pipeline_root, store_settings(config))
    status = {"serving_dir": config.serving_dir, "versions": pushed_format.list_versions(config.serving_dir)}
    latest = pushed_format.latest_push(store, config.serving_dir)
    if latest is None:
        status["serving"] = None
        return status
    model = store.artifact(pushed_format.pushed_model_id(latest.properties))
    lineage = {
        "version": latest.properties.get(pushed_format.VERSION),
        "model_id": model.id,
        "model_uri": model.uri,
        "rolled_back_from": latest.properties.get(pushed_format.ROLLED_BACK_FROM),
    }
    if model.properties.get(model_format.MODULE_DIGEST):
        # The trainer module that built the network (models from before modules lack it).
        lineage["module"] = {
            "path": model.properties.get(model_format.MODULE_FILE),
            "sha256": model.properties[model_format.MODULE_DIGEST],
        }
    trainer_execution = store.producer_of(model.id)
    if trainer_execution:
        [execution] = store.store.get_executions_by_id([trainer_execution])
        lineage["trained_in_run"] = execution.custom_properties["run_id"].string_value
        spans = training_spans(store, model.id)
        if spans:
            lineage["spans"] = spans
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
        return {
            "blessed": int(record.blessed),
            "metrics": {name: overall[name] for name in STATUS_METRICS if name in overall},
        }
    return {}
