"""Group commit (issue 17): publishes queued together are stored in one transaction, each by its own rules."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from channels.db import database_sync_to_async as db
from django.db import OperationalError, connection
from django.db.backends.base.base import BaseDatabaseWrapper

from events.access import auth
from events.models import ApiKey, Channel, Message, PublishReceipt
from events.provisioning import create_api_key, upsert_channel
from events.publish import api, idempotency, writers
from events.publish import store as publishing
from events.publish.idempotency import Replay
from tests.support.waiting import all_queued

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _forget_keys() -> Iterator[None]:
    auth.verified_keys.clear()
    yield
    auth.verified_keys.clear()


class Recording(writers.GroupCommit[publishing.Publish, "Message | Replay"]):
    """The process's group commit, counting the batches it stored."""

    def __init__(self) -> None:
        super().__init__(self._record)
        self.batches: list[int] = []

    def _record(self, batch: list[publishing.Publish]) -> list[publishing.Outcome]:
        self.batches.append(len(batch))
        return publishing.store_batch(batch)


@pytest.fixture
def committer(monkeypatch: pytest.MonkeyPatch) -> Recording:
    recording = Recording()
    monkeypatch.setattr(publishing, "group_commit", recording)
    return recording


async def stored_rows() -> list[tuple[int, Any]]:
    rows: list[tuple[int, Any]] = await db(
        lambda: list(Message.objects.order_by("sequence").values_list("sequence", "data"))
    )()
    return rows


def body(data: Any, event: str = "note") -> bytes:
    return json.dumps({"event": event, "data": data}).encode()


async def test_a_lone_publish_is_stored_at_once_in_a_batch_of_one(committer: Recording) -> None:
    await db(upsert_channel)("news")
    _, secret = await db(create_api_key)("k", all_channels=True)
    started = time.monotonic()
    message = await api.publish_with_key(f"Bearer {secret}", "news", body(1))
    assert isinstance(message, Message)
    assert message.sequence == 1
    assert committer.batches == [1]
    assert time.monotonic() - started < 5


async def test_publishes_queued_together_are_one_batch_in_order_per_channel(committer: Recording) -> None:
    await db(upsert_channel)("news")
    await db(upsert_channel)("sport")
    _, secret = await db(create_api_key)("k", all_channels=True)
    await api.publish_with_key(f"Bearer {secret}", "news", body(0))  # the key is now remembered
    slugs = ["news", "sport", "news", "news", "sport", "news"]
    with committer.held():
        tasks = [
            asyncio.create_task(api.publish_with_key(f"Bearer {secret}", slug, body(n)))
            for n, slug in enumerate(slugs, start=1)
        ]
        await all_queued(committer, len(slugs))
    answers = await asyncio.gather(*tasks)
    assert committer.batches == [1, len(slugs)]
    assert [(m.channel.slug, m.sequence, m.data) for m in answers if isinstance(m, Message)] == [
        ("news", 2, 1),
        ("sport", 1, 2),
        ("news", 3, 3),
        ("news", 4, 4),
        ("sport", 2, 5),
        ("news", 5, 6),
    ]
    rows = await db(
        lambda: list(
            Message.objects.order_by("channel__slug", "sequence").values_list(
                "channel__slug", "sequence", "data"
            )
        )
    )()
    assert rows == [
        ("news", 1, 0),
        ("news", 2, 1),
        ("news", 3, 3),
        ("news", 4, 4),
        ("news", 5, 6),
        ("sport", 1, 2),
        ("sport", 2, 5),
    ]
    sequences = await db(lambda: dict(Channel.objects.values_list("slug", "last_sequence")))()
    assert sequences == {"news": 5, "sport": 2}


async def test_a_revoked_key_is_refused_alone_and_a_repeated_key_stores_once(committer: Recording) -> None:
    await db(upsert_channel)("news")
    _, good = await db(create_api_key)("good", all_channels=True)
    revoked_key, revoked = await db(create_api_key)("revoked", all_channels=True)
    for secret in (good, revoked):
        await api.publish_with_key(f"Bearer {secret}", "news", body("warm"))  # remembered
    # Revoked as another process would: no signal, the remembered key stays.
    await db(lambda: ApiKey.objects.filter(pk=revoked_key.pk).update(is_active=False))()
    requests = [
        (good, body("a"), "once"),
        (revoked, body("r"), None),
        (good, body("a"), "once"),  # the same key and body: the first's answer
        (good, body("b"), None),
        (good, body("other"), "once"),  # the same key, another body: 422
        (revoked, body("r2"), "mine"),
    ]
    with committer.held():
        tasks = [
            asyncio.create_task(api.publish_with_key(f"Bearer {secret}", "news", payload, key))
            for secret, payload, key in requests
        ]
        await all_queued(committer, len(requests))
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    assert committer.batches == [1, 1, len(requests)]
    first, refused, replayed, plain, reused, refused_with_key = answers
    assert isinstance(first, Message)
    assert isinstance(plain, Message)
    assert (first.sequence, plain.sequence) == (3, 4)
    assert isinstance(replayed, Replay)
    assert (replayed.status, replayed.body["id"], replayed.message_id) == (201, 3, first.pk)
    assert type(refused).__name__ == type(refused_with_key).__name__ == "NotAuthenticated"
    assert type(reused).__name__ == "IdempotencyKeyReused"
    stored = await stored_rows()
    assert stored == [(1, "warm"), (2, "warm"), (3, "a"), (4, "b")]
    receipts = await db(lambda: list(PublishReceipt.objects.values_list("key", "message_id")))()
    assert receipts == [("once", first.pk)]
    assert await db(lambda: Channel.objects.get(slug="news").last_sequence)() == 4


