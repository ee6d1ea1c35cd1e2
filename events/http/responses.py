"""Error responses in the contract's shape, ``{"error": code, "detail": sentence}``, for every endpoint.

One builder (:func:`error_reply`) decides the status, the headers (``Retry-After``
on 429 and 503, ``Allow`` on 405, ``Cache-Control: no-store``) and the bytes. Django
views get it as an ``HttpResponse`` (:func:`from_exception`, :func:`error_response`);
the ASGI consumers (the stream, the streaming publish) send the very same reply
with :func:`send_error`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.views.decorators.csrf import csrf_exempt

from events.exceptions import MethodNotAllowed, PushsiteError, RateLimited, ServiceUnavailable
from events.metrics import REJECTED_REQUESTS

JSON_CONTENT_TYPE = "application/json"

Header = tuple[str, str]


@dataclass(frozen=True)
class ErrorReply:
    """An error response, independent of how it is sent."""

    status: int
    headers: tuple[Header, ...]
    body: bytes


def error_reply(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Sequence[Header] = (),
    extra: Mapping[str, Any] | None = None,
) -> ErrorReply:
    """The one error response: counted in the metrics, never cached, JSON in the contract's shape."""
    REJECTED_REQUESTS.labels(code=code).inc()
    # ensure_ascii: a detail quotes what the client sent, which may hold anything.
    body = json.dumps({"error": code, "detail": detail, **(extra or {})}).encode()
    return ErrorReply(
        status=status,
        headers=(("Content-Type", JSON_CONTENT_TYPE), ("Cache-Control", "no-store"), *headers),
        body=body,
    )


def reply_for(error: PushsiteError, extra: Mapping[str, Any] | None = None) -> ErrorReply:
    """The reply for a refusal, with the headers its kind needs (Retry-After, Allow)."""
    headers: list[Header] = []
    if isinstance(error, (RateLimited, ServiceUnavailable)):
        headers.append(("Retry-After", str(error.retry_after)))
    if isinstance(error, MethodNotAllowed) and error.allow:
        headers.append(("Allow", error.allow))
    return error_reply(error.status, error.code, error.detail, headers=headers, extra=extra)


def as_http_response(reply: ErrorReply) -> HttpResponse:
    response = HttpResponse(reply.body, status=reply.status)
    for name, value in reply.headers:
        response[name] = value
    return response


def from_exception(error: PushsiteError) -> HttpResponse:
    """A Django view's answer to a refusal."""
    return as_http_response(reply_for(error))


def error_response(status: int, code: str, detail: str) -> HttpResponse:
    """A Django view's error answer for a code that has no exception class."""
    return as_http_response(error_reply(status, code, detail))


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
View = Callable[..., Any]


def allow_methods(allow: str) -> Callable[[View], View]:
    """A Django view (sync or async) that answers any method but ``allow`` ("GET, HEAD") with the JSON 405.

    A view whose methods are all safe changes nothing, so it is exempt from the CSRF
    check: that check would answer a PUT with Django's HTML 403 page before the view
    could say 405.
    """
    methods = frozenset(allow.split(", "))

    def refusal(request: HttpRequest) -> HttpResponse | None:
        if request.method in methods:
            return None
        return from_exception(
            MethodNotAllowed(f"{request.method} is not allowed here; use {allow}.", allow=allow)
        )

    def decorate(view: View) -> View:
        checked: View
        if iscoroutinefunction(view):

            @functools.wraps(view)
            async def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                refused = refusal(request)
                return refused if refused is not None else await view(request, *args, **kwargs)

        else:

            @functools.wraps(view)
            def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                refused = refusal(request)
                return refused if refused is not None else view(request, *args, **kwargs)

        return csrf_exempt(checked) if methods <= SAFE_METHODS else checked

    return decorate


AsgiSend = Callable[[dict[str, Any]], Awaitable[None]]


async def send_error(
    send: AsgiSend,
    error: PushsiteError,
    *,
    headers: Sequence[Header] = (),
    extra: Mapping[str, Any] | None = None,
) -> None:
    """An ASGI consumer's answer to a refusal: the same status, headers and bytes as a view's.

    ``extra`` adds fields to the body (a streamed publish's summary); ``headers``
    adds what only this endpoint sends.
    """
    reply = reply_for(error, extra)
    await send(
        {
            "type": "http.response.start",
            "status": reply.status,
            "headers": [
                *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers),
                *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers),
                (b"content-length", b"%d" % len(reply.body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": reply.body})


# Policy violation: the close that refuses a handshake (the server answers it 403).
WEBSOCKET_REFUSED_CODE = 1008


async def refuse_websocket(receive: Callable[[], Awaitable[Any]], send: AsgiSend) -> None:
    """Refuse a WebSocket handshake: closed before it is accepted, which ASGI servers answer 403.

    Not a JSON reply through the ``websocket.http.response`` extension: uvicorn's
    websockets-sansio protocol then logs "ASGI callable returned without completing
    handshake" as an ERROR for each such request, which anyone could send.
    """
    message = await receive()
    if message["type"] == "websocket.connect":  # else the client left first
        await send({"type": "websocket.close", "code": WEBSOCKET_REFUSED_CODE})
