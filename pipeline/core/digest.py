"""Content digests of files and directories, used for cache checks and model integrity."""

from __future__ import annotations

import hashlib
import os

_CHUNK = 1 << 20


def file_digest(path: str) -> str:
    """Returns the hex sha256 of the file at `path`."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def directory_digest(path: str) -> str:
    """Returns a hex sha256 over every file under `path`: relative names and contents.

    The walk is sorted, so the digest depends only on the tree's content, not on the order the
    file system lists it. Symbolic links are refused: an artifact is plain files only.
    Raises FileNotFoundError when `path` is not a directory.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(f"not a directory: {path}")
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            if os.path.islink(full):
                raise ValueError(f"symbolic link inside artifact: {full}")
            rel = os.path.relpath(full, path).replace(os.sep, "/")
            h.update(rel.encode("utf-8") + b"\0")
            h.update(file_digest(full).encode("ascii") + b"\n")
    return h.hexdigest()
