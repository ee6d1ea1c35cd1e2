"""The publish rate limit's cost on Redis: counted per publish, or reserved in blocks (issue 17).

Django's cache configured as pushsite/settings.py does with ``REDIS_URL`` (its
RedisCache, 1 s socket timeouts), on the Redis at ``--redis`` (default
127.0.0.1:6379). For each way of counting, ``--publishes`` calls of
``ratelimit.count`` for one key, from ``--threads`` threads (the publish path
counts in its writer threads): the cache calls made, the Redis commands served
(``INFO stats``; other clients of the same Redis add theirs), and the wall time
and this process's CPU per call. ``hit`` is how every publish was counted
before: ``add`` + ``incr`` each time.

    .venv/bin/python -m bench.ratelimit_cache [--publishes 20000] [--threads 4]

Results go to docs/performance.md by hand; this prints a table.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def redis_commands(host: str, port: int) -> int:
    """Commands the Redis server has processed so far."""
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"INFO stats\r\n")
        reply = b""
        while b"total_commands_processed:" not in reply or not reply.endswith(b"\r\n"):
            reply += sock.recv(65536)
    for line in reply.decode().splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("INFO stats without total_commands_processed")


class CountingCache:
    """Django's cache, counting the calls made on it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()

    def _count(self) -> None:
        with self._lock:
            self.calls += 1

    def add(self, *args: Any, **kwargs: Any) -> Any:
        self._count()
        return self.inner.add(*args, **kwargs)

    def incr(self, *args: Any, **kwargs: Any) -> Any:
        self._count()
        return self.inner.incr(*args, **kwargs)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self._count()
        return self.inner.get(*args, **kwargs)


def run(reserved: bool, limit: int, publishes: int, threads: int, host: str, port: int) -> dict[str, float]:
    from django.core.cache import cache

    from events.access import ratelimit
    from events.exceptions import RateLimited

    rate = ratelimit.Rate("bench", lambda: limit, lambda: 10.0, "Slow down.", reserved=reserved)
    ident = f"bench-{uuid.uuid4()}"
    counting = CountingCache(cache)
    setattr(ratelimit, "cache", counting)  # noqa: B010  (the bench swaps the module's cache)
    refused = [0] * threads
    start = threading.Barrier(threads + 1)

    def publish(number: int) -> None:
        start.wait()
        for _ in range(publishes // threads):
            try:
                ratelimit.count(rate, ident)
            except RateLimited:
                refused[number] += 1

    workers = [threading.Thread(target=publish, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    commands = redis_commands(host, port)
    cpu = time.process_time()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - began
    cpu = time.process_time() - cpu
    commands = redis_commands(host, port) - commands - 1  # less the first INFO
    done = publishes // threads * threads
    return {
        "publishes": done,
        "refused": sum(refused),
        "cache_calls": counting.calls,
        "redis_commands": commands,
        "wall_us": wall / done * 1e6,
        "cpu_us": cpu / done * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publishes", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--redis", default="127.0.0.1:6379")
    args = parser.parse_args()
    host, _, port = args.redis.rpartition(":")
    os.environ["REDIS_URL"] = f"redis://{host}:{port}/0"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pushsite.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    import django

    django.setup()
    print(
        f"{args.publishes} counts of one key, {args.threads} threads, Redis {args.redis}, 10 s windows\n"
        "| counting | limit | counted | refused | cache calls | Redis commands | wall µs/count | CPU µs/count |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    for limit in (10**9, 1000):
        for reserved in (False, True):
            row = run(reserved, limit, args.publishes, args.threads, host, int(port))
            print(
                f"| {'reserved blocks' if reserved else 'hit (each)'} | {limit:,} "
                f"| {row['publishes'] - row['refused']:,} | {row['refused']:,} | {row['cache_calls']:,} "
                f"| {row['redis_commands']:,} | {row['wall_us']:.1f} | {row['cpu_us']:.1f} |"
            )


if __name__ == "__main__":
    main()
