"""Cross-origin reads of the JSON history, allowed per channel (django-cors-headers).

django-cors-headers asks this handler, through its ``check_request_enabled``
signal, whether a request's origin may read the response. The SSE stream does
not pass through Django's middleware and applies the same rule itself
(events/deliver/consumer.py ``check_origin``).
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest

from events.models import Channel

HISTORY_PATH = re.compile(r"^/api/channels/(?P<slug>[-a-zA-Z0-9_]{1,50})/messages$")
READ_METHODS = {"GET", "HEAD"}


def allow_channel_origins(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    """True when the request reads the history of a channel that allows its Origin (exact match)."""
    match = HISTORY_PATH.match(request.path)
    if match is None:
        return False
    method = request.method
    if method == "OPTIONS":
        method = request.headers.get("Access-Control-Request-Method", "")
    if method not in READ_METHODS:
        return False  # publishing from another site's page would expose an API key
    origin = request.headers.get("Origin")
    allowed = (
        Channel.objects.active().filter(slug=match["slug"]).values_list("allowed_origins", flat=True).first()
    )
    return bool(origin) and allowed is not None and origin in allowed
