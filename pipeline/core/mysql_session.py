"""A plain client connection to a MySQL / MariaDB metadata store (PyMySQL), for what
ML Metadata's own client cannot do: say clearly why a connection fails, check that the database
exists, and hold the run lock (`pipeline.core.store_lock`).

Every failure is one line naming host, port and database, never the password.
"""

from __future__ import annotations

import re

import pymysql

from pipeline.core.errors import StoreSettingsError
from pipeline.core.store_settings import MySqlSettings

# What MySQL takes as an unquoted database name (the name is put into SQL as it is).
_DATABASE_NAME = re.compile(r"[A-Za-z0-9_$]{1,64}")


def _reason(settings: MySqlSettings, error: Exception) -> str:
    args = error.args
    text = str(args[1]) if len(args) > 1 else str(error)
    return settings.scrub(" ".join(text.split())) or type(error).__name__


def connect(settings: MySqlSettings) -> pymysql.connections.Connection:
    """Opens a connection to the server (no database selected; autocommit).

    Raises StoreSettingsError (exit 2) naming `host:port/database` when the server cannot be
    reached or refuses the login.
    """
    try:
        return pymysql.connect(
            host=settings.host,
            port=settings.port,
            user=settings.user,
            password=settings.password,
            connect_timeout=settings.connect_timeout_s,
            autocommit=True,
            charset="utf8mb4",
            # Plain TCP, as ML Metadata's own connection (no TLS options are
            # passed to it); a TLS context would also cost ~0.1 s per connect.
            ssl_disabled=True,
        )
    except pymysql.MySQLError as e:
        raise StoreSettingsError(
            f"metadata store {settings.describe()}: cannot connect: {_reason(settings, e)}"
        ) from None


def database_exists(connection, settings: MySqlSettings) -> bool:
    """Whether `settings.database` exists on the server (and this user may see it)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (settings.database,)
        )
        return cursor.fetchone() is not None


def check_reachable(settings: MySqlSettings) -> None:
    """Connects once and checks the database, creating it when missing unless
    `skip_db_creation`, so that bad settings fail with one clear line before ML Metadata (whose
    client reports a failed login with an empty message) sees them.

    Raises StoreSettingsError when the server cannot be reached, refuses the login, or the
    database is missing and `skip_db_creation` forbids creating it (or the account may not).
    """
    if not _DATABASE_NAME.fullmatch(settings.database):
        raise StoreSettingsError(
            f"metadata store {settings.describe()}: database name {settings.database!r} "
            "must be 1 to 64 letters, digits, '_' or '$'"
        )
    connection = connect(settings)
    try:
        if not database_exists(connection, settings):
            if settings.skip_db_creation:
                raise StoreSettingsError(
                    f"metadata store {settings.describe()}: database {settings.database!r} does not exist "
                    "(metadata.skip_db_creation = true: create it, or set skip_db_creation = false)"
                )
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{settings.database}`")
    except pymysql.MySQLError as e:
        raise StoreSettingsError(f"metadata store {settings.describe()}: {_reason(settings, e)}") from None
    finally:
        connection.close()
