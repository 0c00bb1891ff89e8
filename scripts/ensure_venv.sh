#!/usr/bin/env bash
# Creates .venv at the repository root from requirements.lock when it is missing or stale.
# Stale means the lock file changed since the venv was built (a stamp holds its sha256).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
want=$(sha256sum requirements.lock setup.py | sha256sum | cut -d' ' -f1)
stamp=.venv/.lock-sha256
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "setting up .venv from requirements.lock (a few minutes, once)..." >&2
"$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"error: Python 3.11 is required (TensorFlow 2.15 / TFDV 1.15 wheels), found {sys.version.split()[0]}")
PY
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip==23.2.1" 2>&1 | grep -v "^WARNING: Location" >&2 || true
# Every package is pinned in the lock file, so pip resolves nothing (no backtracking).
.venv/bin/python -m pip install --quiet --no-deps -r requirements.lock 2>&1 | grep -v "^WARNING: Location" >&2 || true
.venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | grep -v "^WARNING: Location" >&2 || true
TF_CPP_MIN_LOG_LEVEL=3 .venv/bin/python -W ignore -c "import tensorflow, tensorflow_data_validation, tensorflow_model_analysis, apache_beam, ml_metadata, pipeline, components" \
  || { echo "error: .venv is incomplete after installing requirements.lock" >&2; exit 1; }
echo "$want" > "$stamp"
echo ".venv ready" >&2
