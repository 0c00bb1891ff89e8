#!/usr/bin/env bash
# Creates .venv-tools/ (ruff, mypy) from requirements-tools.lock when it is missing or stale, and
# prints the venv's bin folder as its last line. Stale: the lock file changed since it was built.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
want=$(sha256sum requirements-tools.lock | cut -d' ' -f1)
stamp=.venv-tools/.lock-sha256
if ! { [ -x .venv-tools/bin/ruff ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "setting up .venv-tools from requirements-tools.lock (about 10 s, once)..." >&2
  [ -x .venv-tools/bin/python ] || "$PYTHON" -m venv .venv-tools
  .venv-tools/bin/python -m pip install --quiet --no-deps -r requirements-tools.lock 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  .venv-tools/bin/ruff --version >/dev/null && .venv-tools/bin/mypy --version >/dev/null \
    || { echo "error: .venv-tools is incomplete after installing requirements-tools.lock" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
echo "$(pwd)/.venv-tools/bin"
