"""One run at a time per pipeline root: an exclusive `fcntl` lock on `<root>/.pipeline.lock`;
with a shared metadata store, also per pipeline across machines (`run_lock`).

The kernel drops the lock when its holder dies (even by SIGKILL), so a crashed run never
blocks the next one; the database server does the same for the store's lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time

from pipeline.core.errors import LockTimeoutError, write_fault
from pipeline.core.store_settings import MySqlSettings, pipeline_identity

log = logging.getLogger(__name__)


PIPELINE_LOCK_FILE = ".pipeline.lock"


def pipeline_lock_path(pipeline_root: str) -> str:
    """The lock file that lets one run at a time use a pipeline root."""
    return os.path.join(pipeline_root, PIPELINE_LOCK_FILE)


@contextlib.contextmanager
def exclusive_lock(path: str, timeout_s: float, poll_s: float = 0.5, what: str = "pipeline root"):
    """Holds an exclusive lock on `path` for the `with` block.

    Waits up to `timeout_s` seconds for another holder, then raises LockTimeoutError naming the
    lock file and the holder's pid (as it wrote it). Raises WriteFaultError when the lock file
    cannot be created (a read-only or full file system).
    """
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only or full root: one line, before anything else is tried
        raise write_fault(what, e) from e
    try:
        deadline = time.monotonic() + timeout_s
        announced = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
                if time.monotonic() >= deadline:
                    raise LockTimeoutError(
                        f"another run (pid {holder}) holds the lock on {what} {path}; "
                        f"gave up after waiting {timeout_s:g}s"
                    ) from None
                if not announced:
                    log.info(
                        "waiting up to %gs for the run with pid %s to release %s", timeout_s, holder, path
                    )
                    announced = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)


class RunLock:
    """What `run_lock` yields: `check()` raises StoreUnavailableError when a shared store's
    lock was lost (its connection ended); with a SQLite store there is nothing to lose."""

    def __init__(self, store_lock=None):
        self._store_lock = store_lock

    def check(self) -> None:
        """Raises StoreUnavailableError unless the run still holds every lock it took."""
        if self._store_lock is not None:
            self._store_lock.check()


@contextlib.contextmanager
def run_lock(pipeline_root: str, timeout_s: float, settings: MySqlSettings | None = None):
    """Holds the pipeline root's lock and, with a MySQL store (`settings`), the pipeline's
    lock in that store (`store_lock.StoreLock`), for the `with` block; yields a `RunLock`.

    Both together wait at most `timeout_s` seconds, then raise LockTimeoutError (exit 4).
    Raises StoreSettingsError (exit 2) when the store cannot be reached.
    """
    started = time.monotonic()
    with exclusive_lock(pipeline_lock_path(pipeline_root), timeout_s):
        if settings is None:
            yield RunLock()
            return
        from pipeline.core.store_lock import StoreLock  # noqa: PLC0415  pymysql loads only for a MySQL store (not for the embedded one, nor the report)

        store_lock = StoreLock(settings, pipeline_identity(settings, pipeline_root))
        store_lock.acquire(max(0.0, timeout_s - (time.monotonic() - started)))
        try:
            yield RunLock(store_lock)
        finally:
            store_lock.release()
