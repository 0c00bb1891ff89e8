"""Calls into ML Metadata that survive a MySQL deadlock, and say so clearly when the shared
store's connection is lost.

MySQL / InnoDB ends one of two conflicting transactions with error 1213 ("Deadlock found when
trying to get lock; try restarting transaction") and rolls it back whole, so running the same
call again is safe: it is retried a few times with growing pauses. A lost connection is not
retried (a write may have committed before the answer was lost); it stops the run with
StoreUnavailableError, and the next run recovers as after a crash.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from pipeline.core.errors import StoreUnavailableError

log = logging.getLogger(__name__)

DEADLOCK_MARKERS = ("Deadlock found", "errno: 1213", "(1213,")
CONNECTION_LOST_MARKERS = (
    "Lost connection to MySQL server",
    "MySQL server has gone away",
    "Can't connect to MySQL server",
    "Can't connect to local MySQL server",
    "mysql_real_connect failed",
)
ATTEMPTS = 5
FIRST_PAUSE_S = 0.05


def is_deadlock(error: BaseException) -> bool:
    """Whether `error` is MySQL's error 1213 as ML Metadata (or PyMySQL) reports it."""
    return any(marker in str(error) for marker in DEADLOCK_MARKERS)


def is_connection_lost(error: BaseException) -> bool:
    """Whether `error` says the connection to the MySQL server was lost or cannot be made."""
    return any(marker in str(error) for marker in CONNECTION_LOST_MARKERS)


def call_with_retry(
    call: Callable,
    *args,
    where: str = "the metadata store",
    attempts: int = ATTEMPTS,
    first_pause_s: float = FIRST_PAUSE_S,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs,
):
    """Returns call(*args, **kwargs), running it again (up to `attempts` times in all, pausing
    first_pause_s, then twice as long each time) while it fails with a deadlock.

    Raises the last deadlock error when every attempt deadlocked, StoreUnavailableError naming
    `where` when the connection was lost, and any other error unchanged.
    """
    pause = first_pause_s
    for attempt in range(1, attempts + 1):
        try:
            return call(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - ML Metadata raises plain and status errors alike
            if is_connection_lost(e):
                raise StoreUnavailableError(
                    f"metadata store {where}: connection lost ({' '.join(str(e).split())[:200]}); this run "
                    "stops, the next run recovers what it left"
                ) from None
            if not is_deadlock(e) or attempt == attempts:
                raise
            log.warning("metadata store %s: deadlock, retrying (%d of %d)", where, attempt, attempts - 1)
            sleep(pause)
            pause *= 2
    raise AssertionError("unreachable")


class RetryingStore:
    """An `ml_metadata.MetadataStore` whose every method goes through `call_with_retry`."""

    def __init__(self, store, where: str):
        self._store = store
        self._where = where

    def __getattr__(self, name: str):
        method = getattr(self._store, name)
        if not callable(method):
            return method
        return functools.partial(call_with_retry, method, where=self._where)
