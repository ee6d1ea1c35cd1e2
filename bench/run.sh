#!/usr/bin/env bash
# The benchmark in one command: builds bench/.venv (Pushsite's requirements plus
# bench/requirements.txt) on first use, then runs `python -m bench` with any
# arguments given (e.g. bench/run.sh --quick). Results: bench/results/*.json.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/bench/.venv"
if [ ! -x "$VENV/bin/python" ] || [ "$ROOT/bench/requirements.txt" -nt "$VENV/.installed" ] \
    || [ "$ROOT/requirements.txt" -nt "$VENV/.installed" ]; then
    python3.11 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        -r "$ROOT/requirements.txt" -r "$ROOT/bench/requirements.txt" 2>&1 | grep -v "^WARNING: Location" || true
    touch "$VENV/.installed"
fi
cd "$ROOT"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec "$VENV/bin/python" -m bench "$@"
