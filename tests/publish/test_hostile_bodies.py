"""Every endpoint family that reads JSON refuses hostile JSON the same way, through events/publish/validate.py.

One table of hostile values, sent to the JSON publish API (Django view and the
API-key fast path share it), the streaming publish (an NDJSON line, and the
``data:`` of a ``text/event-stream`` event), token minting and a chat post. Each
answer is a 4xx in the contract's JSON shape naming the problem, and nothing is
stored: no message, and for a streamed publish only its failed end event.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient

from events.exceptions import InvalidInput
from events.models import Channel, Message
from events.provisioning import upsert_channel
from events.publish import api, validate
from events.publish import store as publishing
from tests.support.asgi import EVENT_STREAM, NDJSON, stream_publish

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("empty_cache")]

DEEP = "[" * 1000 + "]" * 1000


@dataclass(frozen=True)
class Hostile:
    """A JSON value (as text) that no endpoint may take, and the words its refusal must use."""

    name: str
    value: str
    status: int
    fragment: str


VALUES = [
    Hostile("number out of range", "1e400", 400, "out of range"),
    Hostile("negative number out of range", "-1.5e999", 400, "out of range"),
    Hostile("5000-digit integer", "9" * 5000, 400, "integer of 5000 digits"),
    Hostile("310-digit integer", "9" * 310, 400, "integer of 310 digits"),
    Hostile("long mantissa, small exponent", "9" * 299 + "e99", 400, "out of range"),
    Hostile("lone high surrogate", '"a\\ud800b"', 400, "lone surrogate (U+D800)"),
    Hostile("lone low surrogate", '"\\udc00"', 400, "lone surrogate (U+DC00)"),
    Hostile("NUL", '"x\\u0000y"', 400, "U+0000 (NUL)"),
    Hostile("NUL in a key", '{"\\u0000": 1}', 400, "U+0000 (NUL)"),
    Hostile("1000-deep nesting", DEEP, 400, "more than 32 deep"),
    Hostile("33 deep with the body", "[" * 32 + "]" * 32, 400, "more than 32 deep"),
    Hostile("NaN", "NaN", 400, "NaN is not a JSON value"),
    Hostile("Infinity", "[-Infinity]", 400, "Infinity is not a JSON value"),
]


@pytest.fixture
def channel() -> Channel:
    return upsert_channel("hostile")[0]


@dataclass
class Refusal:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


Family = Callable[[str, str, User], Awaitable[Refusal]]


async def _django(response: Any) -> Refusal:
    headers = {name.lower(): value for name, value in response.items()}
    return Refusal(response.status_code, headers, json.loads(response.content))


async def json_publish(body: str, key: str, alice: User) -> Refusal:
    response = await AsyncClient().post(
        "/api/channels/hostile/messages",
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )
    return await _django(response)


async def fast_path_publish(body: str, key: str, alice: User) -> Refusal:
    # The API-key fast path (events/publish/fast_path.py) stores through api.publish_with_key.
    store = functools.partial(api.publish_with_key, f"Bearer {key}", "hostile", body.encode())
    response = await api.publish_response(store, "hostile", "/api/channels/hostile/messages")
    return await _django(response)


async def stream_ndjson(body: str, key: str, alice: User) -> Refusal:
    answer = await stream_publish("hostile", [body.encode() + b"\n"], authorization=f"Bearer {key}")
    return Refusal(answer.status, answer.headers, answer.json())


async def mint_token(body: str, key: str, alice: User) -> Refusal:
    response = await AsyncClient().post(
        "/api/tokens", body, content_type="application/json", headers={"Authorization": f"Bearer {key}"}
    )
    return await _django(response)


async def chat_post(body: str, key: str, alice: User) -> Refusal:
    client = AsyncClient()
    await client.aforce_login(alice)
    return await _django(await client.post("/rooms/room/messages", body, content_type="application/json"))


# Each family puts the hostile value where the field would otherwise take it.
FAMILIES: dict[str, tuple[Family, Callable[[str], str]]] = {
    "JSON publish": (json_publish, lambda value: '{"event": "x", "data": ' + value + "}"),
    "fast-path publish": (fast_path_publish, lambda value: '{"data": ' + value + "}"),
    "streamed NDJSON line": (stream_ndjson, lambda value: '{"data": ' + value + "}"),
    "token minting": (mint_token, lambda value: '{"channels": ["hostile"], "subject": ' + value + "}"),
    "chat post": (chat_post, lambda value: '{"text": ' + value + "}"),
}

# Whole bodies that are no JSON object of the right fields, or too large.
SHAPES = {
    "JSON publish": ('{"data": 1, "bogus": 2}', '{"data": "%s"}'),
    "fast-path publish": ('{"data": 1, "bogus": 2}', '{"data": "%s"}'),
    "streamed NDJSON line": ('{"data": 1, "bogus": 2}', '{"data": "%s"}'),
    "token minting": ('{"channels": ["hostile"], "bogus": 2}', '{"channels": ["hostile"], "subject": "%s"}'),
    "chat post": ('{"text": "hi", "bogus": 2}', '{"text": "%s"}'),
}


def stored_messages() -> list[tuple[str, Any]]:
    return list(Message.objects.order_by("pk").values_list("event", "data"))


async def assert_refused(refusal: Refusal, status: int, fragment: str, family: str, channel: Channel) -> None:
    assert refusal.status == status, refusal.body
    assert refusal.headers["content-type"] == "application/json"
    assert refusal.headers["cache-control"] == "no-store"
    assert refusal.body["error"] == {400: "invalid", 413: "too_large"}[status]
    assert fragment in refusal.body["detail"], refusal.body["detail"]
    stored = [row async for row in Message.objects.order_by("pk").values_list("event", "data")]
    if family.startswith("streamed"):
        # Subscribers are told the stream failed, and why; no part was stored.
        assert stored == [
            (
                "pushsite.stream.end",
                {
                    "stream": refusal.body["stream"],
                    "parts": 0,
                    "status": "failed",
                    "reason": refusal.body["detail"],
                },
            )
        ]
        assert refusal.body["status"] == "failed"
    else:
        assert stored == []


@pytest.mark.parametrize("hostile", VALUES, ids=[value.name for value in VALUES])
@pytest.mark.parametrize("family", list(FAMILIES))
async def test_every_family_refuses_each_hostile_value(
    family: str, hostile: Hostile, channel: Channel, key: str, alice: User
) -> None:
    send, wrap = FAMILIES[family]
    refusal = await send(wrap(hostile.value), key, alice)
    await assert_refused(refusal, hostile.status, hostile.fragment, family, channel)


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_every_family_refuses_a_body_that_is_not_an_object(
    family: str, channel: Channel, key: str, alice: User
) -> None:
    send, _wrap = FAMILIES[family]
    refusal = await send("[1, 2]", key, alice)
    await assert_refused(refusal, 400, "must be a JSON object", family, channel)


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_every_family_refuses_an_unknown_field(
    family: str, channel: Channel, key: str, alice: User
) -> None:
    send, _wrap = FAMILIES[family]
    refusal = await send(SHAPES[family][0], key, alice)
    await assert_refused(refusal, 400, "Unknown field 'bogus'", family, channel)


@pytest.mark.parametrize("family", list(FAMILIES))
async def test_every_family_refuses_an_oversize_body_with_413(
    family: str, channel: Channel, key: str, alice: User
) -> None:
    send, _wrap = FAMILIES[family]
    refusal = await send(SHAPES[family][1] % ("x" * 70_000), key, alice)
    fragment = "longer than the limit" if family.startswith("streamed") else "the limit is"
    await assert_refused(refusal, 413, fragment, family, channel)


# --- the data: field of a text/event-stream publish -------------------------------------


# SSE data is a document of its own: 32 deep there is within the limit.
SSE_VALUES = [value for value in VALUES if value.name != "33 deep with the body"]


@pytest.mark.parametrize("hostile", SSE_VALUES, ids=[value.name for value in SSE_VALUES])
async def test_a_streamed_sse_data_field_is_read_by_the_same_parser(
    hostile: Hostile, channel: Channel, key: str
) -> None:
    body = f"event: token\ndata: {hostile.value}\n\n".encode()
    answer = await stream_publish("hostile", [body], authorization=f"Bearer {key}", content_type=EVENT_STREAM)
    refusal = Refusal(answer.status, answer.headers, answer.json())
    await assert_refused(refusal, hostile.status, hostile.fragment, "streamed SSE data", channel)
    assert refusal.body["detail"].startswith("Event 1's data ")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("raw \x00 NUL", "U+0000 (NUL)"), ("x" * 70_000, "the limit")],
    ids=["raw NUL in text", "oversize"],
)
async def test_sse_data_that_is_text_keeps_the_string_rules(
    text: str, fragment: str, channel: Channel, key: str
) -> None:
    body = f"data: {text}\n\n".encode()
    answer = await stream_publish("hostile", [body], authorization=f"Bearer {key}", content_type=EVENT_STREAM)
    refusal = Refusal(answer.status, answer.headers, answer.json())
    await assert_refused(refusal, 413 if "limit" in fragment else 400, fragment, "streamed SSE", channel)


async def test_a_bad_line_after_good_ones_ends_the_stream_failed_after_them(
    channel: Channel, key: str
) -> None:
    lines = [b'{"data": 1}\n', b'{"data": 2}\n', b'{"data": 1e400}\n', b'{"data": 4}\n']
    answer = await stream_publish(
        "hostile", [b"".join(lines)], authorization=f"Bearer {key}", content_type=NDJSON
    )
    assert answer.status == 400
    assert answer.json()["detail"].startswith("Line 3 holds the number 1e400")
    rows = [row async for row in Message.objects.order_by("pk").values_list("event", "data")]
    assert [event for event, _ in rows] == ["message", "message", "pushsite.stream.end"]
    payloads = [data for _, data in rows if isinstance(data, dict)]
    assert len(payloads) == 3
    assert [data["data"] for data in payloads[:2]] == [1, 2]
    assert payloads[2]["status"] == "failed"
    assert payloads[2]["parts"] == 2


# --- what is still accepted ------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "1.7976931348623157e308",
        "-" + "9" * 300,
        "1" + "0" * 308,
        "1e-400",
        '"\\ud83d\\ude00"',
        '"a\\\\u0000b"',
        "[" * 31 + "]" * 31,
        '"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["',
    ],
    ids=[
        "largest double",
        "300-digit integer",
        "309-digit integer within range",
        "underflow to 0",
        "surrogate pair",
        "escaped backslash",
        "31 deep",
        "brackets in a string",
    ],
)
async def test_values_inside_the_rules_are_published(
    value: str, channel: Channel, key: str, alice: User
) -> None:
    refusal = await json_publish('{"data": ' + value + "}", key, alice)
    assert refusal.status == 201, refusal.body
    assert refusal.body["data"] == json.loads(value)


def test_a_value_from_code_with_nul_is_refused_before_the_database(channel: Channel) -> None:
    # publish() from Django code, commands and the upstream republisher: the same string rule.
    with pytest.raises(InvalidInput, match=r"U\+0000"):
        publishing.publish("hostile", {"text": "a\x00b"})
    with pytest.raises(InvalidInput, match="lone surrogate"):
        publishing.publish("hostile", ["\udfff"])
    assert not Message.objects.exists()


def test_depth_counts_arrays_and_objects_outside_strings(settings: Any) -> None:
    settings.PUSHSITE = {"MAX_JSON_DEPTH": 3}
    assert validate.loads('{"a": [{"b": "[[[[[[[["}]}') == {"a": [{"b": "[[[[[[[["}]}
    with pytest.raises(InvalidInput, match="more than 3 deep"):
        validate.loads('{"a": [{"b": []}]}')


def test_an_unclosed_string_full_of_escapes_is_scanned_in_linear_time() -> None:
    # A quadratic scan of '"\\"\\"...' would take minutes; the parser must refuse it at once.
    body = '["' + '\\"' * 30_000 + "[" * 40
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="not valid JSON"):
        validate.loads(body, limit=1_000_000)
    assert time.perf_counter() - started < 0.5
