"""A streamed publish stores its parts in chunks (issue 17): in order, never past a failure, each rule per part."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.db import database_sync_to_async as db
from django.db import OperationalError

from events.access import auth
from events.models import ApiKey, Channel, Message
from events.provisioning import create_api_key
from events.publish import fanout, writers
from events.publish import store as publishing
from events.publish.idempotency import Replay
from events.publish.ingest import StreamPublishConsumer
from events.publish.stream_publication import STREAM_END_EVENT
from tests.support.asgi import NDJSON, answer_of, http_scope, stream_publish
from tests.support.waiting import all_queued

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]

CHUNK = writers.MAX_BATCH


@pytest.fixture(autouse=True)
def _forget_keys() -> Iterator[None]:
    auth.verified_keys.clear()
    yield
    auth.verified_keys.clear()


class Recording(writers.GroupCommit[publishing.Publish, Message | Replay]):
    """The process's group commit, counting its batches; ``after(n)`` runs once batch n has committed."""

    def __init__(self) -> None:
        super().__init__(self._record)
        self.batches: list[int] = []
        self.after: Callable[[int], None] | None = None

    def _record(self, batch: list[publishing.Publish]) -> list[publishing.Outcome]:
        outcomes = publishing.store_batch(batch)
        self.batches.append(len(batch))
        if self.after is not None:
            self.after(len(self.batches))
        return outcomes


@pytest.fixture
def committer(monkeypatch: pytest.MonkeyPatch) -> Recording:
    recording = Recording()
    monkeypatch.setattr(publishing, "group_commit", recording)
    return recording


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int | None]:
    """The sequence of every frame handed to the fan-out, in order."""
    frames: list[int | None] = []
    monkeypatch.setattr(fanout, "submit", lambda group, frame: frames.append(frame["sequence"]))
    return frames


def lines(first: int, last: int) -> bytes:
    return b"".join(b'{"event": "token", "data": %d}\n' % number for number in range(first, last + 1))


async def stored_parts() -> list[tuple[int, str, Any]]:
    rows: list[tuple[int, str, Any]] = await db(
        lambda: list(Message.objects.order_by("sequence").values_list("sequence", "event", "data"))
    )()
    return rows


def assert_parts_then_end(rows: list[tuple[int, str, Any]], parts: int, status: str) -> None:
    """``parts`` parts numbered 1..parts on sequences 1..parts, then the end event saying ``status``."""
    assert [sequence for sequence, _, _ in rows] == list(range(1, parts + 2))
    assert [(data["part"], data["data"]) for _, _, data in rows[:-1]] == [(n, n) for n in range(1, parts + 1)]
    _, event, end = rows[-1]
    assert event == STREAM_END_EVENT
    assert (end["parts"], end["status"]) == (parts, status)


async def test_parts_read_while_a_chunk_commits_are_stored_together_in_order(
    committer: Recording, sent: list[int | None], news: Channel, key: str
) -> None:
    answer = await stream_publish("news", [lines(1, 200)], authorization=f"Bearer {key}")
    assert answer.status == 201
    assert answer.json()["parts"] == 200
    # The first part goes alone (nothing else was read yet); the rest in chunks of
    # what was read meanwhile (here up to the loop's next turn: a full chunk, or the
    # rate limit's reservation of its next block), each one batch of at most MAX_BATCH.
    assert committer.batches[0] == 1
    assert sum(committer.batches) == 200
    assert max(committer.batches) <= CHUNK
    assert len(committer.batches) <= 8
    assert_parts_then_end(await stored_parts(), 200, "done")
    assert sent == list(range(1, 202))  # fanned out in order, the end last


async def test_a_slow_publishers_part_is_stored_and_sent_before_more_body_arrives(
    committer: Recording, monkeypatch: pytest.MonkeyPatch, news: Channel, key: str
) -> None:
    frames: list[int] = []
    arrived = asyncio.Event()

    def submit(group: str, frame: dict[str, Any]) -> None:
        frames.append(frame["sequence"])
        if len(frames) == 3:
            arrived.set()

    monkeypatch.setattr(fanout, "submit", submit)
    scope = http_scope(
        "POST",
        "/api/channels/news/stream",
        {"content-type": NDJSON, "authorization": f"Bearer {key}"},
        url_route={"args": (), "kwargs": {"slug": "news"}},
    )
    communicator = ApplicationCommunicator(StreamPublishConsumer.as_asgi(), scope)
    await communicator.send_input({"type": "http.request", "body": lines(1, 3), "more_body": True})
    async with asyncio.timeout(10):
        await arrived.wait()  # no more body: nothing waits for a chunk to fill
    assert [data["part"] for _, _, data in await stored_parts()] == [1, 2, 3]
    assert frames == [1, 2, 3]
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    answer = await answer_of(communicator)
    assert (answer.status, answer.json()["parts"]) == (201, 3)


async def test_a_chunk_whose_commit_fails_ends_the_stream_and_nothing_after_it_is_stored(
    committer: Recording, monkeypatch: pytest.MonkeyPatch, sent: list[int | None], news: Channel, key: str
) -> None:
    # The third chunk's transaction fails, injected where both databases store a batch.
    commits: list[str] = []
    real_store_together = publishing._store_together

    def third_store_fails(
        publishes: list[publishing.Publish], pruning: list[tuple[int, int]]
    ) -> list[publishing.Outcome]:
        commits.append("commit")
        if len(commits) == 3:
            raise OperationalError("server closed the connection unexpectedly")
        return real_store_together(publishes, pruning)

    monkeypatch.setattr(publishing, "_store_together", third_store_fails)
    answer = await stream_publish("news", [lines(1, 200)], authorization=f"Bearer {key}")
    assert answer.status == 503
    assert answer.json()["error"] == "unavailable"
    # Two chunks committed, the third failed; nothing read after it was stored.
    assert len(commits) == 3
    assert len(committer.batches) == 2
    parts = sum(committer.batches)
    assert 1 < parts < 200
    assert answer.json()["parts"] == parts
    assert_parts_then_end(await stored_parts(), parts, "failed")
    assert sent == list(range(1, parts + 2))


