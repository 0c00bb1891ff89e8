"""Rollback: re-publish an earlier served version as a new newest version.

TF Serving serves the highest version number, so going back means publishing the old model
again under a new number, through the same staging, digest check and atomic rename as a push.
Published versions are never modified or deleted, so history stays intact.
"""

from __future__ import annotations

import os
from typing import Optional

from components.pusher.publish import (VerifyFn, clean_stale_staging, list_versions, serving_lock,
                                       stage_and_commit)
from components.pusher.serving_check import make_verify_fn
from pipeline.digest import directory_digest
from pipeline.errors import ConfigError, ModelIntegrityError, PushError


def choose_source(versions: list, to_version: Optional[int], serving_dir: str) -> int:
    """Returns the version to re-publish: `to_version`, or the one before the newest.

    Raises ConfigError when there is nothing to roll back to, the version does not exist, or
    it is already the newest.
    """
    listing = ", ".join(map(str, versions)) or "none"
    if to_version is None:
        if len(versions) < 2:
            raise ConfigError(f"rollback: serving dir {serving_dir} has versions [{listing}]; "
                              "need at least two to roll back")
        return versions[-2]
    if isinstance(to_version, bool) or not isinstance(to_version, int) or to_version not in versions:
        raise ConfigError(f"rollback: version {to_version!r} not found in {serving_dir} (versions: {listing})")
    if to_version == versions[-1]:
        raise ConfigError(f"rollback: version {to_version} is already the newest in {serving_dir}")
    return to_version


def rollback(serving_dir: str, to_version: Optional[int] = None,
             verify_fn: Optional[VerifyFn] = None, lock_timeout_s: float = 300.0,
             expected_digest: Optional[str] = None) -> int:
    """Re-publishes `to_version` (default: the one before the newest) as a new newest version.

    verify_fn: serving check of the staged copy; default loads it and calls both signatures
        (serving_images on blank images).
    expected_digest: the digest recorded for the model of that version when it was exported;
        the version's files must match it before anything is copied or loaded (None skips this,
        for callers that verified the source themselves).
    Returns the new version. Raises ConfigError for a bad choice of version, ModelIntegrityError
    when the version's files do not match `expected_digest`, PushError when the copy cannot be
    made or verified (nothing is published then).
    """
    if not os.path.isdir(serving_dir):
        raise ConfigError(f"rollback: serving dir {serving_dir} does not exist")
    # Choosing the source under the lock: a concurrent push cannot shift "the one before the newest".
    with serving_lock(serving_dir, lock_timeout_s):
        try:
            clean_stale_staging(serving_dir)
            versions = list_versions(serving_dir)
        except OSError as e:
            raise PushError(f"serving dir {serving_dir}: cannot prepare rollback: {e.strerror}") from e
        source_version = choose_source(versions, to_version, serving_dir)
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
        new_version = versions[-1] + 1
        try:
            return stage_and_commit(source, serving_dir, new_version, source_digest,
                                    verify_fn if verify_fn is not None else make_verify_fn([]))
        except PushError as e:
            raise PushError(f"rollback to version {source_version}: {e}") from e
