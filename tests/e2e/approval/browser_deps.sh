#!/usr/bin/env bash
# Install the headless browser the approver page's end-to-end test drives: Debian's chromium (and its driver,
# for anyone who prefers WebDriver). Idempotent; needs root (or sudo) and apt. `make test` may call this first.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium present: $(chromium --version 2>/dev/null || echo unknown version)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "browser_deps.sh: need root or sudo to apt-get install chromium" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium chromium-driver
chromium --version
