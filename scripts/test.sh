#!/usr/bin/env bash
# Runs the default test suite, setting up .venv first when needed. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_venv.sh
scripts/ensure_chromium.sh
scripts/ensure_systemd_analyze.sh
exec .venv/bin/python -m pytest "$@"
