"""Files replaced atomically: a reader sees the old file or the whole new one, never half of it.

The data goes to a temporary file in the target's own folder (so the rename never crosses file
systems), is flushed and fsynced, made readable like a normal file (0644) and renamed over the
target. On any error, including KeyboardInterrupt, the temporary file is removed and the target
is left as it was.
"""

from __future__ import annotations

import json
import os
import tempfile

FILE_MODE = 0o644


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` atomically, creating its folder when missing."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".part", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` as UTF-8 to `path` atomically."""
    write_bytes_atomic(path, text.encode("utf-8"))


def fsync_path(path: str) -> None:
    """Flushes the file or folder `path` to disk (for a folder: the names it holds, so a rename
    into it survives a crash)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str, data) -> None:
    """Writes `data` as indented JSON (plus a final newline) to `path` atomically; values JSON
    cannot hold are written with str()."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
