"""A real MariaDB server for the shared-metadata-store tests: `scripts/ensure_mariadb.sh` installs
Debian's mariadb-server when missing and starts (or reuses) this checkout's private instance.

Each test session gets an account of its own with a random password (dropped at the end), so
sessions running at the same time never change each other's login; each test takes fresh
databases named mlmd_<random>.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENSURE = os.path.join(PROJECT, "scripts", "ensure_mariadb.sh")


@dataclass
class MariaDB:
    """A running server and this session's account on it."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    socket: str
    databases: set = field(default_factory=set)

    def new_database(self) -> str:
        """A database name no one has used (ML Metadata creates it on first connection);
        dropped by `stop`."""
        name = "mlmd_" + secrets.token_hex(6)
        self.databases.add(name)
        return name

    def admin(self, sql: str) -> str:
        """Runs `sql` as the server's root over its socket; returns the tab-separated rows."""
        result = subprocess.run(
            [
                "mariadb",
                "--no-defaults",
                "--protocol=socket",
                f"--socket={self.socket}",
                "-uroot",
                "-N",
                "-B",
                "-e",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"mariadb admin query failed: {result.stderr.strip()}")
        return result.stdout

    def settings(self, database: str, **extra):
        """The core's MySqlSettings for `database` with this session's account."""
        from pipeline.core.store_settings import MySqlSettings

        return MySqlSettings(
            host=self.host, port=self.port, database=database, user=self.user, password=self.password, **extra
        )

    def config_section(self, database: str, **extra) -> str:
        """A TOML `[metadata]` section for `database` (without the password, as in real use)."""
        values = {
            "backend": "mysql",
            "host": self.host,
            "port": self.port,
            "database": database,
            "user": self.user,
            **extra,
        }
        lines = ["[metadata]"]
        for key, value in values.items():
            lines.append(
                f"{key} = {str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, str) else value}"
            )
        return "\n".join(lines).replace("'", '"') + "\n"

    def env(self) -> dict:
        """The process environment a pipeline command needs to log in."""
        return dict(os.environ, MLMD_MYSQL_PASSWORD=self.password)

    def kill_connections(self) -> int:
        """Ends every server connection of this session's account (as a network failure
        would); returns how many there were."""
        ids = self.admin(f"SELECT id FROM information_schema.PROCESSLIST WHERE user = '{self.user}'").split()
        for connection_id in ids:
            try:
                self.admin(f"KILL {int(connection_id)}")
            except RuntimeError:
                pass  # it ended by itself meanwhile
        return len(ids)


def start() -> MariaDB:
    """Starts (or reuses) the server and creates this session's account."""
    user = "mlmd_" + secrets.token_hex(4)
    password = "pw-" + secrets.token_urlsafe(18)
    result = subprocess.run(
        [ENSURE],
        env=dict(os.environ, MLMD_MYSQL_PASSWORD=password, MARIADB_TEST_USER=user),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{ENSURE} failed: {result.stderr.strip()[-2000:]}")
    values = dict(item.split("=", 1) for item in result.stdout.strip().splitlines()[-1].split())
    return MariaDB(
        host=values["MARIADB_HOST"],
        port=int(values["MARIADB_PORT"]),
        user=values["MARIADB_USER"],
        password=password,
        socket=values["MARIADB_SOCKET"],
    )


def stop(server: MariaDB) -> None:
    """Drops this session's databases and account; the server keeps running for the next."""
    for database in sorted(server.databases):
        server.admin(f"DROP DATABASE IF EXISTS `{database}`")
    server.admin(f"DROP USER IF EXISTS '{server.user}'@'127.0.0.1'")
