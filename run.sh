#!/usr/bin/env sh
# pobatch launcher for Linux/macOS: sets itself up on first use (and again after an update), then runs pobatch.
#   ./run.sh                    asks for the orders file, the portal address and the mode, then runs
#   ./run.sh orders.csv         the same, for this orders file
#   ./run.sh demo               the demo batch end to end
#   ./run.sh test [pytest args] the test suite (installs the test tools the first time)
#   ./run.sh run orders.csv --base-url https://yourcompany.coupahost.com [options]   any pobatch command
#   ./run.sh --yes ...          install missing system packages (Chromium) without asking; CI=true does too
# The logic lives in pobatch itself (pobatch start, pobatch run --sign-in-if-needed); this file only sets up.
set -eu
cd "$(dirname "$0")"

YES=0
[ "${CI:-}" = "true" ] && YES=1
while [ "${1:-}" = "--yes" ]; do YES=1; shift; done

have_browser() {
  for b in chromium chromium-browser google-chrome google-chrome-stable microsoft-edge microsoft-edge-stable; do
    command -v "$b" >/dev/null 2>&1 && return 0
  done
  return 1
}

# Only a missing browser needs system packages: a missing driver is fetched by webdriver-manager or
# Selenium Manager on first use (or put chromedriver on PATH on a PC without internet).
if ! have_browser; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo "
    cmd="${SUDO}apt-get install -y chromium chromium-driver"
    if [ "$YES" -eq 0 ]; then
      if [ -t 0 ]; then
        printf 'No Chromium, Chrome or Edge found. Install Chromium with "%s"? (Y/N) ' "$cmd" >&2
        read -r answer || answer=n
        case "$answer" in [Yy]*) YES=1 ;; esac
      fi
    fi
    if [ "$YES" -eq 1 ]; then
      echo "Running: ${SUDO}apt-get update && $cmd" >&2
      ${SUDO}apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive ${SUDO}apt-get install -y -qq chromium chromium-driver >&2
    else
      echo "No browser installed and none installed now. Install one yourself (e.g. $cmd), or run ./run.sh --yes." >&2
    fi
  else
    echo "No Chromium/Chrome/Edge found: install one, or pass --browser-binary and --driver." >&2
  fi
fi

PY=${PYTHON:-python3}
stamp=.venv/.pobatch-setup.cfg          # a copy of the setup.cfg it was installed from
test_stamp=.venv/.pobatch-test-setup.cfg

venv_works() {
  # A moved or half-installed venv: its python no longer starts, or pobatch no longer imports.
  .venv/bin/pobatch --version >/dev/null 2>&1
}

install() {  # $1: what to install (. or .[test]), $2: the stamp to write
  [ -x .venv/bin/python ] && .venv/bin/python -c "" >/dev/null 2>&1 || "$PY" -m venv --clear .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -e "$1" >&2
  cp setup.cfg "$2"
}

if ! cmp -s setup.cfg "$stamp" 2>/dev/null || ! venv_works; then
  echo "Setting up pobatch in .venv (first run, or after an update)..." >&2
  rm -f "$test_stamp"
  install . "$stamp"
fi

if [ "${1:-}" = "test" ]; then
  shift
  if ! cmp -s setup.cfg "$test_stamp" 2>/dev/null || ! .venv/bin/python -c "import pytest" >/dev/null 2>&1; then
    echo "Installing the test tools into .venv..." >&2
    install ".[test]" "$test_stamp"
  fi
  exec .venv/bin/python -m pytest "$@"
fi

# A run that could not start (exit 2: bad input or a missing piece) offers `pobatch doctor`, with the
# run's own portal, profile, browser and output options, so the person sees every missing piece at once.
doctor_with() {  # pobatch doctor with the options of "$@" that it knows (no eval: the values stay whole)
  keep=0
  for arg do
    shift
    if [ "$keep" -eq 1 ]; then set -- "$@" "$arg"; keep=0; continue; fi
    case "$arg" in
      --base-url|--profile|--browser|--driver|--browser-binary|--out|--grid|--site|--site-file)
        set -- "$@" "$arg"; keep=1 ;;
      --base-url=*|--profile=*|--browser=*|--driver=*|--browser-binary=*|--out=*|--grid=*|--site=*|--site-file=*)
        set -- "$@" "$arg" ;;
    esac
  done
  .venv/bin/pobatch doctor "$@"
}

run_pobatch() {
  rc=0
  .venv/bin/pobatch "$@" || rc=$?
  if [ "$rc" -eq 2 ]; then
    case "${1:-}" in
      start|run|demo)
        if [ -t 0 ] && [ -t 2 ]; then
          printf 'The run could not start. Check this PC with "pobatch doctor" now? (Y/N) ' >&2
          read -r answer || answer=n
          case "$answer" in [Yy]*) doctor_with "$@" >&2 || true ;; esac
        else
          echo 'The run could not start. "./run.sh doctor" checks this PC and says what to do.' >&2
        fi ;;
    esac
  fi
  exit "$rc"
}

if [ $# -eq 0 ]; then
  run_pobatch start
fi
if [ $# -eq 1 ] && [ -f "$1" ]; then
  run_pobatch start "$1"
fi
run_pobatch "$@"
