#!/usr/bin/env bash
# The benchmark in one command: builds bench/.venv (Pushsite's requirements plus
# bench/requirements.txt) on first use, then runs `python -m bench` with any
# arguments given (e.g. bench/run.sh --quick). Results: bench/results/*.json.
set -euo pipefail
source "$(dirname "$0")/../scripts/bootstrap.sh"
# The benchmark's own environment: django-eventstream never enters .venv.
VENV="$ROOT/bench/.venv"
PY="$VENV/bin/python"
cd "$ROOT"
ensure_venv bench/requirements.txt
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$PY" -m bench "$@"
