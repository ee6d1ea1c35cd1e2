"""The benchmark runner: ``python -m bench [--quick]`` (see docs/performance.md).

It pins itself (the load generator and publisher) to CPU 1 and every server to
CPU 0, measures Pushsite, the raw-asyncio reference server and django-eventstream
in one run, prints a table, and writes bench/results/<timestamp>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import timeit
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.support.servers import ROOT

from . import publish_load, report, scenarios, storm
from .scenarios import QUICK, Sizes
from .servers import (
    SERVER_CPU,
    PushsiteDeployment,
    Server,
    asgi_floor_server,
    eventstream_available,
    eventstream_server,
    redis_server,
    reference_server,
)

CLIENT_CPU = 1
TARGETS = ("reference", "pushsite", "eventstream", "uvicorn-floor", "pushsite-daphne")
# The variants measure a design choice: only the scenarios they inform.
VARIANT_SCENARIOS = {
    "pushsite-daphne": {"latency", "fanout"},
    "uvicorn-floor": {"fanout", "connections"},
    # Another checkout's code (--baseline), for A/B runs of a change.
    "pushsite-baseline": {"latency", "fanout", "connections", "publish"},
}
RESULTS_DIR = ROOT / "bench" / "results"


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's (and so its children's) open-file limit for 10,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limit in (max(wanted, hard), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return limit
        except (ValueError, OSError):
            continue
    return soft


def machine() -> dict[str, Any]:
    model = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    found = {}
    for name in ("Django", "channels", "channels-redis", "uvicorn", "uvloop", "httptools", "daphne"):
        found[name] = importlib.metadata.version(name)
    try:
        found["django-eventstream"] = importlib.metadata.version("django-eventstream")
    except importlib.metadata.PackageNotFoundError:
        found["django-eventstream"] = "not installed"
    try:
        found["redis-server"] = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.split()[2]
    except (OSError, IndexError):
        found["redis-server"] = "unknown"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    found["pushsite_commit"] = commit.stdout.strip()
    return found


def encode_once_cost() -> dict[str, float]:
    """Micro-measurement: encoding one message's frame, once versus per connection."""
    from events.wire import frames  # pure module: no Django setup needed

    published = datetime.datetime.now(datetime.UTC)
    data = {"p": 2, "n": 17, "t": time.time_ns()}

    def encode() -> bytes:
        return frames.message_fields(
            slug="bench", sequence=17, event="bench", data=data, published_at=published
        )

    runs = 5000
    per_encode_us = min(timeit.repeat(encode, number=runs, repeat=3)) / runs * 1e6
    return {"encode_us": round(per_encode_us, 2), "per_1000_connections_ms": round(per_encode_us, 2)}


def header_layer_cost() -> dict[str, float]:
    """CPU per stream frame of pushsite/headers.py's ``send`` against the bare ``send``, started eagerly.

    CPU time (``process_time``), best of 5: other work on the machine does not count.
    """
    from events.deliver.eager import start_eagerly
    from pushsite.headers import SecurityHeadersMiddleware

    async def bare(message: dict[str, Any]) -> None:
        return None

    held: list[Callable[[dict[str, Any]], Awaitable[None]]] = []

    async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
        held.append(send)

    # Called from the runner's event loop: drive the call by hand (it never waits).
    with contextlib.suppress(StopIteration):
        # (Plain dicts and untyped callables: a hand-driven call, not a server's.)
        SecurityHeadersMiddleware(stream)({"type": "http", "headers": []}, bare, bare).send(None)  # type: ignore[arg-type]
    wrapped = held[0]
    frame = {"type": "http.response.body", "body": b"data: x\n\n", "more_body": True}
    runs = 200_000

    def best(send: Callable[[dict[str, Any]], Awaitable[None]]) -> float:
        timer = timeit.Timer(lambda: start_eagerly(send(frame)), timer=time.process_time)  # type: ignore[arg-type]  # both sends return coroutines
        return min(timer.repeat(repeat=5, number=runs)) / runs * 1e9

    bare_ns, layer_ns = best(bare), best(wrapped)
    return {
        "bare_send_ns": round(bare_ns),
        "with_layer_ns": round(layer_ns),
        "extra_ns": round(layer_ns - bare_ns),
    }


