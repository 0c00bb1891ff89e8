"""The metadata store's file kept sound: an integrity check at open, a checked backup after
every run, and a restore from that backup.

Everything here works on the SQLite file itself with the standard `sqlite3` module, never
through ml-metadata: a damaged file must be caught before ml-metadata opens it (it would fail
mid-query with a bare "database disk image is malformed", or quietly create a new, empty store
over a missing or emptied one, and with it lose the cache, the lineage and the serving baseline).

Files beside the store `<root>/metadata.sqlite`:
- `metadata.sqlite.backup`: the copy made after the latest completed run;
- `metadata.sqlite.damaged-<UTC time>`: a store that `restore_store` replaced, kept as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
import urllib.parse
from datetime import UTC, datetime

from pipeline.core.atomic_files import fsync_path
from pipeline.core.errors import PipelineError, StoreDamagedError, StoreRestoreError

BACKUP_SUFFIX = ".backup"
DAMAGED_INFIX = ".damaged-"
PART_SUFFIX = ".part"
RESTORE_COMMAND = "run_local.py metadata restore --pipeline-root {root}"
# Files SQLite keeps beside a database. A journal left by a killed writer is rolled back into
# the database of the same name on its next open, so it must move with the file it belongs to.
COMPANION_SUFFIXES = ("-journal", "-wal", "-shm")
# SQLite's own words for a file that is not a sound database; any other error (locked,
# unreadable) says nothing about the file's content, and a restore would not help.
_DAMAGE_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB")

log = logging.getLogger(__name__)


def backup_path(store: str) -> str:
    """Where the backup of the store file `store` lives."""
    return store + BACKUP_SUFFIX


def restore_hint(store: str) -> str:
    """The command that restores the store file `store` from its backup."""
    return RESTORE_COMMAND.format(root=os.path.dirname(os.path.abspath(store)))


def _has_content(path: str) -> bool:
    # SQLite takes a zero-length file for a new, empty database.
    return os.path.isfile(path) and os.path.getsize(path) > 0


def _quick_check(path: str, mode: str) -> str | None:
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode={mode}"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
        rows = conn.execute("PRAGMA quick_check").fetchall()
    messages = [" ".join(str(row[0]).split()) for row in rows]
    return None if messages == ["ok"] else "; ".join(messages[:3])


def integrity_problem(path: str) -> str | None:
    """Runs SQLite's `PRAGMA quick_check` on the database file `path`, opened read-only.

    Returns None when it passes, else what SQLite found, in one line ("file is not a
    database", "database disk image is malformed", "Page 31: btreeInitPage() returns error
    code 11"...). Raises PipelineError when the file cannot be checked for another reason
    (locked past the timeout, unreadable): that is no verdict on its content.
    """
    try:
        try:
            return _quick_check(path, "ro")
        except sqlite3.DatabaseError as e:
            if getattr(e, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
                raise
        # A writer was killed mid-transaction and left its journal: SQLite rolls it back at the
        # next open, which needs write access. That is SQLite's own recovery (the one
        # ml-metadata's open would do), not damage, but it writes: try it on a copy first, so
        # a damaged file is reported exactly as it was.
        problem = _recovered_copy_problem(path)
        return problem if problem is not None else _quick_check(path, "rw")
    except sqlite3.DatabaseError as e:
        if getattr(e, "sqlite_errorname", "").startswith(_DAMAGE_ERRORS):
            return str(e)
        raise PipelineError(f"SQLite file {path} cannot be checked: {e}") from e


def _recovered_copy_problem(path: str) -> str | None:
    """quick_check of a copy of the database `path` and its journal, once SQLite rolled the
    journal back in the copy; the files at `path` are only read."""
    with tempfile.TemporaryDirectory(prefix="store-check-") as folder:
        copy = os.path.join(folder, "store.sqlite")
        for suffix in ("", *COMPANION_SUFFIXES):
            if os.path.exists(path + suffix):
                shutil.copyfile(path + suffix, copy + suffix)  # no live writer: it was killed
        return _quick_check(copy, "rw")


def check_store(store: str) -> None:
    """Returns when ml-metadata may open the store file `store`: it passes quick_check, or
    there is none yet (a new pipeline root).

    Raises StoreDamagedError, one line naming the file, what is wrong and the restore
    command, when it fails quick_check or is no SQLite database, or when it is missing or empty
    while its backup exists (ml-metadata would start a new, empty store in its place).
    """
    backup = backup_path(store)
    if not _has_content(store):
        if os.path.isfile(backup):
            state = "empty" if os.path.exists(store) else "missing"
            raise StoreDamagedError(
                f"metadata store {store} is {state} but its backup {backup} exists; restore it "
                f"with: {restore_hint(store)} (or delete the backup to start a new, empty store)"
            )
        return
    problem = integrity_problem(store)
    if problem is not None:
        raise StoreDamagedError(
            f"metadata store {store} is damaged ({problem}); restore its last "
            f"good backup with: {restore_hint(store)}"
        )


def _remove(path: str) -> None:
    for name in (path, *(path + suffix for suffix in COMPANION_SUFFIXES)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def _checked_copy(source: str, part: str) -> str | None:
    """Copies the database `source` to `part` with SQLite's online backup API (a consistent
    snapshot even while others read it; a plain file copy can catch it between writes),
    fsyncs it and runs quick_check on the copy.

    Returns None when the copy passes; else removes it and returns the problem found.
    """
    _remove(part)
    try:
        uri = f"file:{urllib.parse.quote(os.path.abspath(source))}?mode=ro"
        with (
            contextlib.closing(sqlite3.connect(uri, uri=True)) as src,
            contextlib.closing(sqlite3.connect(part)) as dst,
        ):
            src.backup(dst)
        fsync_path(part)
        problem = integrity_problem(part)
    except BaseException:
        _remove(part)
        raise
    if problem is not None:
        _remove(part)
    return problem


def backup_store(store: str) -> str:
    """Writes a checked copy of the store file `store` to `<store>.backup`; returns its path.

    The copy goes to `<store>.backup.part` first (see `_checked_copy`) and is renamed over the
    previous backup only once it passed quick_check, so the backup is always a whole, sound
    database. Call it when no run writes to the store (under the pipeline lock).
    Raises StoreDamagedError when the copy fails its check (the store itself is damaged),
    sqlite3.Error or OSError when it cannot be written; the previous backup is kept in each case.
    """
    target = backup_path(store)
    part = target + PART_SUFFIX
    problem = _checked_copy(store, part)
    if problem is not None:
        raise StoreDamagedError(
            f"metadata store {store} fails its integrity check ({problem}); "
            f"its previous backup {target} was kept"
        )
    os.replace(part, target)
    fsync_path(os.path.dirname(os.path.abspath(target)))
    return target


def keep_backup(store: str) -> str | None:
    """`backup_store`, for after a run or an operation that wrote to the store (under the
    pipeline lock); returns the backup's path, or None when it could not be made.

    A failed backup is one logged line and never changes the outcome of what was done before
    it: the previous backup stays, and a damaged store is reported by its next open.
    """
    started = time.monotonic()
    try:
        target = backup_store(store)
    except (OSError, sqlite3.Error, PipelineError) as e:
        log.error("metadata store not backed up: %s", " ".join(str(e).split()) or type(e).__name__)
        return None
    log.info("metadata store backed up to %s in %.3fs", target, time.monotonic() - started)
    return target


def _aside_name(store: str, now: datetime) -> str:
    base = f"{store}{DAMAGED_INFIX}{now.strftime('%Y%m%dT%H%M%SZ')}"
    name, n = base, 1
    while any(os.path.lexists(name + s) for s in ("", *COMPANION_SUFFIXES)):
        n += 1
        name = f"{base}-{n}"
    return name


def restore_store(store: str, force: bool = False, now: datetime | None = None) -> str | None:
    """Puts the backup `<store>.backup` in place of the store file `store`.

    Call it under the pipeline lock. The backup is checked, copied (backup API) to a temporary
    file beside the store and checked again; the store, when there is one, is kept as
    `<store>.damaged-<UTC time>` (with any journal SQLite left beside it, so a later look at it
    sees what SQLite would), then the copy is renamed over it. The backup itself stays.
    Returns the path the replaced store was kept at, or None when there was no store.
    Raises StoreRestoreError, having changed nothing, when the backup is missing or fails
    quick_check, or when the store passes quick_check and `force` is False (a sound store is
    newer than its backup).
    """
    backup = backup_path(store)
    if not os.path.isfile(backup):
        raise StoreRestoreError(
            f"no backup of metadata store {store} at {backup}: nothing to restore "
            "(a backup is written after every completed run)"
        )
    problem = integrity_problem(backup)
    if problem is not None:
        raise StoreRestoreError(
            f"backup {backup} is damaged too ({problem}); nothing restored, {store} left as it was"
        )
    if not force and _has_content(store) and integrity_problem(store) is None:
        raise StoreRestoreError(
            f"metadata store {store} passes its integrity check; not replacing "
            f"it with its backup {backup}, which may be older (add --force to "
            "do it anyway)"
        )
    part = store + ".restore" + PART_SUFFIX
    problem = _checked_copy(backup, part)
    if problem is not None:
        raise StoreRestoreError(
            f"copy of backup {backup} fails its integrity check ({problem}); "
            f"nothing restored, {store} left as it was"
        )
    kept = None
    try:
        aside = _aside_name(store, now or datetime.now(UTC))
        for suffix in COMPANION_SUFFIXES:
            if os.path.exists(store + suffix):
                os.rename(store + suffix, aside + suffix)
        if os.path.lexists(store):
            # A second name for the old file, then one rename over it: the store's name never
            # goes missing, so no reader meanwhile starts a new, empty store there.
            try:
                os.link(store, aside)
            except OSError:
                os.rename(store, aside)
            kept = aside
        os.replace(part, store)
    except BaseException:
        _remove(part)
        raise
    fsync_path(os.path.dirname(os.path.abspath(store)))
    return kept
