# Shared by scripts/demo.sh and scripts/test.sh: a virtual environment built
# from the repo's own requirement files (re-installed when they change).
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

find_python() {
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  echo "Pushsite needs Python 3.11 (python3.11 on PATH)." >&2
  return 1
}

ensure_venv() {
  local requirements="$1" stamp
  if [ ! -x "$PY" ]; then
    say "Creating the virtual environment in ${VENV#"$ROOT"/}"
    "$(find_python)" -m venv "$VENV"
  fi
  stamp="$VENV/.installed-$(cat "$ROOT/requirements.txt" "$ROOT/$requirements" | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "Installing $requirements"
    # (Filtered: some machines' pip configuration names mirror folders that
    # do not exist, and pip warns about each one for every package.)
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip 2> >(grep -v '^WARNING: Location' >&2)
    "$PY" -m pip install --quiet --disable-pip-version-check -r "$ROOT/$requirements" 2> >(grep -v '^WARNING: Location' >&2)
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
}
