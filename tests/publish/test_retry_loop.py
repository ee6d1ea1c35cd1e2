"""The publisher retry loop of docs/scaling.md, run as written against a real server."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import ServerProcess

SCALING = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def retry_loop() -> dict[str, Any]:
    """The doc's code block, up to the usage example: its definitions, executed."""
    section = SCALING.read_text().split("## Publishers: retrying safely", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    definitions = code.group(1).split("\nwith httpx.Client(", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(definitions, str(SCALING), "exec"), namespace)  # our own documentation
    return namespace


class LosesFirstAnswer(httpx.HTTPTransport):
    """Sends every request; the first answer is lost on the way back, as after a connection reset."""

    def __init__(self) -> None:
        super().__init__()
        self.sent = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        self.sent += 1
        if self.sent == 1:
            response.close()
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


def test_the_documented_retry_loop_publishes_once_when_an_answer_is_lost(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    publish_once = retry_loop()["publish_once"]
    transport = LosesFirstAnswer()
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, transport=transport, timeout=10
    ) as client:
        message = publish_once(client, channel, {"event": "notice", "data": {"text": "once"}})
        assert transport.sent == 2  # the lost answer, then its replay
        history = client.get(f"/api/channels/{channel}/messages?after=0").json()["messages"]
    assert [stored["id"] for stored in history] == [message["id"]]
    assert message["data"] == {"text": "once"}


def test_the_documented_retry_loop_called_again_with_its_key_publishes_nothing_more(
    server: ServerProcess, api_key: str, channel: str
) -> None:
    publish_once = retry_loop()["publish_once"]
    body = {"event": "notice", "data": {"text": "later"}}
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {api_key}"}, timeout=10
    ) as client:
        before = client.get(f"/api/channels/{channel}/messages?after=0").json()["last_id"]
        first = publish_once(client, channel, body, key="retry-later-0001")
        again = publish_once(client, channel, body, key="retry-later-0001")  # "retry later with the same key"
        history = client.get(f"/api/channels/{channel}/messages?after={before}").json()["messages"]
    assert again == first
    assert [stored["id"] for stored in history] == [first["id"]]