async def measure_target(
    name: str, server: Server, sizes: Sizes, progress: report.Progress, wanted: set[str]
) -> dict[str, Any]:
    """Start ``server``, run the scenarios in ``wanted`` against it, stop it."""
    progress.target = name
    result: dict[str, Any] = {"port": server.port, "load_average": os.getloadavg()}
    steps: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [
        ("connections", lambda: scenarios.connections(server, sizes, progress)),
        ("latency+fanout", lambda: scenarios.latency_and_fanout(server, sizes, progress)),
        ("publish", lambda: scenarios.publish_round_trip(server, sizes, progress)),
    ]
    progress("starting")
    try:
        server.start()
        result["rss_started_kib"] = server.rss_kib()
        for step, run in steps:
            if not wanted & set(step.split("+")):
                continue
            started = time.monotonic()
            measured = await run()
            if step == "latency+fanout":
                result.update(measured)
            else:
                result[step] = measured
            progress.note(f"{name}: {step} done in {time.monotonic() - started:.0f}s")
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        progress.note(f"{name}: FAILED {result['error']} (log: {server.log})")
        traceback.print_exc()
    finally:
        server.stop()
    return result


async def measure_cross_process(
    deployment: PushsiteDeployment, workdir: Path, sizes: Sizes, progress: report.Progress, cpu: int | None
) -> dict[str, Any]:
    progress.target = "pushsite"
    progress("(e) starting Redis and two Pushsite processes")
    redis = redis_server(workdir, cpu).start()
    publishing = deployment.server("pushsite-redis-a", redis_url=redis.url, cpu=cpu)
    subscribed = deployment.server("pushsite-redis-b", redis_url=redis.url, cpu=cpu)
    try:
        publishing.start()
        subscribed.start()
        return await scenarios.cross_process(publishing, subscribed, sizes, progress)
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        publishing.stop()
        subscribed.stop()
        redis.stop()


async def measure_steady(
    deployment: PushsiteDeployment, workdir: Path, sizes: Sizes, progress: report.Progress, cpu: int | None
) -> dict[str, Any]:
    progress.target = "pushsite"
    progress("(h) starting Redis and two Pushsite processes")
    redis = redis_server(workdir, cpu).start()
    publishing = deployment.server("pushsite-steady-a", redis_url=redis.url, cpu=cpu)
    other = deployment.server("pushsite-steady-b", redis_url=redis.url, cpu=cpu)
    try:
        publishing.start()
        other.start()
        return await scenarios.steady(publishing, other, sizes, progress)
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        publishing.stop()
        other.stop()
        redis.stop()


async def measure_slow_reader(
    deployment: PushsiteDeployment, sizes: Sizes, progress: report.Progress, cpu: int | None
) -> dict[str, Any]:
    """(f) Pushsite's backlog bound (1 MiB) against the same server with a 1 GiB one."""
    results: dict[str, Any] = {}
    for label, backlog in (("bounded_1mib", ""), ("unbounded_1gib", str(2**30))):
        progress.target = f"pushsite ({label})"
        server = deployment.server(f"pushsite-slow-{label}", cpu=cpu)
        if backlog:
            server.env["PUSHSITE_MAX_BACKLOG_BYTES"] = backlog
        server.start()
        try:
            results[label] = await scenarios.slow_reader(server, sizes, progress)
        except Exception as exc:
            traceback.print_exc()
            results[label] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            server.stop()
    return results


