"""One run at a time per pipeline root: an exclusive `fcntl` lock on `<root>/.pipeline.lock`.

The kernel drops the lock when its holder dies (even by SIGKILL), so a crashed run never
blocks the next one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import time

from pipeline.core.errors import LockTimeoutError

log = logging.getLogger(__name__)


PIPELINE_LOCK_FILE = ".pipeline.lock"


def pipeline_lock_path(pipeline_root: str) -> str:
    """The lock file that lets one run at a time use a pipeline root."""
    return os.path.join(pipeline_root, PIPELINE_LOCK_FILE)


@contextlib.contextmanager
def exclusive_lock(path: str, timeout_s: float, poll_s: float = 0.5, what: str = "pipeline root"):
    """Holds an exclusive lock on `path` for the `with` block.

    Waits up to `timeout_s` seconds for another holder, then raises LockTimeoutError naming the
    lock file and the holder's pid (as it wrote it).
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
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
                        f"gave up after waiting {timeout_s:g}s") from None
                if not announced:
                    log.info("waiting up to %gs for the run with pid %s to release %s",
                             timeout_s, holder, path)
                    announced = True
                time.sleep(poll_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode("ascii"), 0)
        yield
    finally:
        os.close(fd)
