"""Model integrity: a model is loaded only when its files match the digest recorded at export.

Every reader of a Model artifact goes through `verify_model`: the evaluator (candidate and
baseline), the pusher, the trainer's warm start and the run report.
"""

from __future__ import annotations

import os

from pipeline.digest import directory_digest
from pipeline.errors import ModelIntegrityError
from pipeline.step import Artifact

SERVING_SUBDIR = "Format-Serving"


def verify_model(artifact: Artifact, role: str) -> str:
    """Checks directory_digest(<uri>/Format-Serving) against artifact.properties['digest'].

    role: how the message names the model ("candidate model", "baseline model", "base model").
    Returns the verified SavedModel directory.
    Raises ModelIntegrityError when the digest is missing, the directory is missing or unreadable,
    or the digests differ.
    """
    path = os.path.join(artifact.uri, SERVING_SUBDIR)
    expected = artifact.properties.get("digest") if artifact.properties else None
    where = f"{role} {path} (artifact id {artifact.id})"
    if not isinstance(expected, str) or not expected:
        raise ModelIntegrityError(f"{where}: no recorded digest; refusing to load an unverified model")
    try:
        actual = directory_digest(path)
    except (OSError, ValueError) as e:
        raise ModelIntegrityError(f"{where}: cannot compute digest: {e}") from e
    if actual != expected:
        raise ModelIntegrityError(f"{where}: digest {actual[:12]}... does not match the recorded "
                                  f"{expected[:12]}...; the files changed after export")
    return path
