"""scripts/ensure_mariadb.sh with a second private server on the machine: when another
checkout's server (here the session's own, from the `mariadb` fixture) holds the port, a new
server takes the next free one and says so; a running server is reused on its own port; a
MARIADB_PORT that is taken is refused in one line before any server or datadir is created."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pymysql
from mariadb_server import ENSURE


def _ensure(directory, password, port=None):
    env = dict(
        os.environ, MARIADB_DIR=str(directory), MLMD_MYSQL_PASSWORD=password, MARIADB_TEST_USER="mlmd_second"
    )
    env.pop("MARIADB_PORT", None)
    if port is not None:
        env["MARIADB_PORT"] = str(port)
    return subprocess.run([ENSURE], env=env, capture_output=True, text=True, timeout=600)


def _settings(result) -> dict:
    return dict(item.split("=", 1) for item in result.stdout.strip().splitlines()[-1].split())


def _stop(directory) -> None:
    pid_file = directory / "mariadbd.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    for _ in range(120):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.25)
    os.kill(pid, signal.SIGKILL)


def test_a_second_server_takes_a_free_port_and_is_reused_on_it(mariadb, tmp_path):
    directory = tmp_path / "second"
    try:
        first = _ensure(directory, "pw-second-1")
        assert first.returncode == 0, first.stderr
        port = int(_settings(first)["MARIADB_PORT"])
        pid = (directory / "mariadbd.pid").read_text().strip()
        assert port != mariadb.port
        with pymysql.connect(host="127.0.0.1", port=port, user="mlmd_second", password="pw-second-1") as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT @@datadir")
                assert cursor.fetchone()[0].startswith(str(directory))

        again = _ensure(directory, "pw-second-2")
        assert again.returncode == 0, again.stderr
        assert int(_settings(again)["MARIADB_PORT"]) == port
        assert (directory / "mariadbd.pid").read_text().strip() == pid  # the same server, not a new one
        with pymysql.connect(host="127.0.0.1", port=port, user="mlmd_second", password="pw-second-2") as conn:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone()[0] == 1
    finally:
        _stop(directory)


def test_a_taken_mariadb_port_is_refused_in_one_line_before_any_server_or_datadir_is_created(
    mariadb, tmp_path
):
    directory = tmp_path / "third"
    result = _ensure(directory, "pw-third", port=mariadb.port)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: MARIADB_PORT={mariadb.port} is already in use on 127.0.0.1 "
        "(unset MARIADB_PORT to take a free port)"
    )
    assert not (directory / "data").exists()
    assert not (directory / "mariadbd.pid").exists()
