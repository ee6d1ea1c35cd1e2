# Finds, starts or installs what the system and browser tests need, and says
# plainly what it could not get. Sourced by scripts/test.sh.
#   PUSHSITE_TEST_REDIS_SERVER  redis-server binary (tests run their own instances)
#   PUSHSITE_TEST_POSTGRES_URL  a PostgreSQL server tests may create databases on
#   PUSHSITE_TEST_CHROMIUM      Debian's chromium, for Playwright
# shellcheck shell=bash

MISSING=()

can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 || true
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

ensure_redis() {
  local binary
  binary="$(command -v redis-server || true)"
  if [ -z "$binary" ] && can_install; then
    say "Installing redis-server (Debian package)"
    apt_install redis-server && binary="$(command -v redis-server || true)"
  fi
  if [ -n "$binary" ]; then
    export PUSHSITE_TEST_REDIS_SERVER="$binary"
    echo "    Redis: $binary ($("$binary" --version | cut -d' ' -f3))"
  else
    MISSING+=("Redis (redis-server not installed and cannot install: not root or no apt-get)")
  fi
}

postgres_answers() {
  command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432
}

ensure_postgres() {
  local url="${PUSHSITE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
  if ! postgres_answers && command -v pg_ctlcluster >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "Starting PostgreSQL"
    for version in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
    done
  fi
  if ! postgres_answers && ! command -v pg_ctlcluster >/dev/null 2>&1 && can_install; then
    say "Installing PostgreSQL (Debian package)"
    if apt_install postgresql; then
      for version in $(ls /etc/postgresql 2>/dev/null); do
        pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
      done
      # Debian's default is peer auth; the tests connect over TCP as postgres.
      su postgres -c "psql -qc \"ALTER USER postgres PASSWORD 'postgres'\"" >/dev/null 2>&1 || true
      url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
    fi
  fi
  if postgres_answers; then
    export PUSHSITE_TEST_POSTGRES_URL="$url"
    echo "    PostgreSQL: ${url%%@*}@… ($(pg_isready -h 127.0.0.1 -p 5432 | cut -d- -f2-))"
  else
    MISSING+=("PostgreSQL (nothing answers on 127.0.0.1:5432 and it cannot be started or installed here)")
  fi
}

ensure_chromium() {
  local binary=/usr/bin/chromium
  if [ ! -x "$binary" ] && can_install; then
    say "Installing chromium (Debian package)"
    apt_install chromium || true
  fi
  if [ -x "$binary" ]; then
    export PUSHSITE_TEST_CHROMIUM="$binary"
    echo "    Chromium: $("$binary" --version 2>/dev/null | head -n1)"
  else
    MISSING+=("Chromium (/usr/bin/chromium missing and cannot install: not root or no apt-get)")
  fi
}

report_missing() {
  if [ "${#MISSING[@]}" -gt 0 ]; then
    printf '\n\033[1;33mNOT AVAILABLE — the tests that need these will be reported as SKIPPED:\033[0m\n'
    printf '  - %s\n' "${MISSING[@]}"
    printf '\n'
    export PUSHSITE_TEST_MISSING="$(printf '%s; ' "${MISSING[@]}")"
  fi
}
