#!/usr/bin/env bash
# The whole test suite, from a clean clone: installs and starts what the tests need, then runs
# every test. Safe to run again; each step skips what is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== [%ss] %s\n' "$SECONDS" "$*"; }

# --- PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`) ---------------------------
pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
if ! pg_up; then
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n 1)" main start || true
  fi
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
fi
if pg_up; then
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
  # Schemas left behind by earlier failed runs.
  psql -h 127.0.0.1 -U postgres -d test -tAc \
    "SELECT 'DROP SCHEMA ' || nspname || ' CASCADE;' FROM pg_namespace WHERE nspname LIKE 'cg_test_%'" \
    | psql -h 127.0.0.1 -U postgres -d test -q >/dev/null || true
elif [ "${CI:-}" = "true" ]; then
  echo "PostgreSQL is not reachable on 127.0.0.1:5432 and CI=true: failing" >&2
  exit 1
else
  echo "PostgreSQL is not reachable: its tests will be skipped" >&2
fi

# --- Chromium for the page tests, espeak-ng for their spoken microphone (Debian's) --------
if ! [ -x /usr/bin/chromium ] || ! [ -x /usr/bin/chromedriver ] || ! command -v espeak-ng >/dev/null; then
  log "installing chromium, chromium-driver and espeak-ng"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver espeak-ng >/dev/null
fi

# --- axe-core, the accessibility checker the page tests run in Chromium (npm registry) ---
AXE=.cache/axe-core-4.10.2.min.js
if ! [ -s "$AXE" ]; then
  log "fetching axe-core"
  mkdir -p .cache
  ( cd .cache && npm pack --silent axe-core@4.10.2 >/dev/null && tar -xzf axe-core-4.10.2.tgz package/axe.min.js \
      && mv package/axe.min.js axe-core-4.10.2.min.js && rm -rf package axe-core-4.10.2.tgz )
fi
export CALLGATE_TEST_AXE="$PWD/$AXE"

# --- Python peers: localstripe (the test Stripe) in a venv of the project's own ----------
VENV=.venv-test
if ! "$VENV/bin/python" -c "import localstripe" >/dev/null 2>&1; then
  log "installing localstripe into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "localstripe==1.15.10"
fi
export CALLGATE_TEST_PYTHON="$PWD/$VENV/bin/python"

# --- mongoeco (the test MongoDB; needs Python 3.13) ----------------------------------------
MVENV=.venv-mongo
if ! "$MVENV/bin/python" -c "import mongoeco, bson" >/dev/null 2>&1; then
  PY313=""
  for candidate in "$HOME/.pyenv/versions/3.13.0/bin/python" "$(command -v python3.13 || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then PY313="$candidate"; break; fi
  done
  if [ -n "$PY313" ]; then
    log "installing mongoeco into $MVENV"
    "$PY313" -m venv "$MVENV"
    "$MVENV/bin/pip" install --quiet --disable-pip-version-check "mongoeco==4.11.0" "pymongo==4.20.1"
  else
    echo "no Python 3.13 found: the MongoDB tests cannot run" >&2
  fi
fi
export CALLGATE_TEST_MONGO_PYTHON="$PWD/$MVENV/bin/python"

