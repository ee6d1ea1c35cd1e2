"""(j) Publish load (issue 17): stored publishes per second per core, and what each costs.

One ``manage.py serve`` process pinned to CPU 0, on PostgreSQL and on SQLite, no
subscribers. Beside it, in the same run and on the same CPU, the raw-asyncio
reference server (bench/refserver.py, which stores nothing) answers the same
requests, so each number has its ratio to the practical limit of the machine.

* concurrent: ``publishers`` keep-alive HTTP/1.1 connections each POSTing as soon
  as the previous answer came, ``publishes`` in all, to one channel: stored/s
  (wall time from the first request to the last answer), server CPU per publish
  (``/proc/<pid>/stat``), round trip p50 / p99. Every acknowledged id is checked
  against the rows afterwards: as many rows as 201s, no id twice, none missing.
* single: one publisher, sequential: round trip p50 / p99.
* streaming: one ``POST .../stream`` with ``stream_parts`` NDJSON lines in one
  chunked body: parts stored per second.

Run alone with ``python -m bench.publish_load [--quick]`` or as part of
``python -m bench --scenarios publish_load``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.servers import ROOT, Site, free_port
from tests.support.services import PostgresDatabase, postgres_admin_url

from .publisher import Publisher
from .scenarios import ms, percentile
from .servers import SECRET, SERVER_CPU, SLUG, Server, pinned, reference_server

HOST = "127.0.0.1"
CLIENT_CPU = 1
PHASE_LOAD, PHASE_SINGLE, PHASE_WARMUP = 10, 11, 9


@dataclasses.dataclass
class LoadSizes:
    publishers: int = 16
    publishes: int = 6000
    single: int = 1000
    stream_parts: int = 5000
    warmup: int = 200


QUICK = LoadSizes(publishes=1500, single=300, stream_parts=1000, warmup=50)


class LoadDeployment:
    """A database (PostgreSQL or SQLite) with the benchmark channel and an all-channels key."""

    def __init__(self, workdir: Path, database: str) -> None:
        self.database = database
        self.postgres: PostgresDatabase | None = None
        if database == "postgresql":
            self.postgres = PostgresDatabase(postgres_admin_url())
            url = self.postgres.url
        else:
            url = f"sqlite:///{workdir / 'publish-load.sqlite3'}"
        # No history pruning below what the run stores: every row is counted.
        self.site = Site(workdir=workdir, database_url=url, settings={"DEFAULT_RETENTION_COUNT": "100000000"})
        self.api_key = ""

    def prepare(self) -> None:
        if self.postgres is not None:
            self.postgres.create()
        self.site.prepare()
        self.site.create_channel(SLUG)
        self.api_key = self.site.create_api_key("bench")

    def drop(self) -> None:
        if self.postgres is not None:
            self.postgres.drop()

    def server(self, name: str, cpu: int | None, root: Path = ROOT) -> Server:
        """``manage.py serve`` of the checkout at ``root`` (another one for A/B runs) on this database."""
        port = free_port()
        env = self.site.env()
        env["DJANGO_SECRET_KEY"] = SECRET
        env["DJANGO_LOG_LEVEL"] = os.environ.get("BENCH_LOG_LEVEL", "WARNING")
        # One key publishes everything here: lift its rate (the limit is still
        # counted on every publish; tests/access/test_limits.py tests it).
        env["PUSHSITE_PUBLISH_RATE_MESSAGES"] = "100000000"
        command = [sys.executable, str(root / "manage.py"), "serve", "--port", str(port)]
        return Server(
            name=name,
            command=pinned(command, cpu),
            env=env,
            log=self.site.workdir / f"{name}-{port}.log",
            port=port,
            api_key=self.api_key,
            cwd=root,
        )

    def stored(self) -> dict[str, int]:
        """Rows of the benchmark channel: count, distinct sequences, lowest and highest."""
        out = self.site.shell(
            "from django.db.models import Count, Max, Min\n"
            "from events.models import Message, Channel\n"
            f"c = Channel.objects.get(slug={SLUG!r})\n"
            "r = Message.objects.filter(channel=c).aggregate("
            "n=Count('id'), d=Count('sequence', distinct=True), lo=Min('sequence'), hi=Max('sequence'))\n"
            "import json; print(json.dumps({**r, 'last_sequence': c.last_sequence}))\n"
        )
        return {k: int(v or 0) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


async def concurrent(port: int, key: str, publishers: int, total: int, phase: int) -> dict[str, Any]:
    """``total`` publishes over ``publishers`` connections, each waiting for its previous answer."""
    clients = [Publisher(HOST, port, SLUG, key) for _ in range(publishers)]
    for client in clients:
        await client.connect()
    numbers = iter(range(1, total + 1))
    round_trips: list[int] = []
    ids: list[int] = []

    async def work(client: Publisher) -> None:
        for number in numbers:
            answer, round_trip = await client.publish(phase, number)
            round_trips.append(round_trip)
            ids.append(int(str(answer["id"])))

    started = time.perf_counter_ns()
    try:
        await asyncio.gather(*(work(client) for client in clients))
    finally:
        wall_ns = time.perf_counter_ns() - started
        for client in clients:
            await client.close()
    return {
        "publishes": len(round_trips),
        "per_s": round(len(round_trips) / wall_ns * 1e9, 1),
        "p50_ms": ms(percentile(round_trips, 0.5)),
        "p99_ms": ms(percentile(round_trips, 0.99)),
        "ids": ids,
    }


async def streamed(port: int, key: str, parts: int) -> dict[str, Any]:
    """One streamed publish of ``parts`` NDJSON lines, sent in chunks of 100 lines: parts/s."""
    reader, writer = await asyncio.open_connection(HOST, port)
    head = (
        f"POST /api/channels/{SLUG}/stream HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/x-ndjson\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    started = time.perf_counter_ns()
    writer.write(head)
    for first in range(0, parts, 100):
        lines = "".join(
            json.dumps({"event": "token", "data": {"n": n}}) + "\n"
            for n in range(first, min(parts, first + 100))
        ).encode()
        writer.write(b"%x\r\n%s\r\n" % (len(lines), lines))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    answer = await reader.readuntil(b"\r\n\r\n")
    wall_ns = time.perf_counter_ns() - started
    status = answer.split(b"\r\n", 1)[0].decode()
    length = next(
        (
            int(line.split(b":")[1])
            for line in answer.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    body = json.loads(await reader.readexactly(length)) if length else {}
    writer.close()
    return {
        "status": status,
        "parts": body.get("parts"),
        "parts_per_s": round(parts / wall_ns * 1e9, 1),
    }


async def _warm(port: int, key: str, count: int) -> None:
    client = Publisher(HOST, port, SLUG, key)
    try:
        for number in range(1, count + 1):
            await client.publish(PHASE_WARMUP, number)
    finally:
        await client.close()


async def single(port: int, key: str, count: int) -> dict[str, Any]:
    client = Publisher(HOST, port, SLUG, key)
    trips = []
    try:
        for number in range(1, count + 1):
            trips.append((await client.publish(PHASE_SINGLE, number))[1])
    finally:
        await client.close()
    return {"p50_ms": ms(percentile(trips, 0.5)), "p99_ms": ms(percentile(trips, 0.99)), "count": count}


def verify(
    before: dict[str, int], after: dict[str, int], acknowledged: int, ids: list[int]
) -> dict[str, Any]:
    """Rows against answers: one row per 201, no id twice, no gap in the sequence."""
    added = after["n"] - before["n"]
    return {
        "acknowledged": acknowledged,
        "rows_added": added,
        "distinct_ids_acknowledged": len(set(ids)),
        "sequence_contiguous": after["d"] == after["n"] and after["hi"] - after["lo"] + 1 == after["n"],
        "ok": added == acknowledged == len(set(ids)) and after["d"] == after["n"],
    }


async def measure_database(
    database: str, workdir: Path, sizes: LoadSizes, cpu: int | None, root: Path = ROOT
) -> dict[str, Any]:
    deployment = LoadDeployment(workdir / f"{database}-{len(list(workdir.glob('*')))}", database)
    deployment.site.workdir.mkdir(parents=True, exist_ok=True)
    deployment.prepare()
    server = deployment.server(f"pushsite-{database}", cpu, root)
    reference = reference_server(deployment.site.workdir, cpu)
    result: dict[str, Any] = {}
    try:
        server.start()
        reference.start()
        key = deployment.api_key
        await _warm(server.port, key, sizes.warmup)
        await _warm(reference.port, "", sizes.warmup)

        before = deployment.stored()
        cpu_before = server.cpu_seconds()
        load = await concurrent(server.port, key, sizes.publishers, sizes.publishes, PHASE_LOAD)
        cpu_used = server.cpu_seconds() - cpu_before
        after = deployment.stored()
        ids = load.pop("ids")
        load["cpu_ms_per_publish"] = round(cpu_used * 1000 / max(1, load["publishes"]), 3)
        load["stored"] = verify(before, after, load["publishes"], ids)
        ref_cpu_before = reference.cpu_seconds()
        ref_load = await concurrent(reference.port, "", sizes.publishers, sizes.publishes, PHASE_LOAD)
        ref_load.pop("ids")
        ref_load["cpu_ms_per_publish"] = round(
            (reference.cpu_seconds() - ref_cpu_before) * 1000 / max(1, ref_load["publishes"]), 3
        )
        load["reference"] = ref_load
        load["vs_reference"] = round(load["per_s"] / ref_load["per_s"], 3)
        result["concurrent"] = load

        result["single"] = await single(server.port, key, sizes.single)
        result["single"]["reference"] = await single(reference.port, "", sizes.single)

        before = deployment.stored()
        cpu_before = server.cpu_seconds()
        stream = await streamed(server.port, key, sizes.stream_parts)
        stream["cpu_ms_per_part"] = round(
            (server.cpu_seconds() - cpu_before) * 1000 / max(1, sizes.stream_parts), 3
        )
        after = deployment.stored()
        # The parts and the one end event.
        stream["rows_added"] = after["n"] - before["n"]
        result["streaming"] = stream
        result["load_average"] = os.getloadavg()
    finally:
        server.stop()
        reference.stop()
        deployment.drop()
    return result


TARGETS = {
    "postgresql per_s": 5000,
    "sqlite per_s": 2000,
    "cpu_ms_per_publish": 0.2,
    "single p50_ms": 1.0,
    "single p99_ms": 3.0,
    "streaming parts_per_s": 5000,
}


def render(results: dict[str, Any]) -> str:
    rows = ["| measure | target | " + " | ".join(results) + " |", "| --- | --- |" + " --- |" * len(results)]

    def row(label: str, target: str, pick: Any) -> None:
        cells = []
        for measured in results.values():
            try:
                cells.append(str(pick(measured)))
            except (KeyError, TypeError):
                cells.append("-")
        rows.append(f"| {label} | {target} | " + " | ".join(cells) + " |")

    row("stored publishes/s, concurrent", ">= 5,000 PG / 2,000 SQLite", lambda m: m["concurrent"]["per_s"])
    row("reference server, same requests, /s", "-", lambda m: m["concurrent"]["reference"]["per_s"])
    row("ratio to reference", "-", lambda m: m["concurrent"]["vs_reference"])
    row("server CPU per stored publish, ms", "<= 0.2", lambda m: m["concurrent"]["cpu_ms_per_publish"])
    row("reference CPU per publish, ms", "-", lambda m: m["concurrent"]["reference"]["cpu_ms_per_publish"])
    row(
        "concurrent round trip p50 / p99, ms",
        "-",
        lambda m: f"{m['concurrent']['p50_ms']} / {m['concurrent']['p99_ms']}",
    )
    row("rows = 201s, no id twice, no gap", "yes", lambda m: m["concurrent"]["stored"]["ok"])
    row(
        "single publisher p50 / p99, ms",
        "<= 1 / <= 3",
        lambda m: f"{m['single']['p50_ms']} / {m['single']['p99_ms']}",
    )
    row(
        "reference single p50 / p99, ms",
        "-",
        lambda m: f"{m['single']['reference']['p50_ms']} / {m['single']['reference']['p99_ms']}",
    )
    row("streaming parts stored/s", ">= 5,000", lambda m: m["streaming"]["parts_per_s"])
    row("streaming CPU per part, ms", "-", lambda m: m["streaming"]["cpu_ms_per_part"])
    return "\n".join(rows)


async def measure(
    workdir: Path, sizes: LoadSizes, cpu: int | None, databases: list[str], baseline: Path | None = None
) -> dict[str, Any]:
    """Each database in turn; with ``baseline`` (another checkout), its code right before this one's."""
    results: dict[str, Any] = {}
    for database in databases:
        if baseline is not None:
            print(f"(j) publish load on {database}, baseline {baseline} ...", file=sys.stderr, flush=True)
            results[f"{database} baseline"] = await measure_database(database, workdir, sizes, cpu, baseline)
        print(f"(j) publish load on {database} ...", file=sys.stderr, flush=True)
        results[database] = await measure_database(database, workdir, sizes, cpu)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publish_load", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another checkout, measured right before this one (A/B)"
    )
    for field in dataclasses.fields(LoadSizes):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=int, default=None)
    options = parser.parse_args(argv)
    sizes = dataclasses.replace(QUICK if options.quick else LoadSizes())
    for field in dataclasses.fields(LoadSizes):
        if getattr(options, field.name) is not None:
            setattr(sizes, field.name, getattr(options, field.name))
    cpu = None if options.no_pin else SERVER_CPU
    if cpu is not None:
        os.sched_setaffinity(0, {CLIENT_CPU})

    import uvloop

    with tempfile.TemporaryDirectory(prefix="pushsite-publish-load-") as workdir:
        results = uvloop.run(
            measure(Path(workdir), sizes, cpu, options.databases.split(","), options.baseline)
        )
    table = render(results)
    print(table)
    output = (
        options.output
        or Path(__file__).parent / "results" / f"publish-load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps({"sizes": dataclasses.asdict(sizes), "results": results, "table": table}, indent=2) + "\n"
    )
    print(f"\nResults: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
