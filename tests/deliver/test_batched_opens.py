"""Opens in batches (issue 16, reconnect storm): one admission hop and one history query per channel per batch.

In-process: the relay, streams and admissions run in the test's loop; the batches
are counted where they enter the database thread, so a test fails if the streams
opening together are read one by one, or if a stream gets a message twice, misses
one, or gets another request's answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from asgiref.typing import ASGISendEvent
from django.core import signing
from django.db import OperationalError, connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from events import metrics
from events.access.auth import TOKEN_SALT, mint_token
from events.deliver import replay
from events.deliver.consumer import Authorized, StreamRequest, admit_from_database
from events.deliver.history import StoredFrame, frames_after
from events.deliver.relay import Relay, get_relay
from events.deliver.stream import Stream, StreamChannel
from events.exceptions import (
    ChannelNotFound,
    InvalidInput,
    NotAuthenticated,
    PermissionDenied,
    PushsiteError,
    TokenExpired,
)
from events.models import ApiKey, Channel
from events.provisioning import create_api_key, upsert_channel
from events.publish.store import apublish, store_message
from events.wire import cursors
from tests.deliver.test_relay import Client
from tests.support import api
from tests.support.servers import ServerProcess
from tests.support.sse_client import Subscriber, ids
from tests.support.waiting import until

pytestmark = pytest.mark.django_db(transaction=True)

# The shared read of the requested channels (a key's scope reads the channel table too, joined).
CHANNEL_ROWS = f'FROM "{Channel._meta.db_table}" WHERE'


@pytest.fixture
async def relay() -> AsyncIterator[Relay]:
    relay = get_relay()
    yield relay
    await relay.stop()


def count_batches(
    monkeypatch: pytest.MonkeyPatch,
    batcher: Any,
    before: Callable[[int], Awaitable[None]] | None = None,
    after: Callable[[int], Awaitable[None]] | None = None,
) -> list[int]:
    """The size of each batch ``batcher`` sends to the database thread; ``before``/``after`` run around the n-th."""
    sizes: list[int] = []
    run = batcher._run

    async def counted(items: list[Any]) -> Any:
        sizes.append(len(items))
        if before is not None:
            await before(len(sizes))
        results = await run(items)
        if after is not None:
            await after(len(sizes))
        return results

    monkeypatch.setattr(batcher, "_run", counted)
    return sizes


# --- history reads --------------------------------------------------------------------


def test_each_read_of_a_batch_gets_exactly_what_it_would_read_alone_in_one_query_per_run() -> None:
    channel = upsert_channel("batched-reads")[0]
    for n in range(30):
        store_message(channel, n)
    store_message(channel, "gone")
    # A pruned row: sequences have a hole at 31, so counting rows and counting sequences differ.
    channel.messages.filter(sequence=31).delete()
    store_message(channel, "after the hole")
    afters = [0, 3, 3, 7, 9, 28, 29, 30, 32, 40, 14, 15]
    limit = 5
    reads = [replay.Read(channel.pk, channel.slug, after, limit) for after in afters]
    with CaptureQueriesContext(connection) as queries:
        answers = replay.read_all(reads)
    for read, answer in zip(reads, answers, strict=True):
        assert isinstance(answer, replay.Slice)
        assert answer.frames == frames_after(channel.pk, channel.slug, read.after, limit), read
    # Runs of positions at most `limit` apart from the lowest: 0-3-3; 7-9; 14-15; 28-29-30-32; 40.
    assert len(queries.captured_queries) == 5


def test_one_failing_channel_read_does_not_fail_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    good, bad = upsert_channel("read-good")[0], upsert_channel("read-bad")[0]
    store_message(good, "one")

    def failing(channel_id: int, slug: str, after: int, limit: int) -> list[StoredFrame]:
        if channel_id == bad.pk:
            raise RuntimeError("this channel's read failed")
        return frames_after(channel_id, slug, after, limit)

    monkeypatch.setattr(replay, "frames_after", failing)
    answers = replay.read_all([replay.Read(bad.pk, bad.slug, 0, 5), replay.Read(good.pk, good.slug, 0, 5)])
    assert isinstance(answers[0], RuntimeError)
    assert isinstance(answers[1], replay.Slice)
    assert [frame.sequence for frame in answers[1].frames] == [1]


def single_channel_bytes(frames: list[StoredFrame], epoch: str) -> bytes:
    """What a single-channel stream writes for ``frames``, one frame at a time (``Stream._frame``)."""
    return b"".join(b"id: %d" % frame.sequence + cursors.id_suffix(epoch) + frame.fields for frame in frames)


def test_reads_from_one_position_share_one_bytes_object_and_each_read_gets_exactly_its_frames() -> None:
    channel = upsert_channel("joined-slices")[0]
    for n in range(12):
        store_message(channel, {"n": n, "text": "é\nline"})
    channel.refresh_from_db()
    afters = [0, 0, 3, 3, 4, 7, 12, 12]
    reads = [replay.Read(channel.pk, channel.slug, after, 5) for after in afters]
    answers = replay.read_all(reads)
    slices = [answer for answer in answers if isinstance(answer, replay.Slice)]
    assert len(slices) == len(reads)
    for epoch in (channel.epoch, ""):
        for read, piece in zip(reads, slices, strict=True):
            expected = single_channel_bytes(frames_after(channel.pk, channel.slug, read.after, 5), epoch)
            assert piece.joined(epoch) == expected, (read, epoch)
            assert piece.size(epoch) == len(expected)
            assert piece.gapless_after(read.after)
        # The same position: the same object, joined once; another position: its own bytes.
        assert slices[0].joined(epoch) is slices[1].joined(epoch)
        assert slices[2].joined(epoch) is slices[3].joined(epoch)
        assert slices[3].joined(epoch) != slices[4].joined(epoch)
    assert [len(piece) for piece in slices] == [5, 5, 5, 5, 5, 5, 0, 0]
    assert [piece.ended_short for piece in slices] == [False] * 6 + [True, True]
    assert slices[6].joined(channel.epoch) == b""
    # A position the rows do not follow (a hole, or a stream further on) is not gapless.
    assert not slices[0].gapless_after(1)


class RawClient(Client):
    """Also keeps each body as sent (the same object a stream handed over)."""

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    async def send(self, message: ASGISendEvent) -> None:
        assert message["type"] == "http.response.body"
        self.bodies.append(message["body"])
        await super().send(message)


class HeldWriter:
    """A direct writer (events/deliver/direct.py) that goes above its high-water mark on each write until let go."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.hold = True
        self._paused_since: float | None = None
        self._writable = asyncio.Event()

    def write(self, data: bytes) -> bool:
        self.writes.append(data)
        if self.hold:
            self._paused_since = time.monotonic()
            self._writable.clear()
        return True

    def buffered(self) -> int:
        return 0

    @property
    def paused(self) -> bool:
        return self._paused_since is not None

    def paused_since(self) -> float | None:
        return self._paused_since

    async def drain(self) -> None:
        await self._writable.wait()

    def let_go(self) -> None:
        self.hold = False
        self._paused_since = None
        self._writable.set()

    def abort(self) -> None:
        pass

    def finish(self, last_words: bytes = b"") -> bool:
        return True

    def on_lost(self, callback: Callable[[], None]) -> None:
        pass


