#!/usr/bin/env bash
# Runs the default test suite, setting up first what it needs when missing: .venv, Airflow's own
# .venv-airflow (for the scheduler tests), Chromium and systemd-analyze. Arguments go to pytest.
# Two pytest-xdist workers, each running whole test files (`--dist loadfile`: a module's fixtures
# are built once); PYTEST_WORKERS=0 runs everything in this one process.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_venv.sh
scripts/ensure_airflow.sh >/dev/null
scripts/ensure_chromium.sh
scripts/ensure_systemd_analyze.sh
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
