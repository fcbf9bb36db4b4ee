#!/usr/bin/env bash
# Installs what the tests and checks need on a fresh Debian machine, and nothing that is
# already there: PostgreSQL server binaries (initdb, pg_ctl, postgres, createdb) for the
# store tests, Chromium with its driver and a CJK font for the web console's browser test
# (scripts/console-browser-test.sh), and the npm packages (buf) for the proto lint.
set -euo pipefail
cd "$(dirname "$0")/.."

have_pg() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

if ! have_pg; then
  echo "==> installing PostgreSQL server binaries"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL binaries (initdb) not found; install the 'postgresql' package" >&2
    exit 1
  fi
fi

# The console's browser test: Debian's chromium and chromium-driver, and a font with the
# Chinese glyphs the console shows (otherwise its screenshots show boxes).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-wqy-zenhei)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "not found: ${missing[*]}; install these Debian packages" >&2
    exit 1
  fi
fi

# initdb refuses to run as root; the test kit runs it as the 'postgres' system user then.
if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
  echo "==> creating the postgres system user"
  useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
fi

if [ ! -x node_modules/.bin/buf ]; then
  echo "==> installing buf (npm, pinned in package.json)"
  # `npm ci` refuses this lock file (optional per-platform packages of buf); `npm install`
  # installs the locked versions all the same.
  npm install --no-audit --no-fund --loglevel=error
fi
