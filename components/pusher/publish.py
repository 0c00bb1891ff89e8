"""Publishing a verified SavedModel as the next version of the TF Serving folder, and finding
a push of it that was killed after its version appeared.

The serving folder's layout, its lock, the version records and the staged, digest-checked,
atomic commit of a version are the PushedModel format's (`pipeline.formats.pushed_model`); this
module picks the version.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from pipeline.core.errors import PushError
from pipeline.formats.pushed_model import (
    LOCK_TIMEOUT_S,
    VerifyFn,
    list_versions,
    locked_versions,
    read_version_record,
    stage_and_commit,
    version_holds,
)

logger = logging.getLogger(__name__)


def publish(
    model_dir: str,
    serving_dir: str,
    expected_digest: str,
    verify_fn: VerifyFn | None,
    lock_timeout_s: float = LOCK_TIMEOUT_S,
    record: Mapping | None = None,
) -> int:
    """Publishes the SavedModel at `model_dir` as the next version in `serving_dir`.

    expected_digest: pipeline.core.digest.directory_digest of the model as exported; the staged copy
        must match it.
    verify_fn: called with the staged folder before it is published; raises when the model
        does not load or answer (None skips the serving check).
    record: `pushed_model.version_record` of this push, written beside the version before it
        appears (None writes none).
    Returns the new version (max existing + 1, or 1). Raises PushError with a one-line reason;
    nothing is published then.
    """
    if not os.path.isdir(model_dir):
        raise PushError(f"model folder {model_dir} does not exist; nothing published")
    with locked_versions(serving_dir, lock_timeout_s, "push") as versions:
        version = (versions[-1] + 1) if versions else 1
        return stage_and_commit(model_dir, serving_dir, version, expected_digest, verify_fn, record)


def interrupted_push(
    serving_dir: str, pipeline_root: str, model_id: int, model_uri: str, model_digest: str
) -> int | None:
    """The newest version of `serving_dir` when a push of Model `model_id` (at `model_uri`) from
    `pipeline_root` published it: its version record says so and its files have `model_digest`
    (the digest the metadata store records for that model). None otherwise, or when there is no
    version yet.

    Asked when the metadata store does not name this model as serving: the answer is then a push
    killed after the rename and before its record. Only the newest version is considered, since
    the record made for it becomes the store's newest push, which must be what serves. Reads
    without the serving lock (a version appears complete, its record before it); the pipeline
    root's lock keeps this root's other pushes and rollbacks away meanwhile.
    """
    versions = list_versions(serving_dir)
    if not versions:
        return None
    newest = versions[-1]
    record = read_version_record(serving_dir, newest, pipeline_root)
    if record is None or record.get("model_id") != model_id:
        return None
    if not version_holds(serving_dir, newest, record, model_id, model_uri, model_digest):
        logger.warning(
            "serving version %d in %s is recorded as model %d, but does not hold it (its record or its "
            "files differ: partial or altered); not adopted",
            newest,
            serving_dir,
            model_id,
        )
        return None
    return newest
