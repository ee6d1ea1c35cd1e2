#!/usr/bin/env bash
# The whole test suite, from a fresh clone: builds .venv from requirements-dev.txt,
# finds / starts / installs Redis, PostgreSQL and chromium (saying what it had to
# skip), checks lint, types and deploy settings, then runs pytest. Extra arguments go
# to pytest (e.g. scripts/test.sh -k streaming).
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
source "$(dirname "$0")/services.sh"
cd "$ROOT"
ensure_venv requirements-dev.txt

say "Services for the system and browser tests"
ensure_redis
ensure_postgres
ensure_chromium
report_missing

say "Lint (ruff)"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

say "Types (mypy)"
"$VENV/bin/mypy"

say "Architecture (import-linter: the core imports no feature)"
"$VENV/bin/lint-imports" --no-cache

say "Tests (pytest)"
"$PY" -m pytest "$@"