async def measure_publish_paths(
    deployment: PushsiteDeployment,
    baseline: Path | None,
    sizes: Sizes,
    progress: report.Progress,
    cpu: int | None,
) -> dict[str, Any]:
    """(g) The API-key publish by each road, all servers up at once, rounds interleaved.

    ``pushsite``: this checkout (``key``: the fast path; ``django``: the same
    request with a cookie, through Django's middleware and view). ``baseline``:
    another checkout's code on the same database (``--baseline``). ``async-only``:
    Django's path with only async-native middleware (bench/async_only_settings.py).
    """
    progress.target = "publish roads"
    servers = {"pushsite": deployment.server("pushsite-roads", cpu=cpu)}
    runs = [("pushsite", "django"), ("pushsite", "key")]
    if baseline is not None:
        servers["baseline"] = deployment.server("pushsite-baseline", cpu=cpu, root=baseline)
        runs = [("baseline", "key"), *runs, ("baseline", "django")]
    servers["async-only"] = deployment.server(
        "pushsite-async-only", cpu=cpu, settings_module="bench.async_only_settings"
    )
    runs.append(("async-only", "key"))
    progress("starting the servers")
    try:
        for server in servers.values():
            server.start()
        result = await scenarios.publish_paths(servers, runs, sizes, progress)
        result["baseline"] = str(baseline) if baseline is not None else None
        result["load_average"] = os.getloadavg()
        return result
    except Exception as exc:
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        for server in servers.values():
            server.stop()