@pytest.mark.parametrize("change", ["revoked", "narrowed"])
async def test_a_key_revoked_between_chunks_stores_no_part_of_the_next(
    committer: Recording, news: Channel, change: str
) -> None:
    key, secret = await db(create_api_key)("narrow", ["news"])

    def revoke(batches: int) -> None:
        if batches != 2:
            return
        if change == "revoked":
            ApiKey.objects.filter(pk=key.pk).update(is_active=False)
        else:
            ApiKey.objects.get(pk=key.pk).channels.clear()

    committer.after = revoke
    answer = await stream_publish("news", [lines(1, 200)], authorization=f"Bearer {secret}")
    assert (answer.status, answer.json()["error"]) == (
        (401, "unauthorized") if change == "revoked" else (403, "forbidden")
    )
    # The third chunk was refused whole (its batch stored nothing), and no chunk followed.
    assert len(committer.batches) == 3
    parts = sum(committer.batches[:2])
    assert answer.json()["parts"] == parts
    assert_parts_then_end(await stored_parts(), parts, "failed")


async def test_an_invalid_part_is_answered_after_every_part_before_it_is_stored(
    committer: Recording, news: Channel, key: str
) -> None:
    body = lines(1, 149) + b'{"event": "pushsite.stream.end", "data": 150}\n' + lines(151, 200)
    answer = await stream_publish("news", [body], authorization=f"Bearer {key}")
    assert answer.status == 400
    assert answer.json()["error"] == "invalid"
    assert "pushsite." in answer.json()["detail"]
    assert answer.json()["parts"] == 149
    assert_parts_then_end(await stored_parts(), 149, "failed")


async def test_the_publish_rate_counts_each_part_across_chunks(
    settings: Any, committer: Recording, news: Channel, key: str
) -> None:
    settings.PUSHSITE = {"PUBLISH_RATE_MESSAGES": 150, "PUBLISH_RATE_SECONDS": 3600}
    answer = await stream_publish("news", [lines(1, 200)], authorization=f"Bearer {key}")
    assert answer.status == 429
    assert answer.json()["parts"] == 150
    assert_parts_then_end(await stored_parts(), 150, "failed")


async def test_the_stream_part_limit_holds_across_chunks(
    settings: Any, committer: Recording, news: Channel, key: str
) -> None:
    settings.PUSHSITE = {"STREAM_MAX_PARTS": 100}
    answer = await stream_publish("news", [lines(1, 200)], authorization=f"Bearer {key}")
    assert answer.status == 413
    assert answer.json()["detail"] == "A stream may have at most 100 parts."
    assert answer.json()["parts"] == 100
    assert_parts_then_end(await stored_parts(), 100, "failed")


async def test_a_unit_is_never_split_between_batches_nor_interleaved() -> None:
    stored: list[list[str]] = []

    def store(batch: list[str]) -> list[str]:
        stored.append(batch)
        return [item.upper() for item in batch]

    committer: writers.GroupCommit[str, str] = writers.GroupCommit(store, max_batch=4)
    with committer.held():
        alone = asyncio.ensure_future(committer.submit("a"))
        await all_queued(committer, 1)
        unit = committer.submit_unit(["b1", "b2", "b3", "b4"])
        last = asyncio.ensure_future(committer.submit("c"))
        await all_queued(committer, 6)
        assert committer.queued() == 6
    async with asyncio.timeout(10):
        assert (await alone, await unit, await last) == ("A", ["B1", "B2", "B3", "B4"], "C")
    # "a" and the unit would make five: the unit waits for the next batch, whole.
    assert stored == [["a"], ["b1", "b2", "b3", "b4"], ["c"]]
    with pytest.raises(ValueError, match="1 to 4 items"):
        committer.submit_unit(["x"] * 5)


async def test_a_chunk_in_flight_when_the_server_stops_is_counted_by_the_end_event(
    committer: Recording, sent: list[int | None], news: Channel, key: str
) -> None:
    # The server cancels the stream's task while its first chunk waits to commit: the
    # chunk still commits (the group commit stores what it took), so the failed end
    # event must count it and come after it.
    scope = http_scope(
        "POST",
        "/api/channels/news/stream",
        {"content-type": NDJSON, "authorization": f"Bearer {key}"},
        url_route={"args": (), "kwargs": {"slug": "news"}},
    )
    communicator = ApplicationCommunicator(StreamPublishConsumer.as_asgi(), scope)
    with committer.held():
        await communicator.send_input({"type": "http.request", "body": lines(1, 3), "more_body": True})
        await all_queued(committer, 1)  # part 1 in flight; parts 2 and 3 wait behind it
        communicator.future.cancel()
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await communicator.future
    rows = await stored_parts()
    assert_parts_then_end(rows, 1, "failed")
    assert rows[-1][2]["reason"] == "The server shut down mid-stream."
    assert sent == [1, 2]
