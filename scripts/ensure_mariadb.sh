#!/usr/bin/env bash
# Starts (or reuses) a private MariaDB server for the ML Metadata tests and benchmark, installing
# Debian's mariadb-server with apt-get when it is missing (needs root).
#
# The server is this checkout's own: datadir, socket, pid file and log under $MARIADB_DIR
# (default .cache/mariadb, ignored by git), TCP on 127.0.0.1:$MARIADB_PORT. Without MARIADB_PORT
# a new server takes 33306, or the next free port when another checkout's server (or anything
# else) holds it; a running server keeps its port, and the line printed last says which. A
# MARIADB_PORT that is taken is refused before any server or datadir is created. It
# keeps running after the script (and the tests) end, so the next call reuses it in well under a
# second; stop it with: kill "$(cat .cache/mariadb/mariadbd.pid)".
#
# Creates the account $MARIADB_TEST_USER (default mlmd_test) with mysql_native_password, allowed
# to create and use every database named mlmd_*. Its password is read from MLMD_MYSQL_PASSWORD
# (required) and set on every call, so a caller may pick a fresh one each time; it is passed to
# the server on stdin, never on a command line, and never written to a file.
#
# Prints the connection settings as shell assignments (no password):
#   MARIADB_HOST=127.0.0.1 MARIADB_PORT=33306 MARIADB_USER=mlmd_test MARIADB_SOCKET=...
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="${MARIADB_DIR:-$PWD/.cache/mariadb}"
PORT="${MARIADB_PORT:-}"
USER_NAME="${MARIADB_TEST_USER:-mlmd_test}"
SOCKET="$DIR/mariadbd.sock"
PIDFILE="$DIR/mariadbd.pid"
: "${MLMD_MYSQL_PASSWORD:?set MLMD_MYSQL_PASSWORD to the password the test account should have}"

if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: mariadb-server is not installed and cannot be installed here (needs root and apt-get)" >&2
    exit 1
  fi
  echo "installing Debian's mariadb-server for the ML Metadata tests..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends mariadb-server >/dev/null; } \
    || { echo "error: apt-get could not install mariadb-server" >&2; exit 1; }
fi
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

mkdir -p "$DIR"
# Two test sessions starting at once must not both initialise or start the server (the server
# itself must not inherit this descriptor, or it would hold the lock for its whole life).
exec 9>"$DIR/.ensure.lock"
flock 9

admin() { mariadb --no-defaults --protocol=socket --socket="$SOCKET" -uroot "$@"; }
alive() { admin -e "SELECT 1" >/dev/null 2>&1; }
# True when something accepts connections on 127.0.0.1:$1.
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! alive; then
  # Servers of other checkouts starting at the same moment must not pick the same free port:
  # the machine-wide lock is held from the probe until this server listens.
  exec 8>"${TMPDIR:-/tmp}/mlmd-test-mariadb-ports.lock"
  flock 8
  if [ -z "$PORT" ]; then
    PORT=33306
    while port_taken "$PORT"; do
      PORT=$((PORT + 1))
      [ "$PORT" -le 33405 ] || { echo "error: no free port for the private MariaDB server in 127.0.0.1:33306-33405" >&2; exit 1; }
    done
  elif port_taken "$PORT"; then
    echo "error: MARIADB_PORT=$PORT is already in use on 127.0.0.1 (unset MARIADB_PORT to take a free port)" >&2
    exit 1
  fi
  as_root=()
  [ "$(id -u)" = 0 ] && as_root=(--user=root)
  if [ ! -d "$DIR/data/mysql" ]; then
    rm -rf "$DIR/data"
    mariadb-install-db --no-defaults --datadir="$DIR/data" "${as_root[@]}" \
      --auth-root-authentication-method=socket --skip-test-db >"$DIR/install.log" 2>&1 \
      || { echo "error: mariadb-install-db failed; see $DIR/install.log" >&2; exit 1; }
  fi
  # Durability settings are relaxed: this server holds test data only.
  setsid "$MARIADBD" --no-defaults "${as_root[@]}" --datadir="$DIR/data" --socket="$SOCKET" \
    --pid-file="$PIDFILE" --log-error="$DIR/error.log" --port="$PORT" --bind-address=127.0.0.1 \
    --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
    --innodb-flush-log-at-trx-commit=2 --max-connections=200 </dev/null >/dev/null 2>&1 8>&- 9>&- &
  for _ in $(seq 1 120); do
    alive && break
    sleep 0.25
  done
  alive || { echo "error: the private MariaDB server did not start on 127.0.0.1:$PORT; see $DIR/error.log" >&2; exit 1; }
  exec 8>&-
fi
# The port the server listens on (a reused server keeps the one it started with).
LISTENING=$(admin -N -B -e "SELECT @@port") \
  || { echo "error: the private MariaDB server in $DIR does not answer on its socket; see $DIR/error.log" >&2; exit 1; }
if [ -n "$PORT" ] && [ "$PORT" != "$LISTENING" ]; then
  echo "warning: MARIADB_PORT=$PORT ignored: the running server in $DIR listens on $LISTENING (stop it to move it)" >&2
fi
PORT=$LISTENING

# The password goes to the server on stdin only (a command line is visible to every user).
sql_password=${MLMD_MYSQL_PASSWORD//\\/\\\\}
sql_password=${sql_password//\'/\\\'}
admin <<SQL
CREATE USER IF NOT EXISTS '$USER_NAME'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('$sql_password');
ALTER USER '$USER_NAME'@'127.0.0.1' IDENTIFIED VIA mysql_native_password USING PASSWORD('$sql_password');
GRANT ALL PRIVILEGES ON \`mlmd\\_%\`.* TO '$USER_NAME'@'127.0.0.1';
FLUSH PRIVILEGES;
SQL
echo "MARIADB_HOST=127.0.0.1 MARIADB_PORT=$PORT MARIADB_USER=$USER_NAME MARIADB_SOCKET=$SOCKET"
