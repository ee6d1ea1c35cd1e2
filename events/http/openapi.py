"""The OpenAPI 3.1 description of the JSON API, served at ``GET /api/openapi.json``.

Built here in Python rather than kept as a file so that the shared shapes (the
error reply, the envelope) are written once, and the limits it names are the
running site's. tests/http/test_openapi.py keeps it true: every API route is in
it, and schemathesis runs it against a live server (tests/http/test_schemathesis.py).
The chat actions are described here too, by path only: the core imports no feature.
"""

from __future__ import annotations

from typing import Any

from events.conf import conf
from events.models import EVENT_TYPE_PATTERN

JSON = "application/json"
NDJSON = "application/x-ndjson"
EVENT_STREAM = "text/event-stream"
SLUG_PATTERN = "^[-a-zA-Z0-9_]+$"

ERROR_CODES = {
    400: "The request is malformed: bad JSON, a missing or unknown field, a value out of range.",
    401: "No valid credentials (a wrong or revoked `Bearer` key is a 401 everywhere).",
    403: "Not allowed: the key's scope, a staff-only action, a failed CSRF check, a mute.",
    404: "Unknown or inactive channel (or room).",
    408: "The streamed body stopped arriving (PUSHSITE_STREAM_IDLE_SECONDS).",
    409: "A stream with this `Idempotency-Key` is still running; retry once it has ended.",
    413: "Over a size limit.",
    415: "A body of another Content-Type than the ones listed.",
    422: "This `Idempotency-Key` was already used for a different request (`idempotency_key_reused`).",
    429: "Rate limited; `Retry-After` says when to try again.",
    503: "The database or the channel layer is not available; `Retry-After: 5`.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*statuses: int) -> dict[str, Any]:
    return {
        str(status): {"$ref": f"#/components/responses/{status}"}
        for status in (*statuses, 503)  # every endpoint may find the database down
    }


def _json_body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _ok(
    status: int, description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return {str(status): response}


SLUG = {
    "name": "slug",
    "in": "path",
    "required": True,
    "description": "The channel's slug.",
    "schema": {"type": "string", "pattern": SLUG_PATTERN},
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": (
        "Makes a retry safe: a request repeated with the same key (same publisher and channel) "
        "within PUSHSITE_IDEMPOTENCY_SECONDS gets the first answer again, with "
        "`Idempotent-Replayed: true`, and stores nothing; the same key with another body is a 422. "
        "1 to 255 printable ASCII characters (400 otherwise); a UUID is a good key."
    ),
    "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"},
}
REPLAYED = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the same `Idempotency-Key`.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
ROOM = {**SLUG, "description": "The chat room's slug (a channel of kind `chat`)."}
Security = list[dict[str, list[str]]]
KEY: Security = [{"apiKey": []}]
KEY_OR_STAFF: Security = [{"apiKey": []}, {"session": [], "csrf": []}]
SESSION: Security = [{"session": [], "csrf": []}]
PUBLIC_OR_ANY: Security = [{}, {"apiKey": []}, {"session": []}]


def _chat_action(summary: str, body: dict[str, Any] | None, ok: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": ["chat"],
        "summary": summary,
        "security": SESSION,
        "parameters": [ROOM],
        "responses": {**ok, **_errors(400, 401, 403, 404, 405, 413, 429)},
    }
    if body is not None:
        operation["requestBody"] = _json_body(body)
    return operation


