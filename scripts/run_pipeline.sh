#!/usr/bin/env bash
# Runs the whole pipeline end to end (default: the MNIST shipped in data/mnist), setting up
# .venv first when needed. Arguments go to run_local.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_venv.sh
exec .venv/bin/python run_local.py "$@"
