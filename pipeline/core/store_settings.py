"""Where a pipeline's ML Metadata lives, and which pipeline it is in a shared store.

Two backends:
- the embedded SQLite file `<pipeline_root>/metadata.sqlite` (no settings object: `None`);
- a shared MySQL / MariaDB database (`MySqlSettings`), which several pipeline roots and
  runner machines may use at once.

The password travels only inside `MySqlSettings` (it never appears in its repr, in
`describe`, or in any message that goes through `scrub`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

# The pipeline context of an embedded store: the file belongs to one pipeline root, and every
# store written before shared stores existed names its pipeline so.
EMBEDDED_PIPELINE_NAME = "mnist"
# MLMD keeps context names in a VARCHAR(255).
_MAX_CONTEXT_NAME = 255


@dataclass(frozen=True)
class MySqlSettings:
    """How to reach a MySQL / MariaDB metadata store.

    pipeline_name: this pipeline's name in the shared database ("" = its absolute pipeline
        root); runs with the same name share executions, caches, baselines and the run lock.
    skip_db_creation: True: the database must exist already (ML Metadata creates it otherwise).
    """

    host: str
    port: int
    database: str
    user: str
    password: str = field(default="", repr=False, compare=False)
    skip_db_creation: bool = False
    pipeline_name: str = ""
    connect_timeout_s: int = 10

    def where(self) -> str:
        """`host:port/database`, as every message about this store names it."""
        return f"{self.host}:{self.port}/{self.database}"

    def describe(self) -> str:
        """`mysql user@host:port/database` (never the password)."""
        return f"mysql {self.user}@{self.where()}"

    def scrub(self, text: str) -> str:
        """`text` with the password, should a library have echoed it, replaced by `***`."""
        return text.replace(self.password, "***") if self.password else text


def pipeline_identity(settings: MySqlSettings | None, pipeline_root: str) -> str:
    """The name of this pipeline's context in its store.

    Embedded store: always EMBEDDED_PIPELINE_NAME. Shared store: `settings.pipeline_name`, or
    the pipeline root's absolute real path (hashed when longer than MLMD allows a name).
    """
    if settings is None:
        return EMBEDDED_PIPELINE_NAME
    name = settings.pipeline_name or os.path.realpath(pipeline_root)
    if len(name) > _MAX_CONTEXT_NAME:
        name = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    return name


def lock_name(settings: MySqlSettings, identity: str) -> str:
    """The server-wide GET_LOCK name of one pipeline in one database (at most 64 characters,
    MySQL's limit)."""
    digest = hashlib.sha256(f"{settings.database}\0{identity}".encode()).hexdigest()
    return f"mnist_pipeline_run:{digest[:40]}"
