"""Inputs that live outside the pipeline root (a curated schema, a user's module file).

Such a file is an input like any artifact: it is registered in ML Metadata with the sha256 of
its content, and that digest is its fingerprint in the cache key. Editing the file in place
therefore invalidates the cache of the step that reads it and of everything downstream.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

from pipeline.core.artifacts import CONTENT_DIGEST
from pipeline.core.digest import file_digest
from pipeline.core.errors import ConfigError, InputDataError
from pipeline.core.metadata import to_step_artifact
from pipeline.core.step import Artifact, Resolver

__all__ = ["CONTENT_DIGEST", "check_content", "external_file", "read_verified"]


def external_file(type_name: str, path: str, setting: str) -> Resolver:
    """A resolver registering the file at `path` as a `type_name` artifact, by content digest.

    setting: the config key the path came from, named in the error when the file is missing.
    The artifact's uri is the file's absolute path; its property `content_digest` is the sha256
    of the bytes read at resolution time.
    """

    def resolve(store, _resolved: Mapping[str, Artifact]) -> Artifact | None:
        absolute = os.path.abspath(path)
        if not os.path.isfile(absolute):
            raise ConfigError(f"config key {setting}: no file at {absolute}")
        artifact_id = store.put_external_artifact(
            type_name, absolute, {CONTENT_DIGEST: file_digest(absolute)}
        )
        return to_step_artifact(store.artifact(artifact_id))

    return resolve


def read_verified(artifact: Artifact) -> bytes:
    """The bytes of an external-file artifact, checked against the digest it was resolved with.

    Raises InputDataError naming the file when it changed after the run resolved it (the
    cache key would then not describe what the step read).
    """
    try:
        with open(artifact.uri, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputDataError(f"{artifact.uri}: cannot read: {e.strerror or e}") from e
    check_content(data, artifact.properties.get(CONTENT_DIGEST), artifact.uri)
    return data


def check_content(data: bytes, expected_digest: str | None, path: str) -> str:
    """The sha256 of `data` (the bytes read from `path`); raises InputDataError naming `path`
    when `expected_digest` is given and differs (the file changed after the run resolved it)."""
    digest = hashlib.sha256(data).hexdigest()
    if expected_digest is not None and digest != expected_digest:
        raise InputDataError(f"{path}: file changed while the run was using it; run again")
    return digest
