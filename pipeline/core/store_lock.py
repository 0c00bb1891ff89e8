"""One run at a time per pipeline across machines: a MySQL / MariaDB named lock (`GET_LOCK`)
held in the shared metadata store, on a connection of its own for the run's life.

The server releases the lock when that connection ends, so a killed run (or a lost machine)
never blocks the next run; it also means a run whose connection was lost no longer holds it,
and must stop: `StoreLock.check` says so before each step and before each commit.
"""

from __future__ import annotations

import logging
import time

import pymysql

from pipeline.core.errors import LockTimeoutError, StoreUnavailableError
from pipeline.core.mysql_session import connect
from pipeline.core.store_settings import MySqlSettings, lock_name

log = logging.getLogger(__name__)
# The largest wait_timeout MySQL and MariaDB accept (one year).
LOCK_SESSION_WAIT_TIMEOUT_S = 31536000


class StoreLock:
    """The run lock of pipeline `identity` in the store of `settings`, once acquired."""

    def __init__(self, settings: MySqlSettings, identity: str):
        self.settings = settings
        self.identity = identity
        self.name = lock_name(settings, identity)
        self._connection: pymysql.connections.Connection | None = None

    def _lost(self, why: str) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"lost the run lock of pipeline {self.identity!r} in the metadata store {self.settings.where()} "
            f"({why}); this run stops, the next run recovers what it left"
        )

    def _query(self, sql: str, *args):
        """The first row of `sql` on the lock's connection; StoreUnavailableError without one."""
        if self._connection is None:
            raise self._lost("it was never taken")
        with self._connection.cursor() as cursor:
            cursor.execute(sql, args)
            return cursor.fetchone()

    def acquire(self, timeout_s: float) -> None:
        """Takes the lock, waiting up to `timeout_s` seconds for the run that holds it.

        Raises StoreSettingsError when the server cannot be reached (see `mysql_session.connect`),
        LockTimeoutError (exit 4) naming the pipeline, the store and the holder's connection id
        when the wait runs out, StoreUnavailableError when the connection fails while waiting.
        """
        self._connection = connect(self.settings)
        try:
            # The connection idles for the whole run (a training takes longer than the 600 s some
            # managed servers allow): a dropped connection would release the lock mid-run.
            self._query("SET SESSION wait_timeout = %s", LOCK_SESSION_WAIT_TIMEOUT_S)
            (got,) = self._query("SELECT GET_LOCK(%s, 0)", self.name)
            if got != 1:
                (holder,) = self._query("SELECT IS_USED_LOCK(%s)", self.name)
                log.info(
                    "waiting up to %gs for the run on connection %s of %s to release pipeline %r",
                    timeout_s,
                    holder,
                    self.settings.where(),
                    self.identity,
                )
                started = time.monotonic()
                (got,) = self._query("SELECT GET_LOCK(%s, %s)", self.name, float(timeout_s))
                if got != 1:
                    raise LockTimeoutError(
                        f"another run (connection {holder} of the metadata store {self.settings.where()}) "
                        f"holds the lock on pipeline {self.identity!r}; gave up after waiting "
                        f"{time.monotonic() - started:.0f}s (lock_timeout_s = {timeout_s:g})"
                    )
        except pymysql.MySQLError as e:
            self.release()
            raise self._lost(f"connection failed while taking it: {self.settings.scrub(str(e))}") from None
        except BaseException:
            self.release()
            raise

    def check(self) -> None:
        """Raises StoreUnavailableError unless this connection still holds the lock."""
        if self._connection is None:
            raise self._lost("it was never taken")
        try:
            (held,) = self._query("SELECT IS_USED_LOCK(%s) = CONNECTION_ID()", self.name)
        except pymysql.MySQLError as e:
            raise self._lost(f"connection lost: {self.settings.scrub(' '.join(str(e).split()))}") from None
        if held != 1:
            raise self._lost("the server no longer counts it as this run's")

    def release(self) -> None:
        """Releases the lock and closes its connection; a connection already gone is fine."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT RELEASE_LOCK(%s)", (self.name,))
        except pymysql.MySQLError:
            pass  # the server released it with the connection
        finally:
            try:
                connection.close()
            except pymysql.MySQLError:
                pass