async def open_resumed(relay: Relay, channel: Channel, client: Client, position: int) -> Stream:
    """What the consumer does for a resume: attach to the feed, then catch up from the position."""
    stream = Stream(
        channels=[StreamChannel(id=channel.pk, slug=channel.slug, epoch=channel.epoch)],
        positions={channel.pk: position},
        asgi_send=client.send,
        on_close=lambda reason: setattr(client, "closed_reason", reason),
    )
    dispatched = await relay.subscribe(stream, channel.pk, channel.slug)
    if position < dispatched:
        stream.catch_up(channel.pk, target=dispatched)
    return stream


@pytest.mark.parametrize("replay_batch", [500, 4])
async def test_resumes_with_mixed_cursors_get_exactly_their_missed_messages_then_live_ones(
    relay: Relay, monkeypatch: pytest.MonkeyPatch, replay_batch: int
) -> None:
    channel = (await sync_to_async(upsert_channel)("storm-resume"))[0]
    for n in range(1, 11):
        await apublish(channel, n)
    await relay.open_feed(channel.pk, channel.slug)
    # The relay's receive loop runs in this loop.
    await until(lambda: relay.feeds[channel.pk].position >= 10, what="the feed at 10")

    async def publish_during_the_first_batch(batch: int) -> None:
        # Published after the streams asked and before (then after) their shared read:
        # the first is in the read and also arrives live; the second only arrives live.
        if batch == 1:
            await apublish(channel, "during")

    reads = count_batches(
        monkeypatch,
        replay._batcher,
        before=publish_during_the_first_batch,
        after=publish_during_the_first_batch,
    )
    positions = [0, 0, 2, 3, 3, 7, 9, 10]
    clients = [Client() for _ in positions]
    with override_settings(PUSHSITE={"REPLAY_BATCH_SIZE": replay_batch}):
        for client, position in zip(clients, positions, strict=True):
            await open_resumed(relay, channel, client, position)
        # The eight streams asked within one loop turn: their first reads are one batch.
        await until(lambda: reads, what="the first shared read")
        assert reads[0] == len([p for p in positions if p < 10])
        # Live after the seam: two more.
        for client, position in zip(clients, positions, strict=True):
            await client.wait_for(12 - position)
        await apublish(channel, "live 1")
        await apublish(channel, "live 2")
        for client, position in zip(clients, positions, strict=True):
            events = await client.wait_for(14 - position)
            assert [int(event.id.split("~")[0]) for event in events] == list(range(position + 1, 15))
            assert client.closed_reason == ""
    if replay_batch == 500:
        # One hop for every stream's catch-up; a second when the message published after the
        # shared read was seen live before the streams went live (they read on to it).
        assert reads[0] == 7
        assert len(reads) <= 2
    # Nothing more came (no duplicate after the last one): a last message through the same
    # feed arrives after anything sent before it, and right after "live 2".
    await apublish(channel, "last")
    for client, position in zip(clients, positions, strict=True):
        events = await client.wait_for(15 - position)
        assert [int(event.id.split("~")[0]) for event in events] == list(range(position + 1, 16))


