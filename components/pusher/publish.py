"""Atomic publishing of a SavedModel into a TF Serving version folder.

Layout: `<serving_dir>/<version>/saved_model.pb + variables/`, versions strictly increasing
integers. A version folder appears only complete and verified: the model is copied into a
hidden `<serving_dir>/.staging-<version>-<random>/` folder, fsynced, checked (digest and a
serving call), then renamed into place in one `os.rename` (atomic on one file system). An
exclusive lock file serialises publishers sharing a serving folder, so version numbers never
collide and a staging folder found while holding the lock is debris of a killed push.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import tempfile
import time
from typing import Callable, Iterator, Optional

from pipeline.digest import directory_digest
from pipeline.errors import PushError

logger = logging.getLogger(__name__)

LOCK_FILE = ".push.lock"
STAGING_PREFIX = ".staging-"
_LOCK_POLL_S = 0.2

VerifyFn = Callable[[str], None]


def list_versions(serving_dir: str) -> list:
    """Returns the published versions (integer folder names) in ascending order.

    Hidden entries, files and non-integer names are ignored. Raises OSError when the folder
    cannot be listed (a missing folder has no versions).
    """
    if not os.path.isdir(serving_dir):
        return []
    versions = []
    for entry in os.scandir(serving_dir):
        if entry.name.isascii() and entry.name.isdigit() and entry.is_dir(follow_symlinks=False):
            versions.append(int(entry.name))
    return sorted(versions)


@contextlib.contextmanager
def serving_lock(serving_dir: str, timeout_s: float = 300.0) -> Iterator[None]:
    """Holds the exclusive lock of `serving_dir` (created if missing) for the `with` body.

    Raises PushError when the folder cannot be created or the lock is not free within
    `timeout_s` seconds.
    """
    try:
        os.makedirs(serving_dir, exist_ok=True)
        fd = os.open(os.path.join(serving_dir, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise PushError(f"serving dir {serving_dir}: cannot open lock file: {e.strerror}") from e
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    raise PushError(f"serving dir {serving_dir}: lock {LOCK_FILE} not acquired "
                                    f"within {timeout_s:.0f}s (another push is running?)") from e
                time.sleep(_LOCK_POLL_S)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def clean_stale_staging(serving_dir: str) -> list:
    """Removes `.staging-*` folders left by killed pushes; returns their names.

    Call only while holding `serving_lock`: then no live push owns a staging folder.
    """
    removed = []
    for entry in os.scandir(serving_dir):
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
            removed.append(entry.name)
            logger.warning("removed stale staging folder %s", entry.path)
    return removed


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
            _fsync_path(target)
            copied += 1
        _fsync_path(target_root)
    return copied


def stage_and_commit(model_dir: str, serving_dir: str, version: int, expected_digest: str,
                     verify_fn: Optional[VerifyFn]) -> int:
    """Copies `model_dir` to a staging folder, verifies it, renames it to `<serving_dir>/<version>`.

    The caller holds `serving_lock` and has chosen `version` (not yet present). verify_fn gets
    the staged folder and raises on a model that does not serve. Returns `version`.
    Raises PushError naming the step that failed; the staging folder is then removed and no
    version folder exists.
    """
    final = os.path.join(serving_dir, str(version))
    if os.path.lexists(final):
        raise PushError(f"serving dir {serving_dir}: version {version} already exists")
    staging = None
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
            raise PushError(f"staged copy of {model_dir} has digest {actual[:12]}..., "
                            f"expected {expected_digest[:12]}...; not published")
        step = "verify the staged model serves"
        if verify_fn is not None:
            verify_fn(staging)
        step = f"rename staging folder to {final}"
        os.rename(staging, final)
        staging = None
    except PushError:
        raise
    except Exception as e:  # any failure must leave nothing half-published
        detail = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines() or [""])[0]
        raise PushError(f"push to {serving_dir} failed at '{step}': {type(e).__name__}: {detail}") from e
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    try:
        _fsync_path(serving_dir)  # makes the rename durable
    except OSError as e:
        # The version is already visible; failing now would report a push that happened.
        logger.warning("fsync of %s after publishing version %d failed: %s", serving_dir, version, e)
    logger.info("published %s as version %d (%d files) in %s", model_dir, version, files, serving_dir)
    return version


def publish(model_dir: str, serving_dir: str, expected_digest: str,
            verify_fn: Optional[VerifyFn], lock_timeout_s: float = 300.0) -> int:
    """Publishes the SavedModel at `model_dir` as the next version in `serving_dir`.

    expected_digest: pipeline.digest.directory_digest of the model as exported; the staged copy
        must match it.
    verify_fn: called with the staged folder before it is published; raises when the model
        does not load or answer (None skips the serving check).
    Returns the new version (max existing + 1, or 1). Raises PushError with a one-line reason;
    nothing is published then.
    """
    if not os.path.isdir(model_dir):
        raise PushError(f"model folder {model_dir} does not exist; nothing published")
    with serving_lock(serving_dir, lock_timeout_s):
        try:
            clean_stale_staging(serving_dir)
            versions = list_versions(serving_dir)
        except OSError as e:
            raise PushError(f"serving dir {serving_dir}: cannot prepare: {e.strerror}") from e
        version = (versions[-1] + 1) if versions else 1
        return stage_and_commit(model_dir, serving_dir, version, expected_digest, verify_fn)
