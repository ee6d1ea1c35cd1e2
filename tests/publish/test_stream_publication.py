"""events/publish/stream_publication.py: one logical stream's parts, limits and single end event, keep and fold."""

from __future__ import annotations

import pytest
from django.test import override_settings

from events.exceptions import InvalidInput, PayloadTooLarge
from events.models import Channel, Message
from events.provisioning import upsert_channel
from events.publish.store import store_platform_message
from events.publish.stream_publication import STREAM_END_EVENT, StreamPublication

pytestmark = pytest.mark.django_db(transaction=True)


def channel(storage: str = "keep") -> Channel:
    return upsert_channel("answers", stream_storage=storage)[0]


def stored() -> list[tuple[str, object]]:
    return list(Message.objects.order_by("sequence").values_list("event", "data"))


def test_keep_stores_every_part_then_one_end() -> None:
    stream = StreamPublication(channel(), publisher="test")
    stream.part("Hel", event="token")
    stream.part({"n": 2})
    end = stream.end()
    assert end is not None
    assert stored() == [
        ("token", {"stream": stream.id, "part": 1, "data": "Hel"}),
        ("message", {"stream": stream.id, "part": 2, "data": {"n": 2}}),
        (STREAM_END_EVENT, {"stream": stream.id, "parts": 2, "status": "done", "reason": None}),
    ]
    assert stream.summary() == {
        "stream": stream.id,
        "channel": "answers",
        "parts": 2,
        "status": "done",
        "end_id": end.sequence,
    }
    # The end is sent once; nothing follows it.
    assert stream.end("failed", "late") is None
    with pytest.raises(RuntimeError, match="already ended"):
        stream.part("more")
    assert len(stored()) == 3


def test_fold_stores_nothing_until_the_end_then_the_whole_stream() -> None:
    stream = StreamPublication(channel("fold"), publisher="test")
    stream.part("Hel", event="token")
    stream.part("lo", event="token")
    assert stored() == []
    stream.end("failed", "The publisher disconnected mid-stream.")
    assert stored() == [
        (
            STREAM_END_EVENT,
            {
                "stream": stream.id,
                "parts": 2,
                "status": "failed",
                "reason": "The publisher disconnected mid-stream.",
                "folded": [{"event": "token", "data": "Hel"}, {"event": "token", "data": "lo"}],
            },
        )
    ]


def test_stream_ids_differ() -> None:
    target = channel()
    assert StreamPublication(target, publisher="a").id != StreamPublication(target, publisher="a").id


@pytest.mark.parametrize(
    ("override", "storage", "parts", "detail"),
    [
        ({"STREAM_MAX_PARTS": 2}, "keep", ["a", "b", "c"], "A stream may have at most 2 parts."),
        (
            {"STREAM_MAX_BYTES": 8},
            "keep",
            ["abc", "def"],
            "A stream may carry at most 8 bytes of data in all.",
        ),
        (
            {"MAX_MESSAGE_BYTES": 700},
            "fold",
            ["x" * 40, "y" * 40, "z" * 40],
            "The channel 'answers' folds each stream into one message, "
            "and this stream would no longer fit in 700 bytes.",
        ),
    ],
)
def test_limits_refuse_the_part_that_breaks_them(
    override: dict[str, int], storage: str, parts: list[str], detail: str
) -> None:
    stream = StreamPublication(channel(storage), publisher="test")
    with override_settings(PUSHSITE=override):
        for data in parts[:-1]:
            stream.part(data)
        with pytest.raises(PayloadTooLarge) as error:
            stream.part(parts[-1])
        assert error.value.detail == detail
        assert stream.parts == len(parts) - 1
        # The stream can still end, and the end fits.
        stream.end("failed", detail)
    assert stored()[-1][0] == STREAM_END_EVENT


def test_parts_are_validated_like_publishes() -> None:
    stream = StreamPublication(channel(), publisher="test")
    with pytest.raises(InvalidInput, match="reserved"):
        stream.part(1, event="pushsite.stream.end")
    with pytest.raises(InvalidInput, match="1 to 64"):
        stream.part(1, event="two words")
    assert stream.parts == 0
    assert stored() == []


def test_only_platform_events_take_the_platform_path() -> None:
    target = channel()
    with pytest.raises(ValueError, match=r"start with 'pushsite\.'"):
        store_platform_message(target, {}, event="message")
