#!/usr/bin/env bash
# Install the Debian packages the tests drive that pip cannot bring: the headless browser the approver page's
# end-to-end test drives (Debian's chromium, and its driver for anyone who prefers WebDriver) and libfaketime's
# `faketime`, which runs a process with its clock moved (tests/integration/reliability/test_clock_skew.py), and Prometheus's
# `promtool`, which tests the shipped alert rules (tests/unit/ops/test_alerts_new_series.py; Debian's `prometheus` package,
# whose server is not started here).
# Idempotent; needs root (or sudo) and apt. `make test` calls this first.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -eq 0 ]; then
  echo "chromium present: $(chromium --version 2>/dev/null || echo unknown version); faketime and promtool present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "browser_deps.sh: need root or sudo to apt-get install ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${missing[@]}"
chromium --version
