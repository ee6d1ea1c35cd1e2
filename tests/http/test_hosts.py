"""events/http/hosts.py answers as Django's own request would, for paths that never build one."""

from __future__ import annotations

import io
import socket
from typing import Any

import pytest
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.test import override_settings

from events.exceptions import InvalidInput
from events.http.hosts import check_host, host_allowed, is_secure
from tests.support.servers import ServerProcess

PROXY = ("HTTP_X_FORWARDED_PROTO", "https")


def asgi_scope(scheme: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/", "scheme": scheme, "headers": headers}


def django_says_secure(scope: dict[str, Any]) -> bool:
    return bool(ASGIRequest(scope, io.BytesIO()).is_secure())


def django_says_allowed(host: str) -> bool:
    request = ASGIRequest(asgi_scope("http", [(b"host", host.encode())]), io.BytesIO())
    try:
        request.get_host()
    except DisallowedHost:
        return False
    return True


@pytest.mark.parametrize("proxy_header", [None, PROXY], ids=["no-proxy-setting", "proxy-setting"])
@pytest.mark.parametrize(
    ("scheme", "headers"),
    [
        ("http", []),
        ("https", []),
        ("http", [(b"x-forwarded-proto", b"https")]),
        ("https", [(b"x-forwarded-proto", b"http")]),
        ("http", [(b"x-forwarded-proto", b"https, http")]),
        ("http", [(b"x-forwarded-proto", b" http ,https")]),
    ],
)
def test_is_secure_agrees_with_django(
    proxy_header: tuple[str, str] | None, scheme: str, headers: list[tuple[bytes, bytes]]
) -> None:
    scope = asgi_scope(scheme, headers)
    by_name = {name.decode(): value.decode() for name, value in headers}
    with override_settings(SECURE_PROXY_SSL_HEADER=proxy_header):
        assert is_secure(scheme, by_name) is django_says_secure(scope)


@pytest.mark.parametrize(
    ("allowed", "debug"),
    [(["testserver", ".example.com"], False), ([], True), ([], False), (["*"], False)],
)
@pytest.mark.parametrize(
    "host",
    [
        "testserver",
        "testserver:8000",
        "api.example.com",
        "example.com.evil",
        "localhost",
        "[::1]:80",
        "",
        "a b",
    ],
)
def test_host_allowed_agrees_with_django(allowed: list[str], debug: bool, host: str) -> None:
    with override_settings(ALLOWED_HOSTS=allowed, DEBUG=debug):
        assert host_allowed(host) is django_says_allowed(host)


def test_check_host_returns_the_host_or_refuses_with_a_sentence() -> None:
    assert check_host({"host": "testserver:8000"}) == "testserver:8000"
    with pytest.raises(InvalidInput, match=r"^The Host header names a host this server does not serve\.$"):
        check_host({"host": "evil.example"})
    with pytest.raises(InvalidInput):
        check_host({})


@override_settings(ALLOWED_HOSTS=["testserver"])
@pytest.mark.parametrize(
    "path", ["/api/channels/news/messages", "/api/tokens", "/healthz", "/rooms/lobby/presence"]
)
@pytest.mark.django_db
def test_django_refuses_an_unknown_host_with_the_json_the_stream_path_sends(client: Any, path: str) -> None:
    # The stream path and the streaming publish answered the contract's JSON 400; every
    # URL Django serves, the JSON API included, answered Django's HTML "Bad Request" page.
    response = client.get(path, HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": "invalid",
        "detail": "The Host header names a host this server does not serve.",
    }


def test_a_remembered_answer_follows_a_change_of_allowed_hosts() -> None:
    with override_settings(ALLOWED_HOSTS=["a.example"], DEBUG=False):
        assert host_allowed("a.example")
        assert not host_allowed("b.example")
        with override_settings(ALLOWED_HOSTS=["b.example"]):
            assert not host_allowed("a.example")
            assert host_allowed("b.example")
        assert host_allowed("a.example")


def test_remembered_answers_hold_no_huge_host_and_do_not_stop_at_the_first_strangers() -> None:
    # uvicorn's httptools parser takes a Host header of any length: the first 256
    # distinct values were kept until the settings changed (256 of 20 MB: 5 GB held by
    # a handful of requests), and every Host after them was never remembered.
    from events.http import hosts

    with override_settings(ALLOWED_HOSTS=["a.example"], DEBUG=False):
        assert not host_allowed("x" * 100_000)
        assert "x" * 100_000 not in hosts._answers
        for number in range(hosts.MAX_ANSWERS + 1):
            assert not host_allowed(f"junk{number}.example")
        assert len(hosts._answers) <= hosts.MAX_ANSWERS
        assert host_allowed("a.example")
        assert "a.example" in hosts._answers


def django_host(headers: dict[str, str]) -> str | None:
    """The host Django's own request accepts for these headers; None when it refuses them."""
    scope = asgi_scope("http", [(name.encode(), value.encode()) for name, value in headers.items()])
    try:
        return str(ASGIRequest(scope, io.BytesIO()).get_host())
    except DisallowedHost:
        return None


@pytest.mark.parametrize("forwarded", [False, True], ids=["setting-off", "setting-on"])
@pytest.mark.parametrize(
    "headers",
    [
        {"host": "internal:8000", "x-forwarded-host": "public.example"},
        {"host": "public.example", "x-forwarded-host": "evil.example"},
        {"host": "public.example", "x-forwarded-host": ""},
        {"host": "internal:8000", "x-forwarded-host": "public.example,evil.example"},
        {"host": "public.example"},
        {"x-forwarded-host": "public.example"},
    ],
)
def test_check_host_honours_use_x_forwarded_host_as_django_does(
    forwarded: bool, headers: dict[str, str]
) -> None:
    # With USE_X_FORWARDED_HOST on, Django's views took X-Forwarded-Host and the paths
    # that answer without Django (stream, streaming publish, key fast path) took Host:
    # behind a proxy the same request was served by one and refused (400) by the other.
    with override_settings(ALLOWED_HOSTS=["public.example"], DEBUG=False, USE_X_FORWARDED_HOST=forwarded):
        expected = django_host(headers)
        if expected is None:
            with pytest.raises(InvalidInput):
                check_host(headers)
        else:
            assert check_host(headers) == expected


def django_host_of(scope: dict[str, Any]) -> str | None:
    try:
        return str(ASGIRequest(scope, io.BytesIO()).get_host())
    except DisallowedHost:
        return None


@pytest.mark.parametrize("forwarded_port", [False, True], ids=["port-setting-off", "port-setting-on"])
@pytest.mark.parametrize(
    ("scheme", "server", "headers"),
    [
        ("http", ("testserver", 80), {}),
        ("http", ("testserver", 8000), {}),
        ("https", ("testserver", 443), {}),
        ("https", ("testserver", 80), {}),
        ("http", ("127.0.0.1", 8000), {"x-forwarded-port": "80"}),
        ("http", ("other.example", 80), {}),
        ("http", None, {}),
        ("http", ("testserver", 80), {"host": ""}),
    ],
)
def test_a_request_without_host_is_judged_by_the_servers_name_as_django_does(
    forwarded_port: bool, scheme: str, server: tuple[str, int] | None, headers: dict[str, str]
) -> None:
    # An HTTP/1.0 request without Host: Django's views rebuilt the host from the
    # server's name and port (PEP 333) and served it; the stream and the streaming
    # publish checked "" and refused it (400), and the key fast path left it to Django.
    scope = asgi_scope(scheme, [(name.encode(), value.encode()) for name, value in headers.items()])
    if server is not None:
        scope["server"] = server
    allowed = ["testserver", "127.0.0.1"]
    with override_settings(ALLOWED_HOSTS=allowed, DEBUG=False, USE_X_FORWARDED_PORT=forwarded_port):
        expected = django_host_of(scope)
        if expected is None:
            with pytest.raises(InvalidInput):
                check_host(headers, server, scheme)
        else:
            assert check_host(headers, server, scheme) == expected


@pytest.mark.parametrize(
    ("request_line", "extra"),
    [
        (b"GET /events/pool-1/ HTTP/1.0", b""),
        (b"GET /api/channels/pool-1/messages?limit=1 HTTP/1.0", b""),
        (
            b"POST /api/channels/pool-1/stream HTTP/1.0",
            b"Content-Type: application/x-ndjson\r\nContent-Length: 0\r\n",
        ),
    ],
    ids=["stream", "history", "streaming-publish"],
)
def test_an_http_1_0_request_without_host_is_served_alike_on_every_path(
    server: ServerProcess, api_key: str, request_line: bytes, extra: bytes
) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(
            request_line + b"\r\nAuthorization: Bearer " + api_key.encode() + b"\r\n" + extra + b"\r\n"
        )
        head = sock.recv(4096)
    assert not head.startswith(b"HTTP/1.1 400"), head
    assert head.split(b" ", 2)[1] in {b"200", b"201"}, head
