#!/usr/bin/env bash
# Installs Debian's systemd package (for `systemd-analyze verify`, which tests/test_deploy.py runs
# on deploy/systemd/) when the command is missing (needs root and apt). It only installs files:
# nothing is started, and the machine's init is not changed.
set -euo pipefail
command -v systemd-analyze >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing systemd for the deploy unit check (Debian package)..." >&2
  { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null; } \
    || echo "warning: apt-get could not install systemd; the deploy unit check will fail under CI" >&2
else
  echo "warning: systemd-analyze is missing and cannot be installed here; the deploy unit check will skip (or fail under CI)" >&2
fi
