#!/usr/bin/env bash
# One command from a fresh clone to a running Pushsite with demo channels:
# virtual environment, dependencies, database, demo channels, an admin login
# and an API key (printed), a ticker publishing to "scores", then the server.
# Embedded defaults: SQLite in the project folder and the in-memory channel layer.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
cd "$ROOT"
PORT="${PORT:-8000}"
URL="http://127.0.0.1:$PORT"

# Before anything else: seeding would revoke a running demo's key and start a second ticker.
if (: <"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "Port $PORT is in use: is the demo already running? Stop it first (Ctrl+C); for a second demo beside it, run PORT=$((PORT + 10)) scripts/demo.sh from another clone (in this folder it would seed again and revoke the running demo's key)" >&2
  exit 1
fi
ensure_venv requirements.txt

# Development settings for this server and for every `.venv/bin/python manage.py ...`
# run later in this folder (pushsite/settings.py reads .env; the environment wins).
if [ ! -f .env ]; then
  say "Writing .env (development: DJANGO_DEBUG=1 and a random DJANGO_SECRET_KEY)"
  secret="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(50))')"
  (umask 077 && printf '# Written by scripts/demo.sh for development; not for production.\nDJANGO_DEBUG=1\nDJANGO_SECRET_KEY=%s\n' "$secret" > .env)
fi

say "Preparing the database and the demo"
"$PY" manage.py migrate --noinput -v0
seed_output="$("$PY" manage.py seed_demo)"
api_key="$(printf '%s\n' "$seed_output" | tail -n 1)"

# The ticker's complaints (a refused key, a server not up yet) go to demo-ticker.log.
"$PY" manage.py demo_ticker --url "$URL" --api-key "$api_key" >demo-ticker.log 2>&1 &
ticker=$!
trap 'kill "$ticker" 2>/dev/null || true' EXIT

cat <<TEXT

$seed_output

  Open            $URL/            (channels; "scores" ticks every 3 s, ticker log: demo-ticker.log)
  Admin           $URL/admin/
  Subscribe       curl -N $URL/events/news/
  Publish         curl -X POST -H "Authorization: Bearer $api_key" \\
                       -d '{"event": "notice", "data": {"text": "Hello"}}' \\
                       $URL/api/channels/news/messages

TEXT
say "Serving on $URL (Ctrl+C to stop)"
"$PY" manage.py serve --port "$PORT"
