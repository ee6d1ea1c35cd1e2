"""Publishing through the real HTTP API, for tests."""

from __future__ import annotations

from typing import Any

import httpx


async def publish(
    base_url: str,
    key: str,
    slug: str,
    data: Any,
    event: str | None = None,
    *,
    client: httpx.AsyncClient | None = None,
) -> int:
    """POST one message; its id. Fails the test on anything but 201."""
    body: dict[str, Any] = {"data": data}
    if event is not None:
        body["event"] = event
    url = f"{base_url}/api/channels/{slug}/messages"
    headers = {"Authorization": f"Bearer {key}"}
    if client is None:
        async with httpx.AsyncClient(timeout=10) as own:
            response = await own.post(url, json=body, headers=headers)
    else:
        response = await client.post(url, json=body, headers=headers)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])
