"""The metadata store a config names, as the core's connection settings.

The only place the MySQL password is read: the environment variable MLMD_MYSQL_PASSWORD, when a
command opens the store (never at import, never from a file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pipeline.config import MYSQL_PASSWORD_ENV, PipelineConfig
from pipeline.core.errors import ConfigError
from pipeline.core.store_backup import keep_backup

if TYPE_CHECKING:  # the store module loads ML Metadata; building a pipeline does not need it
    from pipeline.core.metadata import MetadataStore
from pipeline.core.store_settings import MySqlSettings


def store_settings(config: PipelineConfig, environ: Mapping[str, str] | None = None) -> MySqlSettings | None:
    """None for the embedded SQLite store, else the MySqlSettings of `config.metadata` with the
    password from `environ` (default: the process environment).

    Raises ConfigError (exit 2) when the backend is "mysql" and MLMD_MYSQL_PASSWORD is unset.
    """
    m = config.metadata
    if m.backend != "mysql":
        return None
    environ = os.environ if environ is None else environ
    if MYSQL_PASSWORD_ENV not in environ:
        raise ConfigError(
            f"metadata store mysql {m.user}@{m.host}:{m.port}/{m.database}: set the "
            f"environment variable {MYSQL_PASSWORD_ENV} to the account's password"
        )
    return MySqlSettings(
        host=m.host,
        port=m.port,
        database=m.database,
        user=m.user,
        password=environ[MYSQL_PASSWORD_ENV],
        skip_db_creation=m.skip_db_creation,
        pipeline_name=m.pipeline_name,
    )


def back_up_after_run(store: MetadataStore) -> None:
    """The pipeline's `store_written` hook: once a run's record is final, a SQLite store is
    backed up beside itself (`keep_backup`: a failed backup is one logged line); a MySQL store
    is backed up by its server's tools."""
    if store.path is not None:
        keep_backup(store.path)