async def test_resumes_at_mixed_positions_each_get_their_exact_bytes_in_one_write_shared_per_position(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = (await sync_to_async(upsert_channel)("storm-bytes"))[0]
    for n in range(1, 9):
        await apublish(channel, {"n": n, "text": "line\nbreak"})
    await relay.open_feed(channel.pk, channel.slug)
    await until(lambda: relay.feeds[channel.pk].position >= 8, what="the feed at 8")
    reads = count_batches(monkeypatch, replay._batcher)
    metrics.take_delivery_counts()
    positions = [0, 0, 3, 5, 5, 7]
    clients = [RawClient() for _ in positions]
    streams = [
        await open_resumed(relay, channel, client, position)
        for client, position in zip(clients, positions, strict=True)
    ]
    for client, position in zip(clients, positions, strict=True):
        await client.wait_for(8 - position)
    assert reads == [len(positions)]
    stored = await sync_to_async(frames_after)(channel.pk, channel.slug, 0, 100)
    for client, position in zip(clients, positions, strict=True):
        # The whole catch-up in one write, byte for byte what frame-by-frame writes were.
        assert client.bodies == [single_channel_bytes(stored[position:], channel.epoch)], position
    # Streams resuming from one position were handed one and the same object.
    assert clients[0].bodies[0] is clients[1].bodies[0]
    assert clients[3].bodies[0] is clients[4].bodies[0]
    assert all(stream.catching_up == {} and not stream._catch_up_tasks for stream in streams)
    # Counted per message, once per stream it was replayed to (added up once per batch, in the
    # loop turn after the batch's writes: before any client saw its frames).
    _, replayed = metrics.take_delivery_counts()
    assert replayed == {(channel.pk, n): len([p for p in positions if p < n]) for n in range(1, 9)}
    # Then live, once each.
    await apublish(channel, "live")
    for client, position in zip(clients, positions, strict=True):
        events = await client.wait_for(9 - position)
        assert [int(event.id.split("~")[0]) for event in events] == list(range(position + 1, 10))
        assert client.closed_reason == ""


async def test_a_catch_up_that_must_wait_for_the_socket_takes_live_messages_once_after_it(
    relay: Relay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The direct path: the joined slice fills the socket, so the stream waits; what arrives meanwhile comes after."""
    channel = (await sync_to_async(upsert_channel)("storm-held"))[0]
    for n in range(1, 6):
        await apublish(channel, n)
    await relay.open_feed(channel.pk, channel.slug)
    await until(lambda: relay.feeds[channel.pk].position >= 5, what="the feed at 5")
    reads = count_batches(monkeypatch, replay._batcher)
    writer = HeldWriter()
    closed: list[str] = []
    stream = Stream(
        channels=[StreamChannel(id=channel.pk, slug=channel.slug, epoch=channel.epoch)],
        positions={channel.pk: 1},
        asgi_send=None,
        on_close=closed.append,
        direct=writer,
    )
    dispatched = await relay.subscribe(stream, channel.pk, channel.slug)
    stream.catch_up(channel.pk, target=dispatched)
    await until(lambda: writer.writes, what="the catch-up's write")
    # Held above the high-water mark: published now, seen live while still catching up.
    await apublish(channel, "during 1")
    await apublish(channel, "during 2")
    await until(lambda: stream.catching_up.get(channel.pk) == 7, what="the catch-up's target at 7")
    assert len(writer.writes) == 1
    assert len(reads) == 1
    writer.let_go()
    await until(lambda: channel.pk not in stream.catching_up, what="the catch-up ended")
    await apublish(channel, "live")
    await until(lambda: stream.positions[channel.pk] >= 8, what="the stream at 8")
    stored = await sync_to_async(frames_after)(channel.pk, channel.slug, 0, 100)
    assert b"".join(writer.writes) == single_channel_bytes(stored[1:], channel.epoch)
    assert writer.writes[0] == single_channel_bytes(stored[1:5], channel.epoch)
    assert len(reads) == 2
    assert closed == []
    stream.close("test over")
    relay.unsubscribe(stream)


# --- admission ------------------------------------------------------------------------


def request_for(*slugs: str, **changes: object) -> StreamRequest:
    fields: dict[str, object] = {
        "slugs": list(slugs),
        "cursor": None,
        "token": None,
        "authorization": None,
        "session_key": None,
        "origin": None,
        "own_origin": "http://127.0.0.1",
    }
    fields.update(changes)
    return StreamRequest(**fields)  # type: ignore[arg-type]


def channel_queries(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The channel-table queries of each admission batch (run in the database thread)."""
    per_batch: list[list[str]] = []
    authorize_all = admit_from_database.authorize_all

    def counted(requests: list[StreamRequest]) -> list[Authorized | Exception]:
        with CaptureQueriesContext(connection) as queries:
            answers = authorize_all(requests)
        per_batch.append([q["sql"] for q in queries.captured_queries if CHANNEL_ROWS in q["sql"]])
        return answers

    monkeypatch.setattr(admit_from_database._batcher, "_run", sync_to_async(counted, thread_sensitive=True))
    return per_batch


async def test_a_batch_of_admissions_answers_each_request_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    def setup() -> dict[str, Any]:
        public = upsert_channel("batch-public", allowed_origins=["https://allowed.example"])[0]
        private = upsert_channel("batch-private", visibility="private")[0]
        for n in range(5):
            store_message(public, n)
        _live_key, live_secret = create_api_key("reader", ["batch-private"])
        revoked_key, revoked_secret = create_api_key("revoked", ["batch-private"])
        minted_by_revoked = mint_token([private], key=revoked_key)
        ApiKey.objects.filter(pk=revoked_key.pk).update(is_active=False)
        return {
            "public": public,
            "private": private,
            "live_secret": live_secret,
            "revoked_secret": revoked_secret,
            "token": mint_token([private], ttl=60),
            "minted_by_revoked": minted_by_revoked,
        }

    made = await sync_to_async(setup)()
    public, private = made["public"].slug, made["private"].slug
    batches = channel_queries(monkeypatch)
    requests = {
        "resume at 2": request_for(public, cursor="2"),
        "resume at 4": request_for(public, cursor="4"),
        "bad cursor": request_for(public, cursor="not a cursor"),
        "unknown channel": request_for("batch-nowhere", cursor="1"),
        "private, no credential": request_for(private, cursor="0"),
        "private, token": request_for(private, token=made["token"], cursor="0"),
        "private, key": request_for(private, authorization=f"Bearer {made['live_secret']}", cursor="0"),
        "revoked key": request_for(public, authorization=f"Bearer {made['revoked_secret']}", cursor="1"),
        "token of a revoked key": request_for(private, token=made["minted_by_revoked"], cursor="0"),
        "forged token": request_for(private, token=made["token"] + "x", cursor="0"),
        "origin not allowed": request_for(public, origin="https://elsewhere.example", cursor="1"),
        "origin allowed": request_for(public, origin="https://allowed.example", cursor="1"),
    }
    answers = dict(
        zip(
            requests,
            await asyncio.gather(
                *(admit_from_database(r) for r in requests.values()), return_exceptions=True
            ),
            strict=True,
        )
    )
    assert len(batches) == 1  # one hop for all twelve
    assert len(batches[0]) == 1  # one channel query for all their slugs

    def admitted(name: str) -> Authorized:
        answer = answers[name]
        assert isinstance(answer, Authorized), (name, answer)
        return answer

    def refused(name: str) -> PushsiteError:
        answer = answers[name]
        assert isinstance(answer, PushsiteError), (name, answer)
        return answer

    public_id = made["public"].pk
    assert admitted("resume at 2").positions == {public_id: 2}
    assert admitted("resume at 4").positions == {public_id: 4}
    assert admitted("resume at 2").history
    assert admitted("origin allowed").allow_origin == "https://allowed.example"
    assert admitted("private, token").expires_at is not None
    assert admitted("private, key").expires_at is None
    assert [type(refused(name)) for name in requests if not isinstance(answers[name], Authorized)] == [
        InvalidInput,  # bad cursor: 400
        ChannelNotFound,  # unknown: 404
        type(refused("private, no credential")),
        NotAuthenticated,  # revoked key: 401
        type(refused("token of a revoked key")),
        PermissionDenied,  # forged token: 403
        PermissionDenied,  # origin: 403
    ]
    # A private channel refused is answered exactly like an unknown one (404, same sentence).
    for name in ("private, no credential", "token of a revoked key"):
        assert refused(name).status == 404
        assert str(refused(name)) == f"No active channel is called {private!r}."
    assert refused("bad cursor").status == 400
    assert refused("revoked key").status == 401
    assert refused("forged token").status == 403
    assert refused("origin not allowed").status == 403


async def test_an_expired_token_in_a_batch_is_refused_and_the_others_admitted() -> None:
    def setup() -> tuple[str, str, str]:
        private = upsert_channel("batch-expiring", visibility="private")[0]
        public = upsert_channel("batch-open")[0]
        # Signed by hand: mint_token refuses a lifetime under a second.
        expired = {"ch": [[private.pk, private.slug]], "exp": int(time.time()) - 1, "sub": "", "key": None}
        return private.slug, public.slug, signing.dumps(expired, salt=TOKEN_SALT, compress=True)

    private, public, expired = await sync_to_async(setup)()
    answers = await asyncio.gather(
        admit_from_database(request_for(public, cursor="0")),
        admit_from_database(request_for(private, token=expired, cursor="0")),
        admit_from_database(request_for(public, cursor="0")),
        return_exceptions=True,
    )
    assert isinstance(answers[0], Authorized)
    assert isinstance(answers[1], TokenExpired)
    assert answers[1].status == 403
    assert isinstance(answers[2], Authorized)


async def test_a_database_failure_is_every_request_of_the_batch_s_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def down(requests: list[StreamRequest]) -> list[Authorized | Exception]:
        raise OperationalError("database is locked")

    monkeypatch.setattr(admit_from_database._batcher, "_run", sync_to_async(down, thread_sensitive=True))
    answers = await asyncio.gather(
        admit_from_database(request_for("a", cursor="1")),
        admit_from_database(request_for("b", cursor="1")),
        return_exceptions=True,
    )
    assert all(isinstance(answer, OperationalError) for answer in answers)


# --- through a server, on both write paths ----------------------------------------------


async def test_resumes_opening_together_each_get_their_rest_once_and_the_refused_their_own_error(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    sent = [await api.publish(server.url, api_key, channel, n) for n in range(6)]
    cursors = [sent[0], sent[0], sent[2], sent[3], sent[5], sent[1]]
    subscribers = [
        Subscriber(f"{server.url}/events/{channel}/", headers={"Last-Event-ID": str(cursor)})
        for cursor in cursors
    ]

    async def refused(path: str, headers: dict[str, str]) -> tuple[int, str]:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{server.url}{path}", headers=headers)
        return response.status_code, response.json()["error"]

    async def publish_meanwhile() -> list[int]:
        return [await api.publish(server.url, api_key, channel, f"meanwhile {n}") for n in range(3)]

    async with asyncio.TaskGroup() as group:
        opening = [group.create_task(subscriber.__aenter__()) for subscriber in subscribers]
        bad_cursor = group.create_task(refused(f"/events/{channel}/", {"Last-Event-ID": "no cursor"}))
        unknown = group.create_task(refused("/events/batch-nowhere/", {"Last-Event-ID": str(sent[0])}))
        meanwhile = group.create_task(publish_meanwhile())
    try:
        assert [task.result().status for task in opening] == [200] * len(subscribers)
        assert bad_cursor.result() == (400, "invalid")
        assert unknown.result() == (404, "channel_not_found")
        stored = sent + meanwhile.result()
        for subscriber, cursor in zip(subscribers, cursors, strict=True):
            missed = [sequence for sequence in stored if sequence > cursor]
            assert ids(await subscriber.events(len(missed))) == missed
        # Then live, with nothing repeated at the seam.
        last = await api.publish(server.url, api_key, channel, "live")
        for subscriber in subscribers:
            assert ids([await subscriber.next_event()]) == [last]
    finally:
        for subscriber in subscribers:
            await subscriber.close()