async def run_all(
    options: argparse.Namespace,
    sizes: Sizes,
    workdir: Path,
    order: list[str],
    prepared: PushsiteDeployment,
    round_label: str = "",
) -> dict[str, Any]:
    """One round in ``workdir``: every server of ``order`` through the wanted scenarios, in that order.

    Each round starts from its own copy of the ``prepared`` site (migrated, with the
    channel and key), so no round inherits another's history.
    """
    progress = report.Progress()
    if round_label:
        progress.note(f"{round_label}: servers in the order {', '.join(order)}")
    cpu = None if options.no_pin else SERVER_CPU
    wanted = set(options.scenarios.split(","))
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "sizes": dataclasses.asdict(sizes),
        "pinning": None if options.no_pin else {"servers": SERVER_CPU, "client": CLIENT_CPU},
        # Other work on the machine shows here (the runner cannot pin it away).
        "load_average_at_start": os.getloadavg(),
        "order": order,
        "targets": {},
    }
    deployment = prepared.copy_to(workdir)

    for name in order:
        if name == "reference":
            server = reference_server(workdir, cpu)
        elif name == "pushsite":
            server = deployment.server("pushsite", cpu=cpu)
        elif name == "uvicorn-floor":
            server = asgi_floor_server(workdir, cpu)
        elif name == "pushsite-baseline":
            if options.baseline is None:
                raise SystemExit("pushsite-baseline needs --baseline DIR (another checkout)")
            server = deployment.server("pushsite-baseline", cpu=cpu, root=options.baseline)
        elif name == "pushsite-daphne":
            server = deployment.server("pushsite-daphne", asgi="daphne", cpu=cpu)
        elif name == "eventstream":
            if not eventstream_available():
                progress.note("eventstream: skipped (django-eventstream is not installed: use bench/.venv)")
                continue
            server = eventstream_server(workdir, cpu)
        else:
            raise SystemExit(f"unknown server {name!r}; choose from {', '.join(TARGETS)}")
        scenario_set = wanted & VARIANT_SCENARIOS.get(name, wanted)
        results["targets"][name] = await measure_target(name, server, sizes, progress, scenario_set)

    if "pushsite" in results["targets"] and "cross_process" in wanted:
        results["targets"]["pushsite"]["cross_process"] = await measure_cross_process(
            deployment, workdir, sizes, progress, cpu
        )
    if "publish_paths" in wanted:
        results["publish_paths"] = await measure_publish_paths(
            deployment, options.baseline, sizes, progress, cpu
        )
    if "pushsite" in results["targets"] and "steady" in wanted:
        results["targets"]["pushsite"]["steady"] = await measure_steady(
            deployment, workdir, sizes, progress, cpu
        )
    if "storm" in wanted:
        # This checkout's Pushsite, and --baseline's when pushsite-baseline is named (A/B, in the order named).
        for name in order:
            if name not in {"pushsite", "pushsite-baseline"}:
                continue
            root = options.baseline if name == "pushsite-baseline" else ROOT
            if root is None:
                raise SystemExit("pushsite-baseline needs --baseline DIR (another checkout)")
            progress.target = name
            key = "storm" if name == "pushsite" else "storm_baseline"
            results[key] = await storm.reconnect_storm(
                deployment, sizes, progress, cpu, name=f"{name}-storm", root=root
            )
            progress.note(f"{name}: reconnect storm: {results[key]}")
    if "publish_load" in wanted:
        # (j) issue 17: its own deployments (PostgreSQL and SQLite) and reference server.
        load_sizes = publish_load.QUICK if options.quick else publish_load.LoadSizes()
        results["publish_load"] = await publish_load.measure(
            workdir, load_sizes, cpu, ["postgresql", "sqlite"]
        )
        progress.note("publish load:\n" + publish_load.render(results["publish_load"]))
    if "pushsite" in results["targets"] and "slow_reader" in wanted:
        results["design"] = {"slow_reader": await measure_slow_reader(deployment, sizes, progress, cpu)}
    results.setdefault("design", {})["encode_once"] = encode_once_cost()
    results["design"]["header_layer"] = header_layer_cost()
    results["load_average_at_end"] = os.getloadavg()
    progress.note("done")
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--servers", default=",".join(TARGETS))
    parser.add_argument(
        "--scenarios",
        default="latency,fanout,connections,publish,cross_process,slow_reader,publish_paths,steady",
        help="comma-separated subset; publish_load (j) only when named",
    )
    for field in dataclasses.fields(Sizes):
        parser.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=None)
    parser.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another checkout (e.g. `git archive main | tar -x -C DIR`) whose publish roads (g) runs beside this one",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run everything this many times, the server order turned by one each round, and report each "
        "target's median and range over the rounds (servers measured later in a round meet a warmer, "
        "busier machine; turning the order spreads that over all of them)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs (machines with one core)")
    parser.add_argument("--output", type=Path, default=None, help="results file (default bench/results/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    sizes = dataclasses.replace(QUICK) if options.quick else Sizes()
    for field in dataclasses.fields(Sizes):
        value = getattr(options, field.name)
        if value is not None:
            setattr(sizes, field.name, value)
    raise_fd_limit()
    if not options.no_pin:
        if (os.cpu_count() or 1) < 2:
            raise SystemExit("pinning needs two CPUs; pass --no-pin")
        os.sched_setaffinity(0, {CLIENT_CPU})

    import uvloop  # the load generator on the fastest loop available

    if options.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    names = options.servers.split(",")
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pushsite-bench-site-") as site_dir:
        prepared = PushsiteDeployment(Path(site_dir))
        report.Progress().note("pushsite: preparing the SQLite database (migrate, channel, key)")
        prepared.prepare()
        for number in range(options.rounds):
            turn = number % len(names)
            order = names[turn:] + names[:turn]
            label = f"round {number + 1} of {options.rounds}" if options.rounds > 1 else ""
            with tempfile.TemporaryDirectory(prefix="pushsite-bench-") as workdir:
                results = uvloop.run(run_all(options, sizes, Path(workdir), order, prepared, label))
            results["checks"] = report.evaluate(results)
            results["table"] = report.render_table(results)
            results["publish_paths_table"] = report.render_publish_paths(results)
            rounds.append(results)
            if label:
                print(f"## {label} ({', '.join(order)})\n")
            print(results["table"])
            print()
            print(report.render_checks(results["checks"]))
            print()
            print(report.render_design(results))
            if results["publish_paths_table"]:
                print()
                print(results["publish_paths_table"])
            print()
    saved: dict[str, Any] = rounds[0]
    if len(rounds) > 1:
        summary = report.over_rounds([results["checks"] for results in rounds])
        saved = {"rounds": rounds, "over_rounds": summary, "table": report.render_over_rounds(summary)}
        print(f"## Over {len(rounds)} rounds\n")
        print(saved["table"])
        print()
    output = options.output
    if output is None:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        output = RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.write_text(json.dumps(saved, indent=2, default=str) + "\n")
    print(f"Results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
