"""``manage.py republish`` (an upstream SSE feed into a channel) and ``manage.py pipe`` (stdin as a stream)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import httpx
import pytest
from django.core.management import CommandError, call_command

from events.models import Message
from events.provisioning import upsert_channel
from events.publish.stream_publication import STREAM_END_EVENT
from tests.support.servers import ROOT, ServerProcess, Site
from tests.support.sse_client import Subscriber
from tests.support.upstream import UpstreamFeed
from tests.support.waiting import eventually

WRITER = """
import json, time
for n in range(10):
    print(json.dumps({"n": n}), flush=True)
    time.sleep(0.5)
print("plain text, not JSON", flush=True)
"""


@pytest.fixture(scope="module")
def command_channels(site: Site) -> None:
    site.create_channels("relayed", "piped")


def history(server: ServerProcess, slug: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.url}/api/channels/{slug}/messages?limit=1000", timeout=10)
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def start_relay(site: Site, upstream: UpstreamFeed, log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "republish", upstream.url, "relayed", "--max-backoff", "1"],
        cwd=ROOT,
        env=site.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def upstream() -> Iterator[UpstreamFeed]:
    feed = UpstreamFeed()
    feed.start()
    yield feed
    feed.stop()


async def test_relay_republishes_an_upstream_feed_once_across_restarts(
    server: ServerProcess, site: Site, command_channels: None, upstream: UpstreamFeed
) -> None:
    async def relayed(count: int) -> list[Any]:
        stored = await eventually(
            lambda: asyncio.to_thread(history, server, "relayed"),
            lambda messages: len(messages) >= count,
            within=20,
            what=f"{count} relayed messages",
        )
        return [message["data"] for message in stored]

    log = (site.workdir / "relay.log").open("ab")
    relay = start_relay(site, upstream, log)
    try:
        # Live: the relay starts at the upstream's end (nothing relayed yet).
        async def connections() -> int:
            return len(upstream.resume_requests)

        await eventually(
            connections,
            lambda connections: connections == 1,
            within=20,
            what="the relay's first connection",
        )
        for n in (1, 2, 3):
            upstream.emit({"n": n})
        assert await relayed(3) == [{"n": 1}, {"n": 2}, {"n": 3}]

        # The upstream restarts; two events happen while it is down. The relay
        # comes back with Last-Event-ID and gets exactly those.
        upstream.stop()
        upstream.emit({"n": 4})
        upstream.emit({"n": 5})
        upstream.start()
        assert await relayed(5) == [{"n": n} for n in range(1, 6)]
        assert upstream.resume_requests[-1] == "3"

        # A forgetful upstream replays its whole history on reconnect: the relay
        # republishes nothing twice. (Event 6 arrives after the replay, so once
        # it is here any duplicate would be too.)
        upstream.stop()
        upstream.honour_last_event_id = False
        upstream.emit({"n": 6})
        upstream.start()
        assert await relayed(6) == [{"n": n} for n in range(1, 7)]

        # The relay itself restarts: it resumes from the id it recorded.
        stop(relay)
        upstream.honour_last_event_id = True
        upstream.emit({"n": 7})
        relay = start_relay(site, upstream, log)
        assert await relayed(7) == [{"n": n} for n in range(1, 8)]
        assert upstream.resume_requests[-1] == "6"
    finally:
        stop(relay)
        log.close()
    stored = await asyncio.to_thread(history, server, "relayed")
    assert [message["event"] for message in stored] == ["tick"] * 7


async def test_pipe_publishes_each_line_as_it_is_written(
    server: ServerProcess, site: Site, command_channels: None
) -> None:
    subscriber = Subscriber(f"{server.url}/events/piped/")
    await subscriber.__aenter__()
    # some-command | manage.py pipe piped, with the writer started once pipe is ready.
    read_end, write_end = os.pipe()
    pipe = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "pipe", "piped"],
        cwd=ROOT,
        env=site.env(),
        stdin=read_end,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    os.close(read_end)
    try:
        await subscriber.wait_for_bytes(b"id: ")
        assert pipe.stderr is not None
        ready = await asyncio.wait_for(asyncio.to_thread(pipe.stderr.readline), 30)
        assert b"Streaming standard input into piped as stream " in ready

        writer = subprocess.Popen([sys.executable, "-c", WRITER], stdout=write_end)
        os.close(write_end)  # only the writer holds it now: its exit ends pipe's input

        def writer_finished() -> float:
            writer.wait(timeout=60)
            return time.monotonic()

        finished = asyncio.create_task(asyncio.to_thread(writer_finished))
        first = await subscriber.next_event(timeout=20)
        first_arrived = time.monotonic()
        rest = await subscriber.events(11, timeout=30)
        output, _ = await asyncio.to_thread(pipe.communicate, timeout=30)
        writer_done = await finished
    finally:
        await subscriber.close()
        stop(pipe)

    # The first line was published while the writer was still writing (5 s in all).
    assert first_arrived < writer_done
    parts, end = [first, *rest[:-1]], rest[-1]
    payloads = [json.loads(event.data)["data"] for event in parts]
    stream = payloads[0]["stream"]
    expected = [{"n": n} for n in range(10)] + ["plain text, not JSON"]
    assert payloads == [{"stream": stream, "part": n + 1, "data": data} for n, data in enumerate(expected)]
    assert end.event == STREAM_END_EVENT
    assert json.loads(end.data)["data"] == {"stream": stream, "parts": 11, "status": "done", "reason": None}
    assert pipe.returncode == 0
    assert f"Streamed 11 parts into piped (stream {stream}, done)." in output.decode()


# --- in-process: what the commands do with odd input --------------------------------------


@pytest.mark.django_db(transaction=True)
def test_pipe_ends_the_stream_as_failed_when_a_line_cannot_be_published() -> None:
    upsert_channel("logs")
    stdin = StringIO("fine\n" + "x" * (64 * 1024) + "\nnever read\n")
    with pytest.raises(CommandError, match=r"failed after 1 parts: data is \d+ bytes encoded"):
        call_command("pipe", "logs", stdin=stdin, stdout=StringIO(), stderr=StringIO())
    events = list(Message.objects.order_by("sequence").values_list("event", "data"))
    assert [event for event, _ in events] == ["message", STREAM_END_EVENT]
    assert events[1][1]["status"] == "failed"  # type: ignore[index]  # Message.data is a nullable JSONField


@pytest.mark.django_db(transaction=True)
def test_pipe_text_mode_and_unknown_channel() -> None:
    upsert_channel("logs")
    out = StringIO()
    call_command(
        "pipe",
        "logs",
        "--text",
        "--event",
        "line",
        stdin=StringIO('{"a": 1}\n\n'),
        stdout=out,
        stderr=StringIO(),
    )
    parts = list(Message.objects.filter(event="line").order_by("sequence").values_list("data", flat=True))
    assert [part["data"] for part in parts] == ['{"a": 1}', ""]  # type: ignore[index]  # nullable JSONField
    assert "Streamed 2 parts into logs" in out.getvalue()
    with pytest.raises(CommandError, match="No active channel is called 'nope'"):
        call_command("pipe", "nope", stdin=StringIO("x\n"), stderr=StringIO())
