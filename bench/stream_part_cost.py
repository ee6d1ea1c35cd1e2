"""What one streamed part costs, step by step, in this process (issue 17).

On a fresh database (SQLite in a temporary file, or ``DATABASE_URL``), for
``--parts`` NDJSON lines: parsing the body, the part's checks
(StreamPublication's numbering and limits, then ``store.prepared``), storing them
with ``store.store_batch`` in batches of ``writers.MAX_BATCH`` (what the group
commit does with a stream's chunks), and encoding each stored message's fan-out
frame. Each step: this process's CPU per part, the best of ``--rounds``.

    .venv/bin/python -m bench.stream_part_cost [--parts 6400] [--rounds 5]

Results go to docs/performance.md by hand; this prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_cpu(step: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    """The least process CPU seconds ``step`` took in ``rounds`` runs, and its last result."""
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.process_time()
        result = step()
        best = min(best, time.process_time() - started)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream_part_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--parts", type=int, default=6400)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="pushsite-part-cost-")
    os.environ.setdefault("DATABASE_URL", f"sqlite:///{workdir}/db.sqlite3")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-" + "x" * 50)
    os.environ.setdefault("DJANGO_LOG_LEVEL", "WARNING")

    import django

    django.setup()
    from django.core.management import call_command

    from events.provisioning import upsert_channel
    from events.publish import store, writers
    from events.publish.body_lines import NdjsonBody
    from events.publish.stream_publication import StreamPublication

    call_command("migrate", verbosity=0)
    channel = upsert_channel(f"part-cost-{os.getpid()}")[0]
    body = b"".join(
        json.dumps({"event": "token", "data": {"n": number}}).encode() + b"\n"
        for number in range(options.parts)
    )

    def parse() -> list[Any]:
        return list(NdjsonBody(1 << 20).feed(body))

    parsing, parts = best_cpu(parse, options.rounds)

    def check() -> list[store.Publish]:
        stream = StreamPublication(channel, publisher="bench")
        publishes = []
        for part in parts:
            payload, size = stream._prepare(part.event, part.data)
            stream._accept(size)
            publishes.append(store.prepared(channel, payload, event=part.event, publisher="bench"))
        return publishes

    checking, publishes = best_cpu(check, options.rounds)

    def store_all() -> list[Any]:
        outcomes: list[Any] = []
        for start in range(0, len(publishes), writers.MAX_BATCH):
            outcomes += store.store_batch(publishes[start : start + writers.MAX_BATCH])
        return outcomes

    storing, messages = best_cpu(store_all, options.rounds)
    framing, _ = best_cpu(lambda: [store.frame_message(m, channel.slug) for m in messages], options.rounds)

    per_part = 1e6 / options.parts
    print(
        f"database: {os.environ['DATABASE_URL'].split(':')[0]}, {options.parts} parts, best of {options.rounds}"
    )
    print("| step | CPU µs per part |\n| --- | ---: |")
    for label, seconds in (
        ("parse (NdjsonBody)", parsing),
        ("checks (numbering, limits, store.prepared)", checking),
        (f"store_batch, {writers.MAX_BATCH} a batch", storing),
        ("fan-out frame (store.frame_message)", framing),
    ):
        print(f"| {label} | {seconds * per_part:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
