#!/usr/bin/env bash
# Creates .venv-airflow/ (Apache Airflow, to schedule the pipeline: dags/mnist_pipeline.py) from
# requirements-airflow.lock when it is missing or stale, and prints the path of its `airflow`
# executable as its last line. Stale means the lock file changed since the venv was built (a stamp
# holds its sha256); a stale venv is built anew, so it holds exactly what the lock pins.
# Airflow has a venv of its own because it needs protobuf 7 and the pipeline's venv (.venv,
# scripts/ensure_venv.sh) pins protobuf 4.25 for TensorFlow 2.15.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
venv=.venv-airflow
want=$(sha256sum requirements-airflow.lock | cut -d' ' -f1)
stamp=$venv/.lock-sha256
if ! { [ -x $venv/bin/airflow ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; }; then
  echo "setting up $venv from requirements-airflow.lock (about a minute, once)..." >&2
  "$PYTHON" - <<'PY'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f"error: Python 3.11 is required (requirements-airflow.lock is compiled for it), found {sys.version.split()[0]}")
PY
  rm -rf $venv
  "$PYTHON" -m venv $venv
  $venv/bin/python -m pip install --quiet --upgrade "pip==23.2.1" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  # Every package is pinned in the lock file, so pip resolves nothing (no backtracking).
  $venv/bin/python -m pip install --quiet --no-deps -r requirements-airflow.lock 2>&1 \
    | grep -v "^WARNING: Location" >&2 || true
  # Importing Airflow writes a default airflow.cfg into AIRFLOW_HOME: check in a throwaway one.
  check_home=$(mktemp -d)
  trap 'rm -rf "$check_home"' EXIT
  AIRFLOW_HOME="$check_home" $venv/bin/python -c "import airflow.sdk, airflow.providers.standard.operators.bash" \
    && $venv/bin/python -m pip check >/dev/null \
    || { echo "error: $venv is incomplete after installing requirements-airflow.lock" >&2; exit 1; }
  echo "$want" > "$stamp"
  echo "$venv ready" >&2
fi
# The triggerer imports the DAG's new-span trigger (dags/mnist_span_trigger.py) by module name, and
# Airflow puts the dags folder on the path only while parsing DAGs: the venv puts it there always.
site=$($venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$(pwd)/dags" > "$site/mnist_pipeline_dags.pth"
echo "$(pwd)/$venv/bin/airflow"
