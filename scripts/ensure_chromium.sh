#!/usr/bin/env bash
# Installs Debian's chromium for the report's browser test when it is missing (needs root and apt).
set -euo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing chromium for the report test (Debian package)..." >&2
  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
    || echo "warning: apt-get could not install chromium; the report browser test will fail under CI" >&2
else
  echo "warning: chromium is not installed and cannot be installed here; the report's browser test will skip (or fail under CI)" >&2
fi
