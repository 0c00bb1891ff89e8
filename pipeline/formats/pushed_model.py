"""PushedModel: one publish (or rollback) into the serving folder, and the serving folder itself.

The serving folder (TF Serving's layout): `<serving_dir>/<version>/saved_model.pb + variables/`,
versions strictly increasing integers; TF Serving serves the highest. A version folder appears
only complete and verified: the model is copied into a hidden
`<serving_dir>/.staging-<version>-<random>/`, fsynced, checked (digest and a serving call), then
renamed into place in one `os.rename`. The exclusive lock `<serving_dir>/.push.lock` serialises
publishers sharing a serving folder, so version numbers never collide and a staging folder found
while holding the lock is debris of a killed push. Published versions are never modified or
deleted: a rollback publishes an earlier version again under a new number.

Each version has a version record beside it, `<serving_dir>/.version-<version>.json`, written
and fsynced before the rename: what the version holds (`pipeline_root`, `model_id`,
`model_uri`, `model_digest`, `run_id`, `time`, `version`, and for rollbacks
`rolled_back_from`). It lives beside the version, not inside it, so the version's files stay
byte for byte the exported model (their digest is the model's). It lets the next run recognise
a version whose push was killed after the rename and before the metadata store recorded it; a
record is believed only for a version whose files have the digest the store records for the
model it names. A record without its version is debris, removed under the lock.

The PushedModel artifact (uri `<serving_dir>/<version>`) has properties `pushed` (1 when a
version was published), `version`, `model_id` (the Model artifact behind it), `serving_dir`,
and for rollbacks `rolled_back_from`. The pusher's output folder holds `push.json`, the record
of what it did (pushed, version, model_id, model_uri, model_digest, serving_dir, reason, time).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping

from pipeline.core import interrupts
from pipeline.core.atomic_files import fsync_path
from pipeline.core.digest import directory_digest
from pipeline.core.errors import ConfigError, LockTimeoutError, PushError, WriteFaultError, failed_path
from pipeline.core.lock import exclusive_lock
from pipeline.formats.files import read_json_object

logger = logging.getLogger(__name__)

ARTIFACT_TYPE = "PushedModel"
PUSHED = "pushed"
VERSION = "version"
MODEL_ID = "model_id"
SERVING_DIR = "serving_dir"
ROLLED_BACK_FROM = "rolled_back_from"

PUSH_FILE = "push.json"
LOCK_FILE = ".push.lock"
STAGING_PREFIX = ".staging-"
VERSION_RECORD_PREFIX = ".version-"
VERSION_RECORD_SUFFIX = ".json"
LOCK_TIMEOUT_S = 300.0
_LOCK_POLL_S = 0.2

VerifyFn = Callable[[str], None]


# ---------------------------------------------------------------------------- the record


def pushed_model_id(properties: Mapping) -> int:
    """The Model artifact id a PushedModel record published; 0 when it published nothing."""
    if properties.get(PUSHED) != 1:
        return 0
    return int(properties.get(MODEL_ID) or 0)


def write_push_record(pushed_model_dir: str, record: dict) -> None:
    """Writes `push.json` into the pusher's output folder."""
    with open(os.path.join(pushed_model_dir, PUSH_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)


def read_push_record(pushed_model_uri: str) -> dict:
    """`<pushed_model>/push.json`; InputDataError naming it when missing or malformed."""
    return read_json_object(os.path.join(pushed_model_uri, PUSH_FILE))


def _same_folder(recorded, serving_dir: str) -> bool:
    return isinstance(recorded, str) and os.path.realpath(recorded) == os.path.realpath(serving_dir)


def latest_push(store, serving_dir: str):
    """The newest PushedModel artifact of `store` that published a model into `serving_dir`
    (compared after resolving links), or None: what serves there now, as far as the store knows."""
    return next(
        (
            a
            for a in store.artifacts_of_type(ARTIFACT_TYPE)
            if pushed_model_id(a.properties) and _same_folder(a.properties.get(SERVING_DIR), serving_dir)
        ),
        None,
    )


def find_push(store, serving_dir: str, version: int):
    """The newest PushedModel artifact of `store` that published `version` into `serving_dir`.

    A record counts when it published a model (`pushed` 1 and a `model_id`) and names the same
    folder (compared after resolving links). Returns None when there is none.
    """
    for pushed in store.artifacts_of_type(ARTIFACT_TYPE):
        props = pushed.properties
        if (
            pushed_model_id(props)
            and props.get(VERSION) == version
            and _same_folder(props.get(SERVING_DIR), serving_dir)
        ):
            return pushed
    return None


# ---------------------------------------------------------------------------- the version record


def version_record(
    pipeline_root: str,
    run_id: str,
    model_id: int,
    model_uri: str,
    model_digest: str,
    rolled_back_from: int | None = None,
) -> dict:
    """What a version about to be published holds, for `stage_and_commit` to write beside it.

    pipeline_root: the root whose metadata store will record the push (stored resolved).
    rolled_back_from: the version a rollback re-publishes; None for a push.
    """
    record = {
        "pipeline_root": os.path.realpath(pipeline_root),
        "run_id": run_id,
        "model_id": model_id,
        "model_uri": model_uri,
        "model_digest": model_digest,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if rolled_back_from is not None:
        record[ROLLED_BACK_FROM] = rolled_back_from
    return record


def version_record_path(serving_dir: str, version: int) -> str:
    """`<serving_dir>/.version-<version>.json`."""
    return os.path.join(serving_dir, f"{VERSION_RECORD_PREFIX}{version}{VERSION_RECORD_SUFFIX}")


def write_version_record(serving_dir: str, version: int, record: Mapping) -> str:
    """Writes `record` (with `version` added) beside version `version`, fsynced with its folder
    entry; returns its path. Raises OSError."""
    path = version_record_path(serving_dir, version)
    with open(path, "w") as f:
        json.dump({**record, VERSION: version}, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    fsync_path(serving_dir)
    return path


def read_version_record(serving_dir: str, version: int, pipeline_root: str) -> dict | None:
    """The record beside `<serving_dir>/<version>` when a push or rollback of `pipeline_root`
    wrote it; None when there is none (an older push, another pipeline root) or it is unreadable,
    malformed or names another version. Proves nothing by itself: see `version_holds`."""
    try:
        with open(version_record_path(serving_dir, version)) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if (
        not isinstance(record, dict)
        or record.get(VERSION) != version
        or not _same_folder(record.get("pipeline_root"), pipeline_root)
    ):
        return None
    return record


def version_holds(
    serving_dir: str, version: int, record: Mapping, model_id: int, model_uri: str, model_digest: str
) -> bool:
    """True when version record `record` names Model `model_id` at `model_uri` with
    `model_digest`, and the files of `<serving_dir>/<version>` have exactly that digest.

    The model's id, uri and digest must come from the metadata store, never from the record:
    anyone able to write the serving folder can write a record, but only the model's own bytes
    have its digest. False for a partial or altered version, or one that cannot be read.
    """
    if (
        not model_id
        or record.get(MODEL_ID) != model_id
        or record.get("model_uri") != model_uri
        or record.get("model_digest") != model_digest
    ):
        return False
    try:
        return directory_digest(os.path.join(serving_dir, str(version))) == model_digest
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------- the serving folder


def list_versions(serving_dir: str) -> list:
    """Returns the published versions (integer folder names) in ascending order.

    Hidden entries, files, links and non-integer names are ignored. Raises OSError when the
    folder cannot be listed (a missing folder has no versions).
    """
    if not os.path.isdir(serving_dir):
        return []
    versions = []
    for entry in os.scandir(serving_dir):
        if entry.name.isascii() and entry.name.isdigit() and entry.is_dir(follow_symlinks=False):
            versions.append(int(entry.name))
    return sorted(versions)


def rollback_version(versions: list, to_version: int | None, serving_dir: str) -> int:
    """The version a rollback re-publishes: `to_version`, or the one before the newest.

    Raises ConfigError when there are fewer than two versions (and none is named), or
    `to_version` is not one of `versions`.
    """
    listing = ", ".join(map(str, versions)) or "none"
    if to_version is None:
        if len(versions) < 2:
            raise ConfigError(
                f"rollback: serving dir {serving_dir} has versions [{listing}]; "
                "need at least two to roll back"
            )
        return versions[-2]
    if isinstance(to_version, bool) or not isinstance(to_version, int) or to_version not in versions:
        raise ConfigError(
            f"rollback: version {to_version!r} not found in {serving_dir} (versions: {listing})"
        )
    return to_version


@contextlib.contextmanager
def serving_lock(serving_dir: str, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Holds the exclusive lock of `serving_dir` (created if missing) for the `with` body.

    Raises PushError when the folder or lock file cannot be created or the lock is not free
    within `timeout_s` seconds.
    """
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(
                exclusive_lock(
                    os.path.join(serving_dir, LOCK_FILE), timeout_s, poll_s=_LOCK_POLL_S, what="serving dir"
                )
            )
        except LockTimeoutError as e:
            raise PushError(
                f"serving dir {serving_dir}: lock {LOCK_FILE} not acquired within "
                f"{timeout_s:.0f}s (another push is running?)"
            ) from e
        except WriteFaultError as e:  # "serving dir: cannot write <dir>/.push.lock: <reason>"
            raise PushError(str(e)) from e
        except OSError as e:
            raise PushError(f"serving dir {serving_dir}: cannot lock {LOCK_FILE}: {e.strerror or e}") from e
        yield


def clean_stale_staging(serving_dir: str) -> list:
    """Removes `.staging-*` folders and version records without their version, left by killed
    pushes; returns their names.

    Call only while holding `serving_lock`: then no live push owns a staging folder or a record
    whose version is not there yet.
    """
    removed = []
    records_kept = {os.path.basename(version_record_path(serving_dir, v)) for v in list_versions(serving_dir)}
    for entry in os.scandir(serving_dir):
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        elif (
            entry.name.startswith(VERSION_RECORD_PREFIX)
            and entry.name not in records_kept
            and entry.is_file(follow_symlinks=False)
        ):
            os.remove(entry.path)
        else:
            continue
        removed.append(entry.name)
        logger.warning("removed stale %s", entry.path)
    return removed


@contextlib.contextmanager
def locked_versions(serving_dir: str, timeout_s: float, what: str) -> Iterator[list]:
    """Holds `serving_lock`, clears stale staging folders and yields the published versions.

    what: the operation, for the message ("push", "rollback"). Raises PushError as
    `serving_lock`, or when the folder cannot be cleaned or listed.
    """
    with serving_lock(serving_dir, timeout_s):
        try:
            clean_stale_staging(serving_dir)
            versions = list_versions(serving_dir)
        except OSError as e:
            raise PushError(f"serving dir {serving_dir}: cannot prepare {what}: {e.strerror}") from e
        yield versions


def copy_tree_durably(src: str, dst: str) -> int:
    """Copies the plain files under `src` into the existing folder `dst`; fsyncs files and dirs.

    Returns the number of files copied. Raises OSError (e.g. ENOSPC) as the copy meets it, and
    ValueError on a symbolic link (an artifact is plain files only).
    """
    copied = 0
    for root, dirs, files in os.walk(src):
        dirs.sort()
        rel = os.path.relpath(root, src)
        target_root = dst if rel == "." else os.path.join(dst, rel)
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                raise ValueError(f"symbolic link inside model: {os.path.join(root, name)}")
            os.mkdir(os.path.join(target_root, name))
        for name in sorted(files):
            source = os.path.join(root, name)
            if os.path.islink(source):
                raise ValueError(f"symbolic link inside model: {source}")
            target = os.path.join(target_root, name)
            shutil.copy2(source, target)
            fsync_path(target)
            copied += 1
        fsync_path(target_root)
    return copied


def _failure_detail(e: Exception) -> str:
    """One line for what failed: "<Type>: <reason>", for a file system error with the path it
    failed on ("OSError: /srv/models/.staging-3-x/saved_model.pb: No space left on device"),
    the destination where the error names two (a copy)."""
    if isinstance(e, OSError) and e.strerror:
        path = failed_path(e)
        return f"{type(e).__name__}: {path}: {e.strerror}" if path else f"{type(e).__name__}: {e.strerror}"
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


def stage_and_commit(
    model_dir: str,
    serving_dir: str,
    version: int,
    expected_digest: str,
    verify_fn: VerifyFn | None,
    record: Mapping | None = None,
) -> int:
    """Copies `model_dir` to a staging folder, verifies it, renames it to `<serving_dir>/<version>`.

    The caller holds `serving_lock` and has chosen `version` (not yet present). verify_fn gets
    the staged folder and raises on a model that does not serve. record (see `version_record`)
    is written beside the version before the rename; None writes none. Returns `version`.
    Raises PushError naming the step that failed; the staging folder and the record are then
    removed and no version folder exists.
    """
    final = os.path.join(serving_dir, str(version))
    if os.path.lexists(final):
        raise PushError(f"serving dir {serving_dir}: version {version} already exists")
    staging = record_path = None
    step = "create staging folder"
    try:
        staging = tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{version}-", dir=serving_dir)
        # mkdtemp makes it owner-only; the server reading the published version may be another user.
        os.chmod(staging, 0o755)
        step = f"copy {model_dir}"
        files = copy_tree_durably(model_dir, staging)
        step = "verify digest of the staged copy"
        actual = directory_digest(staging)
        if actual != expected_digest:
            raise PushError(
                f"staged copy of {model_dir} has digest {actual[:12]}..., "
                f"expected {expected_digest[:12]}...; not published"
            )
        step = "verify the staged model serves"
        if verify_fn is not None:
            verify_fn(staging)
        if record is not None:
            # Before the rename: a version that exists always has its record, so a push killed
            # right after the rename is recognised, not published again, by the next run.
            step = "write the version record"
            record_path = write_version_record(serving_dir, version, record)
        step = f"rename staging folder to {final}"
        # A stop request between the rename and forgetting the paths would remove the record
        # of a published version: it waits (`interrupts.held`).
        with interrupts.held():
            os.rename(staging, final)
            staging = record_path = None
    except PushError:
        raise
    except Exception as e:  # any failure must leave nothing half-published
        raise PushError(f"push to {serving_dir} failed at '{step}': {_failure_detail(e)}") from e
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        if record_path is not None:
            with contextlib.suppress(OSError):
                os.remove(record_path)
    try:
        fsync_path(serving_dir)  # makes the rename durable
    except OSError as e:
        # The version is already visible; failing now would report a push that happened.
        logger.warning("fsync of %s after publishing version %d failed: %s", serving_dir, version, e)
    logger.info("published %s as version %d (%d files) in %s", model_dir, version, files, serving_dir)
    return version
