"""The one JSON reader for every request body and streamed line, and the rules a published value keeps.

Every endpoint that reads JSON from a client goes through :func:`loads`: the publish
API, token requests, chat actions, NDJSON lines and the ``data:`` of an SSE event in
a streamed publish. Whatever breaks a rule is an :class:`InvalidInput` (400) or a
:class:`PayloadTooLarge` (413) naming the problem, never a 500 and never a database
error later:

- size: at most ``limit`` bytes (``PUSHSITE_MAX_MESSAGE_BYTES`` unless the caller says);
- nesting: at most ``PUSHSITE_MAX_JSON_DEPTH`` arrays and objects inside each other,
  checked before parsing (so no ``RecursionError`` and no deep walk);
- numbers: each must fit a 64-bit float (``1e400`` and a 5000-digit integer are refused,
  never read as ``inf`` or left to Python's integer-digits limit); no ``NaN``/``Infinity``;
- strings: no ``U+0000`` (PostgreSQL's text columns refuse it, so every database does) and no lone
  surrogate (``"\\ud800"``: not a character, and not encodable as UTF-8).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest

from events.conf import conf
from events.exceptions import InvalidInput, PayloadTooLarge
from events.http.numbers import whole_number
from events.models import EVENT_TYPE_PATTERN, RESERVED_EVENT_PREFIX
from events.wire import frames

MESSAGE_FIELDS = frozenset({"event", "data"})
MESSAGE_SHAPE = '{"event": "<type>", "data": <any JSON>}'

_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
# Event-type prefixes a feature app keeps for its own endpoints (the chat app's "chat."),
# with who publishes them; registered in the app's ready(), so the core imports no feature.
_reserved_prefixes: dict[str, str] = {}
# The prefixes the code running now publishes as their owner (see :func:`publishing_reserved`).
_owned: ContextVar[frozenset[str]] = ContextVar("pushsite_owned_event_prefixes", default=frozenset())
_MAX_FLOAT_INT = int(sys.float_info.max)
_MAX_INT_DIGITS = len(str(_MAX_FLOAT_INT))
# A JSON string (possessive, and its closing quote optional, so that an unclosed
# string cannot make the scan quadratic); what is not a bracket; an innermost pair.
_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_INNERMOST_PAIR = re.compile(r"\[\]|\{\}")
# Escapes that may decode to NUL or to half of a surrogate pair: only then is the
# parsed value walked.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")
# An integer can only be out of a float's range with this many digits in a row:
# the integer hook (a Python call per integer) runs only for a body that has them.
_LONG_DIGITS = re.compile(f"[0-9]{{{_MAX_INT_DIGITS}}}")


class _Refused(ValueError):
    """A value json.loads reads but Pushsite does not take (raised from its parse hooks)."""


# --- the parser ------------------------------------------------------------------------


def loads(raw: bytes | str, *, subject: str = "The body", limit: int | None = None) -> Any:
    """The JSON value in ``raw``, or InvalidInput / PayloadTooLarge whose sentence starts with ``subject``."""
    limit = conf.MAX_MESSAGE_BYTES if limit is None else limit
    size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise PayloadTooLarge(f"{subject} is {size} bytes; the limit is {limit}.")
    if isinstance(raw, bytes):
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise InvalidInput(f"{subject} is not valid JSON: it is not UTF-8 ({exc}).") from exc
    else:
        text = raw
    check_depth(text, subject=subject)
    long_digits = len(text) >= _MAX_INT_DIGITS and _LONG_DIGITS.search(text)
    decoder = _CHECKING_DECODER if long_digits else _DECODER
    try:
        value = decoder.decode(text)
    except _Refused as exc:
        raise InvalidInput(f"{subject} {exc}.") from exc
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{subject} is not valid JSON: {exc}.") from exc
    except (ValueError, RecursionError) as exc:  # defensive: json's own limits
        raise InvalidInput(f"{subject} is not JSON that Pushsite can read: {exc}.") from exc
    if _SUSPECT_ESCAPE.search(text):
        check_strings(value, subject=subject)
    return value


def check_depth(text: str, *, subject: str = "The body") -> None:
    """InvalidInput when arrays and objects nest deeper than PUSHSITE_MAX_JSON_DEPTH."""
    limit = conf.MAX_JSON_DEPTH
    if text.count("[") + text.count("{") <= limit:
        return  # cannot be deeper: most bodies stop here
    # The brackets outside strings, then one level of pairs removed per pass (each
    # pass in C): what is left after ``limit`` passes is nested deeper than that.
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _level in range(limit):
        brackets, removed = _INNERMOST_PAIR.subn("", brackets)
        if not brackets or not removed:
            return  # within the limit, or brackets that do not pair (the parser says so)
    if brackets:
        raise InvalidInput(f"{subject} nests arrays and objects more than {limit} deep.")


def check_strings(value: Any, *, subject: str = "The data") -> None:
    """InvalidInput when a string (or an object's key) in ``value`` holds NUL or a lone surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            strings: Collection[Any] = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
            continue
        else:
            continue
        for string in strings:
            if isinstance(string, str) and (match := _BAD_CHARACTER.search(string)):
                raise InvalidInput(f"{subject} holds {_describe(match.group())}.")


def _describe(character: str) -> str:
    if character == "\x00":
        return "U+0000 (NUL), which Pushsite does not store"
    return f"a lone surrogate (U+{ord(character):04X}), which is not a character"


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(
            f"holds the number {text[:40]}, which is out of range (numbers must fit a 64-bit float)"
        )
    return value


def _parse_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > _MAX_INT_DIGITS or abs(value := int(text)) > _MAX_FLOAT_INT:
        raise _Refused(
            f"holds an integer of {digits} digits, which is out of range (numbers must fit a 64-bit float)"
        )
    return value


def _parse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON (and the databases) do not.
    raise _Refused(f"is not valid JSON: {name} is not a JSON value")


# Built once: json.loads with any hook builds a new decoder on every call.
_DECODER = json.JSONDecoder(parse_constant=_parse_constant, parse_float=_parse_float)
_CHECKING_DECODER = json.JSONDecoder(
    parse_constant=_parse_constant, parse_float=_parse_float, parse_int=_parse_int
)


# --- shapes --------------------------------------------------------------------------------


def read_object(
    raw: bytes | str,
    *,
    fields: Collection[str],
    shape: str,
    subject: str = "The body",
    limit: int | None = None,
) -> dict[str, Any]:
    """A JSON object with no field outside ``fields``; ``shape`` shows the expected object in errors."""
    value = loads(raw, subject=subject, limit=limit)
    if not isinstance(value, dict):
        raise InvalidInput(f"{subject} must be a JSON object: {shape}.")
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise InvalidInput(
            f"{_lead(subject)}Unknown field {unknown[0][:60]!r}; expected {', '.join(sorted(fields))}."
        )
    return value


def _lead(subject: str) -> str:
    """How a sentence about one field starts: "Line 3: " for a line, nothing for a whole body."""
    return "" if subject == "The body" else f"{subject}: "


def read_message(raw: bytes | str, *, where: str | None = None) -> tuple[str, Any]:
    """``event`` and ``data`` of a publish body or NDJSON line, ``{"event"?, "data"}``.

    ``where`` ("Line 3") starts every error sentence; without it the subject is "The body".
    """
    subject = where or "The body"
    message = read_object(raw, fields=MESSAGE_FIELDS, shape=MESSAGE_SHAPE, subject=subject)
    if "data" not in message:
        raise InvalidInput(f"{_lead(subject)}The field 'data' is required (any JSON value, null included).")
    event = message.get("event", "message")
    try:
        validate_event_type(event)
    except InvalidInput as exc:
        raise InvalidInput(_lead(subject) + exc.detail) from None
    return event, message["data"]


def data_or_text(text: str, *, subject: str = "The data") -> Any:
    """The value ``text`` holds when it is JSON, else the text itself (SSE ``data:`` fields, shell lines).

    Text that is not JSON is published as a string; text that *is* JSON but breaks a
    rule above (a number out of range, NUL, nesting) is refused, not passed as text.
    """
    try:
        return loads(text, subject=subject)
    except InvalidInput as exc:
        if not isinstance(exc.__cause__, json.JSONDecodeError):
            raise
    if match := _BAD_CHARACTER.search(text):
        raise InvalidInput(f"{subject} holds {_describe(match.group())}.")
    return text


# --- what a message may hold (also for values from code: publish(), commands) ----------


def validate_event_type(event: Any) -> str:
    if not isinstance(event, str):
        raise InvalidInput("event must be a string.")
    if not _EVENT_TYPE.fullmatch(event):
        raise InvalidInput(
            f"event must be 1 to 64 characters from letters, digits and _ . : - (got {event[:80]!r})."
        )
    if event.startswith(RESERVED_EVENT_PREFIX):
        raise InvalidInput(f"event types starting with {RESERVED_EVENT_PREFIX!r} are reserved.")
    for prefix, publisher in _reserved_prefixes.items():
        if event.startswith(prefix) and prefix not in _owned.get():
            raise InvalidInput(
                f"event {event!r} is reserved: types starting with {prefix!r} are published only by {publisher}."
            )
    return event


def reserve_event_prefix(prefix: str, publisher: str) -> None:
    """Refuse event types starting with ``prefix`` on every publish path but ``publisher``'s own.

    A feature app calls it in ``AppConfig.ready()``; ``publisher`` completes the refusal
    ("... are published only by <publisher>"). Its endpoints publish such types inside
    :func:`publishing_reserved`.
    """
    if not prefix or prefix.startswith(RESERVED_EVENT_PREFIX):
        raise ValueError(f"{prefix!r} cannot be reserved by a feature.")
    _reserved_prefixes[prefix] = publisher


@contextmanager
def publishing_reserved(prefix: str) -> Iterator[None]:
    """Within this block (this thread or task only), event types starting with ``prefix`` may be published."""
    if prefix not in _reserved_prefixes:
        raise ValueError(f"{prefix!r} is not a reserved event prefix.")
    token = _owned.set(_owned.get() | {prefix})
    try:
        yield
    finally:
        _owned.reset(token)


def validate_payload(data: Any) -> None:
    """InvalidInput / PayloadTooLarge unless ``data`` can be stored and sent as it is."""
    try:
        encoded = frames.dumps(data)
        size = len(encoded.encode())
    except UnicodeEncodeError as exc:
        raise InvalidInput(f"data holds {_describe(exc.object[exc.start])}.") from exc
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"data must be JSON-serialisable: {exc}.") from exc
    limit = conf.MAX_MESSAGE_BYTES
    if size > limit:
        raise PayloadTooLarge(f"data is {size} bytes encoded; the limit is {limit}.")
    if "\\u0000" in encoded:
        check_strings(data, subject="data")


# --- Django requests -------------------------------------------------------------------------


def request_body(request: HttpRequest, *, limit: int | None = None) -> bytes:
    """The body of a Django request, refused with 413 past ``limit`` before it is read if it says so."""
    limit = conf.MAX_MESSAGE_BYTES if limit is None else limit
    declared = whole_number(request.META.get("CONTENT_LENGTH") or "0", max_digits=19)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}.")
    try:
        body = request.body
    except RequestDataTooBig as exc:
        raise PayloadTooLarge(f"The body is over the limit of {limit} bytes.") from exc
    if len(body) > limit:
        raise PayloadTooLarge(f"The body is {len(body)} bytes; the limit is {limit}.")
    return body


def request_object(
    request: HttpRequest, *, fields: Collection[str], shape: str, limit: int | None = None
) -> dict[str, Any]:
    """A Django request's JSON object body (an empty body is ``{}``) under every rule above."""
    body = request_body(request, limit=limit)
    return read_object(body or b"{}", fields=fields, shape=shape, limit=limit)
