"""Property-based attacks (hypothesis): the encoder, the publish API, cursors and query strings.

Each test prints how many cases it ran (-s shows them; the counts also reach
the junit/terminal summary through the assertion that enough ran).
"""

from __future__ import annotations

import json
import string
from collections import Counter
from typing import Any

import httpx
import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.exceptions import InvalidInput
from events.models import Channel, Message
from events.provisioning import create_api_key, upsert_channel
from events.wire import sse
from events.wire.cursors import parse_cursor
from tests.support.servers import ServerProcess

RUNS: Counter[str] = Counter()

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.fixture(scope="module", autouse=True)
def _report_counts() -> Any:
    yield
    print("\nhostile-input cases run:", dict(RUNS))


# --- the encoder -------------------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(data=st.text(), event=st.text(), id=st.text())
def test_any_text_makes_exactly_one_event_and_data_round_trips(data: str, event: str, id: str) -> None:
    RUNS["encoder"] += 1
    decoder = sse.Decoder()
    events = decoder.feed(sse.encode_event(data, event=event, id=id).decode())
    assert len(events) == 1
    assert events[0].data == data.replace("\r\n", "\n").replace("\r", "\n")
    expected_event = sse.single_line(event)
    assert events[0].event == (expected_event or "message")
    assert decoder.last_event_id == sse.single_line(id)
    assert decoder.feed("") == []  # nothing left over: no second event hidden in the bytes


# --- cursors and query strings -------------------------------------------------------------


@settings(max_examples=1500, deadline=None)
@given(raw=st.text(max_size=80) | st.text(alphabet=string.digits + ":,-_abc~", max_size=80))
def test_any_last_event_id_parses_or_is_refused_cleanly(raw: str) -> None:
    RUNS["cursor"] += 1
    refusal: InvalidInput | None = None
    try:
        positions = parse_cursor(raw, ["abc", "a-b"], max_length=64)
    except InvalidInput as error:
        refusal = error
    if refusal is not None:
        assert refusal.status == 400
        assert refusal.detail
        return
    assert set(positions) <= {"abc", "a-b"}
    assert all(0 <= position.sequence < 2**63 for position in positions.values())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # (h11, the client, refuses header values with surrounding spaces.)
    cursor=st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
        str.strip
    ),
    query=st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40),
)
def test_stream_requests_with_hostile_headers_and_queries_never_fail_the_server(
    server: ServerProcess, cursor: str, query: str
) -> None:
    RUNS["stream request"] += 1
    with httpx.stream(
        "GET",
        f"{server.url}/events/pool-51/?{query}",
        headers={"Last-Event-ID": cursor},
        timeout=10,
    ) as response:
        assert response.status_code in {200, 400, 404}, (cursor, query, response.read())
        if response.status_code != 200:
            response.read()
            assert response.json()["error"]


# --- the publish API --------------------------------------------------------------------


@pytest.fixture
def publish_target(db: Any) -> tuple[Channel, str]:
    return upsert_channel("hostile")[0], create_api_key("hostile", all_channels=True)[1]


bodies = (
    json_values.map(lambda value: json.dumps(value).encode())
    | st.fixed_dictionaries(
        {"data": json_values}, optional={"event": st.text(max_size=70) | json_values}
    ).map(lambda value: json.dumps(value).encode())
    | st.binary(max_size=200)
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(
    str.strip
)


@pytest.mark.django_db(transaction=True)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, authorization=header_values, content_type=header_values, use_key=st.booleans())
def test_any_publish_request_is_answered_and_a_rejection_stores_nothing(
    client: Client,
    publish_target: tuple[Channel, str],
    body: bytes,
    authorization: str,
    content_type: str,
    use_key: bool,
) -> None:
    RUNS["publish request"] += 1
    channel, secret = publish_target
    before = Message.objects.filter(channel=channel).count()
    response = client.post(
        "/api/channels/hostile/messages",
        body,
        content_type=content_type or "application/json",
        headers={"Authorization": f"Bearer {secret}" if use_key else authorization},
    )
    assert response.status_code in {201, 400, 401, 403, 413, 429}, response.content
    assert response["Content-Type"] == "application/json"
    after = Message.objects.filter(channel=channel).count()
    if response.status_code == 201:
        assert after == before + 1
        assert response.json()["id"] == Channel.objects.get(pk=channel.pk).last_sequence
    else:
        assert after == before
        assert response.json()["detail"]


def test_enough_cases_ran() -> None:
    # Runs last in this module: the properties above must have been exercised.
    assert RUNS["encoder"] >= 1000
    assert RUNS["cursor"] >= 1000
    assert RUNS["publish request"] >= 300
