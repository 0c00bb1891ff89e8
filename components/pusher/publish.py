"""Publishing a verified SavedModel as the next version of the TF Serving folder.

The serving folder's layout, its lock and the staged, digest-checked, atomic commit of a version
are the PushedModel format's (`pipeline.formats.pushed_model`); this module picks the version.
"""

from __future__ import annotations

import os
from typing import Optional

from pipeline.core.errors import PushError
from pipeline.formats.pushed_model import LOCK_TIMEOUT_S, VerifyFn, locked_versions, stage_and_commit


def publish(model_dir: str, serving_dir: str, expected_digest: str,
            verify_fn: Optional[VerifyFn], lock_timeout_s: float = LOCK_TIMEOUT_S) -> int:
    """Publishes the SavedModel at `model_dir` as the next version in `serving_dir`.

    expected_digest: pipeline.core.digest.directory_digest of the model as exported; the staged copy
        must match it.
    verify_fn: called with the staged folder before it is published; raises when the model
        does not load or answer (None skips the serving check).
    Returns the new version (max existing + 1, or 1). Raises PushError with a one-line reason;
    nothing is published then.
    """
    if not os.path.isdir(model_dir):
        raise PushError(f"model folder {model_dir} does not exist; nothing published")
    with locked_versions(serving_dir, lock_timeout_s, "push") as versions:
        version = (versions[-1] + 1) if versions else 1
        return stage_and_commit(model_dir, serving_dir, version, expected_digest, verify_fn)
