"""The client's address: one answer for every endpoint (stream caps, chat limits, logs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest

UNKNOWN = "-"


def client_address(source: HttpRequest | Mapping[str, Any]) -> str:
    """The address of the client that sent a Django request or an ASGI scope; ``"-"`` if unknown.

    Both read the ASGI server's ``client``: Django's ASGI handler copies it into
    ``REMOTE_ADDR``. Behind a proxy, ``manage.py serve --forwarded-allow-ips``
    makes uvicorn put the address from ``X-Forwarded-For`` there; no endpoint
    reads that header itself (a client could forge it).
    """
    if isinstance(source, HttpRequest):
        return str(source.META.get("REMOTE_ADDR") or UNKNOWN)
    client = source.get("client")
    return str(client[0]) if client else UNKNOWN
