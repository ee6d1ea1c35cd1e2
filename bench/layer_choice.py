"""Which channels-redis layer for Pushsite: RedisPubSubChannelLayer or RedisChannelLayer?

Starts, for each layer in turn and in the same run, a fresh Redis, two Pushsite
processes (A publishes, B serves the subscribers), and measures the latency
from publish to delivery on B, plus the Redis commands each publish costs.

    .venv/bin/python bench/layer_choice.py [--subscribers 500] [--messages 300] [--rate 50]

Results go to docs/scaling.md by hand; this prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.servers import ServerProcess, Site  # noqa: E402
from tests.support.services import RedisServer, redis_binary  # noqa: E402


async def redis_command_count(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"INFO stats\r\n")
    await writer.drain()
    header = await reader.readline()
    body = await reader.readexactly(int(header[1:]) + 2)
    writer.close()
    for line in body.decode().splitlines():
        if line.startswith("total_commands_processed:"):
            return int(line.split(":")[1])
    raise RuntimeError("no total_commands_processed")


async def subscriber(url: str, expect: int, latencies: list[float], opened: list[str]) -> None:
    """Read one stream until ``expect`` messages arrived, recording each one's latency."""
    async with httpx.AsyncClient(timeout=None) as client, client.stream("GET", url) as response:
        buffer = b""
        seen = 0
        announced = False
        async for chunk in response.aiter_raw():
            buffer += chunk
            if not announced and b"id: " in buffer:
                opened.append(url)
                announced = True
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                for line in frame.split(b"\n"):
                    if line.startswith(b"data: "):
                        sent_at = json.loads(line[6:])["data"]["t"]
                        latencies.append(time.time() - sent_at)
                        seen += 1
            if seen >= expect:
                return


async def measure(
    layer: str, subscribers: int, messages: int, rate: float, workdir: Path
) -> dict[str, float]:
    redis = RedisServer(redis_binary(), workdir)
    redis.start()
    site = Site(
        workdir=workdir,
        database_url=f"sqlite:///{workdir / 'db.sqlite3'}",
        redis_url=redis.url,
        extra_env={"REDIS_LAYER": layer, "DJANGO_LOG_LEVEL": "WARNING"},
    )
    site.prepare()
    site.create_channels("bench")
    key = site.create_api_key("bench")
    a = ServerProcess(site, name="A").start()
    b = ServerProcess(site, name="B").start()
    try:
        latencies: list[float] = []
        opened: list[str] = []
        tasks = [
            asyncio.create_task(subscriber(f"{b.url}/events/bench/", messages, latencies, opened))
            for _ in range(subscribers)
        ]
        async with asyncio.timeout(60):
            while len(opened) < subscribers:
                await asyncio.sleep(0.05)  # polling a count: no event to await
        before = await redis_command_count(redis.port)
        async with httpx.AsyncClient() as client:
            for _ in range(messages):
                response = await client.post(
                    f"{a.url}/api/channels/bench/messages",
                    json={"data": {"t": time.time()}},
                    headers={"Authorization": f"Bearer {key}"},
                )
                response.raise_for_status()
                await asyncio.sleep(1 / rate)  # the publishing rate under test
        async with asyncio.timeout(60):
            await asyncio.gather(*tasks)
        commands = await redis_command_count(redis.port) - before
        latencies.sort()
        return {
            "p50_ms": statistics.median(latencies) * 1000,
            "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
            "max_ms": latencies[-1] * 1000,
            "deliveries": len(latencies),
            "redis_commands_per_publish": commands / messages,
        }
    finally:
        a.stop()
        b.stop()
        redis.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0)
    args = parser.parse_args()
    results = {}
    for layer in ("pubsub", "core"):
        with tempfile.TemporaryDirectory() as workdir:
            print(f"measuring {layer}...", flush=True)
            results[layer] = await measure(layer, args.subscribers, args.messages, args.rate, Path(workdir))
    print(
        f"\n{'layer':8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'deliveries':>11} {'redis cmds/publish':>19}"
    )
    for layer, r in results.items():
        print(
            f"{layer:8} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['max_ms']:8.1f} "
            f"{r['deliveries']:11.0f} {r['redis_commands_per_publish']:19.1f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