def description() -> dict[str, Any]:
    """The description, with this site's limits."""
    message_limit = conf.MAX_MESSAGE_BYTES
    token_max_age = conf.TOKEN_MAX_AGE_SECONDS
    history_max = conf.HISTORY_MAX_LIMIT
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {
                "error": {"type": "string", "description": "A stable code: `invalid`, `rate_limited`, ..."},
                "detail": {"type": "string", "description": "A sentence for people, naming the problem."},
            },
        },
        "EventType": {"type": "string", "pattern": f"^{EVENT_TYPE_PATTERN}$", "default": "message"},
        "PublishBody": {
            "type": "object",
            "required": ["data"],
            "additionalProperties": False,
            "properties": {
                "event": {
                    **_ref("EventType"),
                    "description": "Types starting with `pushsite.` are reserved.",
                },
                "data": {"description": "Any JSON, `null` included."},
            },
        },
        "Envelope": {
            "type": "object",
            "required": ["channel", "event", "data", "published_at"],
            "properties": {
                "id": {"type": "integer", "description": "The channel's sequence number."},
                "channel": {"type": "string"},
                "event": {"type": "string"},
                "data": {},
                "published_at": {"type": "string", "description": "UTC, milliseconds, `Z`."},
            },
        },
        "History": {
            "type": "object",
            "required": ["channel", "messages", "has_more", "last_id", "first_available_id"],
            "properties": {
                "channel": {"type": "string"},
                "messages": {"type": "array", "items": _ref("Envelope")},
                "has_more": {"type": "boolean"},
                "last_id": {"type": "integer"},
                "first_available_id": {"type": ["integer", "null"]},
            },
        },
        "TokenRequest": {
            "type": "object",
            "required": ["channels"],
            "additionalProperties": False,
            "properties": {
                "channels": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "ttl": {"type": "integer", "minimum": 1, "maximum": token_max_age},
                "subject": {"type": "string", "maxLength": 200},
            },
        },
        "Token": {
            "type": "object",
            "required": ["token", "channels", "expires_at"],
            "properties": {
                "token": {"type": "string"},
                "channels": {"type": "array", "items": {"type": "string"}},
                "expires_at": {"type": "string"},
            },
        },
        "StreamSummary": {
            "type": "object",
            "required": ["stream", "channel", "parts", "status", "end_id"],
            "properties": {
                "stream": {"type": "string"},
                "channel": {"type": "string"},
                "parts": {"type": "integer"},
                "status": {"enum": ["done", "failed"]},
                "end_id": {"type": ["integer", "null"]},
            },
        },
        "Author": {
            "type": "object",
            "required": ["name", "guest"],
            "properties": {"name": {"type": "string"}, "guest": {"type": "boolean"}},
        },
    }
    responses = {
        str(status): {
            "description": text,
            "content": {JSON: {"schema": _ref("Error")}},
        }
        for status, text in ERROR_CODES.items()
    }
    responses["405"] = {
        "description": "Method not allowed; `Allow` lists the ones that are.",
        "content": {JSON: {"schema": _ref("Error")}},
    }
    streamed_body = {
        "type": "string",
        "description": (
            "One part per line (NDJSON: a publish body per line; blank lines are keep-alives) "
            "or per event (text/event-stream: `event:` and `data:` fields; `id:`, `retry:` and "
            f"comments are ignored). A line or event is at most {message_limit} bytes."
        ),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pushsite JSON API",
            "version": "1",
            "description": (
                "Publish to channels, read their history, mint subscribe tokens, stream a publish, "
                "and act in chat rooms. Subscribing (`GET /events/...`) is Server-Sent Events or "
                "NDJSON, described in docs/contract.md. Every error is JSON "
                '`{"error", "detail"}`; bad input is a 4xx, never a 5xx.'
            ),
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/api/channels/{slug}/messages": {
                "parameters": [SLUG],
                "post": {
                    "tags": ["publish"],
                    "operationId": "publish",
                    "summary": "Publish one message; 201 once it is stored.",
                    "security": KEY_OR_STAFF,
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": _json_body(_ref("PublishBody")),
                    "responses": {
                        **_ok(201, "Stored, then sent to subscribers.", _ref("Envelope"), REPLAYED),
                        **_errors(400, 401, 403, 404, 413, 422, 429),
                    },
                },
                "get": {
                    "tags": ["history"],
                    "operationId": "history",
                    "summary": "Stored messages after `after`, oldest first.",
                    "security": PUBLIC_OR_ANY,
                    "parameters": [
                        {
                            "name": "after",
                            "in": "query",
                            "description": "A message id, or a stream cursor (12~3fa9c0b1) as the stream's after.",
                            "schema": {
                                "type": "string",
                                "pattern": "^([0-9]{1,19}(~[0-9a-z]{1,16})?|[-a-zA-Z0-9_]{1,50}:[0-9]{1,19}(~[0-9a-z]{1,16})?(,[-a-zA-Z0-9_]{1,50}:[0-9]{1,19}(~[0-9a-z]{1,16})?)*)$",
                            },
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": history_max},
                        },
                        {
                            "name": "token",
                            "in": "query",
                            "description": "A subscribe token, for a private channel.",
                            "schema": {"type": "string"},
                        },
                    ],
                    "responses": {
                        **_ok(200, "One page of history.", _ref("History")),
                        **_errors(400, 401, 403, 404),
                    },
                },
            },
            "/api/channels/{slug}/stream": {
                "parameters": [SLUG],
                "post": {
                    "tags": ["streaming publish"],
                    "operationId": "stream",
                    "summary": "Publish each line of the body as it arrives; one end event at the end.",
                    "security": KEY,
                    "parameters": [IDEMPOTENCY_KEY],
                    "requestBody": {
                        "required": True,
                        "content": {
                            NDJSON: {"schema": streamed_body},
                            EVENT_STREAM: {"schema": streamed_body},
                        },
                    },
                    "responses": {
                        **_ok(
                            201, "The body ended; every part is published.", _ref("StreamSummary"), REPLAYED
                        ),
                        **_errors(400, 401, 403, 404, 408, 409, 413, 415, 422, 429),
                    },
                },
            },
            "/api/tokens": {
                "post": {
                    "tags": ["tokens"],
                    "operationId": "mint_token",
                    "summary": "A signed, expiring subscribe token, bound to the channels and the key.",
                    "security": KEY,
                    "requestBody": _json_body(_ref("TokenRequest")),
                    "responses": {
                        **_ok(201, "The token.", _ref("Token")),
                        **_errors(400, 401, 403, 404, 413, 429),
                    },
                },
            },
            "/api/openapi.json": {
                "get": {
                    "tags": ["meta"],
                    "operationId": "description",
                    "summary": "This description.",
                    "security": [{}],
                    "responses": _ok(200, "OpenAPI 3.1.", {"type": "object"}),
                },
            },
            "/rooms/{slug}/messages": {
                "post": _chat_action(
                    "Post to a room as the logged-in person or the session's guest.",
                    {
                        "type": "object",
                        "required": ["text"],
                        "additionalProperties": False,
                        "properties": {"text": {"type": "string"}},
                    },
                    _ok(201, "Stored and sent.", _ref("Envelope")),
                ),
            },
            "/rooms/{slug}/guest": {
                "post": _chat_action(
                    "Take a guest nickname in this room for this session.",
                    {
                        "type": "object",
                        "required": ["nickname"],
                        "additionalProperties": False,
                        "properties": {"nickname": {"type": "string"}},
                    },
                    _ok(
                        200,
                        "The nickname is yours in this room.",
                        {"type": "object", "required": ["author"], "properties": {"author": _ref("Author")}},
                    ),
                ),
            },
            "/rooms/{slug}/typing": {
                "post": _chat_action(
                    'An ephemeral "is typing" event (at most one per person every 2 s).',
                    None,
                    _ok(
                        200,
                        "Whether it was sent.",
                        {"type": "object", "required": ["sent"], "properties": {"sent": {"type": "boolean"}}},
                    ),
                ),
            },
            "/rooms/{slug}/messages/{sequence}/delete": {
                "post": {
                    **_chat_action(
                        "Staff: blank a message; every open page removes it.",
                        None,
                        _ok(200, "The stored `chat.deleted` event.", _ref("Envelope")),
                    ),
                    "parameters": [
                        ROOM,
                        {
                            "name": "sequence",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                },
            },
            "/rooms/{slug}/mute": {
                "post": _chat_action(
                    "Staff: mute a person in this room (bound to the person, not the nickname).",
                    {
                        "type": "object",
                        "required": ["author"],
                        "additionalProperties": False,
                        "properties": {
                            "author": {"type": "string"},
                            "minutes": {"type": ["integer", "null"], "minimum": 1, "maximum": 525600},
                        },
                    },
                    _ok(
                        201,
                        "The mute.",
                        {
                            "type": "object",
                            "required": ["author", "until"],
                            "properties": {
                                "author": {"type": "string"},
                                "until": {"type": ["string", "null"]},
                            },
                        },
                    ),
                ),
            },
            "/rooms/{slug}/presence": {
                "get": {
                    **_chat_action(
                        "Who is in the room now.",
                        None,
                        _ok(
                            200,
                            "The people here.",
                            {
                                "type": "object",
                                "required": ["people", "count"],
                                "properties": {"people": {"type": "array"}, "count": {"type": "integer"}},
                            },
                        ),
                    ),
                    "security": PUBLIC_OR_ANY,
                },
            },
        },
        "components": {
            "schemas": schemas,
            "responses": responses,
            "securitySchemes": {
                "apiKey": {"type": "http", "scheme": "bearer", "description": "An API key."},
                "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-CSRFToken",
                    "description": "The `csrftoken` cookie's value, with a session.",
                },
            },
        },
    }
