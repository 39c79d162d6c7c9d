#!/usr/bin/env sh
# pobatch launcher for Linux/macOS: sets itself up on first use, then runs pobatch.
#   ./run.sh demo              the demo batch end to end
#   ./run.sh test [pytest args] the test suite
#   ./run.sh run orders.csv --base-url https://yourcompany.coupahost.com
set -eu
cd "$(dirname "$0")"

need_browser() {
  for b in chromium chromium-browser google-chrome microsoft-edge; do
    command -v "$b" >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 1
  done
  command -v msedgedriver >/dev/null 2>&1 && return 1
  return 0
}

if need_browser; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "Installing Chromium and its driver (Debian packages chromium, chromium-driver)..." >&2
    $SUDO apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >&2
  else
    echo "No Chromium/Chrome/Edge with its driver found: install one, or pass --browser-binary and --driver." >&2
  fi
fi

PY=${PYTHON:-python3}
stamp=.venv/.pobatch-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
  echo "Setting up pobatch in .venv (first run only)..." >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]" >&2
  touch "$stamp"
fi

if [ "${1:-}" = "test" ]; then
  shift
  exec .venv/bin/python -m pytest "$@"
fi
if [ $# -eq 0 ]; then
  exec .venv/bin/pobatch --help
fi
exec .venv/bin/pobatch "$@"
