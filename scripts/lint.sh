#!/usr/bin/env bash
# The static checks CI runs before the tests: ruff's linter, ruff's formatter (check only) and
# mypy on the typed layers (mypy.ini). Exit 1 on the first finding. Arguments: none.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(scripts/ensure_tools.sh | tail -n 1)
echo "ruff check" >&2
"$bin/ruff" check .
echo "ruff format --check" >&2
"$bin/ruff" format --check .
echo "mypy" >&2
"$bin/mypy"