async def test_a_batch_whose_commit_fails_answers_no_201_and_a_retry_stores_once(
    committer: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    await db(upsert_channel)("news")
    _, secret = await db(create_api_key)("k", all_channels=True)
    await api.publish_with_key(f"Bearer {secret}", "news", body(0))
    commits: list[str] = []
    real_commit = BaseDatabaseWrapper.commit

    def failing_commit(self: BaseDatabaseWrapper) -> None:
        if threading.current_thread().name == "pushsite-group-commit":
            commits.append("failed")
            raise OperationalError("server closed the connection unexpectedly")
        real_commit(self)

    def store(n: int, key: str) -> Any:
        return api.publish_response(
            lambda: api.publish_with_key(f"Bearer {secret}", "news", body(n), key),
            "news",
            "/api/channels/news/messages",
        )

    monkeypatch.setattr(BaseDatabaseWrapper, "commit", failing_commit)
    with committer.held():
        tasks = [asyncio.create_task(store(n, f"retry-{n}")) for n in range(1, 4)]
        await all_queued(committer, 3)
    responses = await asyncio.gather(*tasks)
    assert [response.status_code for response in responses] == [503, 503, 503]
    assert commits == ["failed"]  # one batch, one commit, never tried again
    assert committer.batches[-1] == 3
    monkeypatch.setattr(BaseDatabaseWrapper, "commit", real_commit)
    assert await db(Message.objects.count)() == 1
    # The clients retry with their Idempotency-Key: each stored once.
    retried = await asyncio.gather(*(store(n, f"retry-{n}") for n in range(1, 4)))
    again = await asyncio.gather(*(store(n, f"retry-{n}") for n in range(1, 4)))
    assert [response.status_code for response in retried + again] == [201] * 6
    assert [r["Idempotent-Replayed"] if r.has_header("Idempotent-Replayed") else None for r in again] == [
        "true"
    ] * 3
    stored = await stored_rows()
    assert stored == [(1, 0), (2, 1), (3, 2), (4, 3)]


class DeadlockDetected(Exception):
    """What psycopg raises when PostgreSQL aborts a transaction caught in a lock cycle."""

    sqlstate = "40P01"


async def test_a_batch_the_database_rolled_back_itself_is_stored_again_once(
    committer: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Seen under a frozen Redis with two processes on one PostgreSQL: their batches met
    # in a lock cycle and the database aborted one; its publishers got 503s although the
    # outcome was known (rolled back). Now it runs again, and stores each publish once.
    await db(upsert_channel)("news")
    _, secret = await db(create_api_key)("k", all_channels=True)
    await api.publish_with_key(f"Bearer {secret}", "news", body("first"))  # the key verified: queued in order
    real_store_together = publishing._store_together
    aborted: list[int] = []

    def store_then_deadlock(
        publishes: list[publishing.Publish], pruning: list[tuple[int, int]]
    ) -> list[publishing.Outcome]:
        outcomes = real_store_together(publishes, pruning)  # rows written, then the transaction is aborted
        if not aborted:
            aborted.append(len(publishes))
            try:
                raise DeadlockDetected("deadlock detected")
            except DeadlockDetected as cause:
                raise OperationalError("deadlock detected") from cause
        return outcomes

    monkeypatch.setattr(publishing, "_store_together", store_then_deadlock)
    with committer.held():
        tasks = [
            asyncio.create_task(api.publish_with_key(f"Bearer {secret}", "news", body(n), f"k-{n}"))
            for n in range(3)
        ]
        await all_queued(committer, 3)
    stored = await asyncio.gather(*tasks)
    assert aborted == [3]
    assert committer.batches[-1] == 3
    assert [message.sequence for message in stored] == [2, 3, 4]  # type: ignore[union-attr]
    assert await stored_rows() == [(1, "first"), (2, 0), (3, 1), (4, 2)]
    assert await db(PublishReceipt.objects.count)() == 3


async def test_a_receipt_taken_by_another_transaction_rolls_the_batch_back_and_replays(
    committer: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process committed the same key after the batch looked: stored once, the batch's others too."""
    news = await db(lambda: upsert_channel("news")[0])()
    _, secret = await db(create_api_key)("k", all_channels=True)
    await api.publish_with_key(f"Bearer {secret}", "news", body(0))
    prefix = await db(lambda: ApiKey.objects.get().prefix)()
    looked = threading.Event()
    real_receipt_for = idempotency.receipt_for

    def receipt_for_then_race(claim: Any, channel: Any) -> Any:
        found = real_receipt_for(claim, channel)
        if found is None and not looked.is_set():
            looked.set()
            # The other process's publish with this key commits now, on its own connection.
            thread = threading.Thread(target=other_process_publishes, args=(claim.key,))
            thread.start()
            thread.join()
        return found

    def other_process_publishes(key: str) -> None:
        try:
            publishing.store_once(
                news,
                "a",
                event="note",
                publisher="elsewhere",
                claim=idempotency.Claim(key, f"key:{prefix}"),
            )
        finally:
            connection.close()

    monkeypatch.setattr(idempotency, "receipt_for", receipt_for_then_race)
    with committer.held():
        tasks = [
            asyncio.create_task(api.publish_with_key(f"Bearer {secret}", "news", body("a"), "raced")),
            asyncio.create_task(api.publish_with_key(f"Bearer {secret}", "news", body("b"))),
        ]
        await all_queued(committer, 2)
    raced, plain = await asyncio.gather(*tasks)
    assert committer.batches == [1, 2]
    assert isinstance(raced, Replay)
    assert isinstance(plain, Message)
    assert raced.body["id"] == 2  # the other process's message
    assert plain.sequence == 3  # the rolled-back attempt left no gap
    stored = await stored_rows()
    assert stored == [(1, 0), (2, "a"), (3, "b")]


def test_two_group_commits_on_their_own_connections_interleave_without_gap_or_duplicate() -> None:
    """Two processes' writers (two threads, two connections), many publishers each, two channels."""
    upsert_channel("news")
    upsert_channel("sport")
    key_id = create_api_key("k", all_channels=True)[0].pk
    per_publisher = 30
    answers: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def process(name: str) -> None:
        committer: writers.GroupCommit[publishing.Publish, Message | Replay] = writers.GroupCommit(
            publishing.store_batch
        )

        async def publisher(n: int) -> None:
            for i in range(per_publisher):
                slug = "news" if (n + i) % 3 else "sport"
                publish = publishing.prepared(
                    slug, {"p": f"{name}{n}", "i": i}, event="note", publisher=name, key_id=key_id
                )
                stored = await committer.submit(publish)
                assert isinstance(stored, Message)
                with lock:
                    answers.append((slug, stored.sequence))

        async def main() -> None:
            await asyncio.gather(*(publisher(n) for n in range(8)))

        try:
            asyncio.run(main())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=process, args=(name,)) for name in ("A", "B")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert len(answers) == 2 * 8 * per_publisher
    assert len(set(answers)) == len(answers), "an id was acknowledged twice"
    rows = list(Message.objects.values_list("channel__slug", "sequence"))
    assert sorted(rows) == sorted(answers)  # rows = acknowledgements
    for slug, last in Channel.objects.values_list("slug", "last_sequence"):
        sequences = sorted(sequence for s, sequence in rows if s == slug)
        assert sequences == list(range(1, last + 1)), f"{slug} has a gap"
    # Per publisher, its messages were stored in the order it sent them.
    for p in {data["p"] for data in Message.objects.values_list("data", flat=True) if data is not None}:
        mine = Message.objects.select_related("channel").filter(data__p=p).order_by("sequence")
        for slug in ("news", "sport"):
            order = [m.data["i"] for m in mine if m.channel.slug == slug and m.data is not None]
            assert order == sorted(order)


async def test_pruning_runs_after_the_batch_commits_and_its_failure_loses_no_publish(
    committer: Recording, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, settings: Any
) -> None:
    # Pruning used to run inside the publish transaction: its locks on old rows were held
    # until the batch committed (two processes' batches deadlocked on them), and a failed
    # prune failed the publishes with it.
    news = await db(lambda: upsert_channel("news")[0])()
    news.retention_count = 2
    await db(news.save)()
    _, secret = await db(create_api_key)("k", all_channels=True)
    settings.PUSHSITE = {**getattr(settings, "PUSHSITE", {}), "PRUNE_EVERY": 3}
    in_transaction: list[bool] = []
    real_prune = publishing._prune

    def observed_prune(channel_id: int, sequence: int) -> None:
        # The batch's rows are visible to another connection: it has committed.
        in_transaction.append(connection.in_atomic_block)
        real_prune(channel_id, sequence)

    monkeypatch.setattr(publishing, "_prune", observed_prune)
    for n in range(1, 4):
        await api.publish_with_key(f"Bearer {secret}", "news", body(n))
    assert in_transaction == [True]  # its own transaction (select_for_update needs one)
    assert [sequence for sequence, _ in await stored_rows()] == [2, 3]

    def failing_prune(channel_id: int, sequence: int) -> None:
        raise OperationalError("canceling statement due to lock timeout")

    monkeypatch.setattr(publishing, "_prune", failing_prune)
    answers = [await api.publish_with_key(f"Bearer {secret}", "news", body(n)) for n in range(4, 7)]
    assert [message.sequence for message in answers] == [4, 5, 6]  # type: ignore[union-attr]
    assert [sequence for sequence, _ in await stored_rows()] == [2, 3, 4, 5, 6]  # stored, not pruned
    assert "Pruning channel" in caplog.text
