"""Allowed origins are exactly scheme://host[:port] on every path that sets them, and never reach a header otherwise."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from events.admin_forms import ChannelForm
from events.models import Channel, is_origin
from events.provisioning import upsert_channel

GOOD = [
    "https://partner.example",
    "http://localhost:8080",
    "http://127.0.0.1:8000",
    "https://[::1]:8443",
    "https://xn--bcher-kva.example",
    "http://partner.example:443",
]

BAD = [
    "https://partner.example;script-src *",
    "https://a.example https://evil.example",
    "https://partner.example,https://evil.example",
    "https://*.example",
    "*",
    "'self'",
    "https://'self'",
    "https://Partner.example",
    "HTTPS://partner.example",
    "https://bücher.example",
    "https://partner.example/",
    "https://partner.example/path",
    "https://partner.example?q",
    "https://partner.example#f",
    "https://user@partner.example",
    "https://partner.example:443",
    "http://partner.example:80",
    "https://partner.example:0",
    "https://partner.example:65536",
    "https://partner.example:08080",
    "https://partner.example:",
    "https://a..example",
    "https://-a.example",
    "https://a.example.",
    "https://[::zz]",
    "https://[0:0::1]",
    " https://partner.example",
    "https://partner.example\n",
    "https://partner.example\x00",
    "javascript://partner.example",
    "data:text/html,x",
    "null",
    "",
]


@pytest.mark.parametrize("origin", GOOD)
def test_origins_browsers_send_are_accepted(origin: str) -> None:
    assert is_origin(origin)


@pytest.mark.parametrize("origin", BAD)
def test_anything_else_is_not_an_origin(origin: str) -> None:
    assert not is_origin(origin)


def _model(origin: str) -> None:
    Channel(slug="c", allowed_origins=[origin]).full_clean()


def _provisioning(origin: str) -> None:
    upsert_channel("c", allowed_origins=[origin])


def _command(origin: str) -> None:
    call_command("create_channel", "c", "--allow-origin", origin)


def _admin_form(origin: str) -> None:
    form = ChannelForm(
        data={
            "slug": "c",
            "visibility": "public",
            "allowed_origins": origin,
            "stream_storage": "keep",
            "kind": "feed",
            "is_active": "on",
        }
    )
    if not form.is_valid():
        raise ValidationError(str(form.errors))


SETTERS: list[tuple[str, Callable[[str], None]]] = [
    ("model", _model),
    ("provisioning", _provisioning),
    ("create_channel", _command),
    ("admin form", _admin_form),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "setter"), SETTERS, ids=[s[0] for s in SETTERS])
@pytest.mark.parametrize(
    "origin", [o for o in BAD if o.strip() and "\n" not in o and "\x00" not in o and not o.startswith(" ")]
)
def test_every_path_that_sets_origins_refuses_what_is_not_one(
    name: str, setter: Callable[[str], None], origin: str
) -> None:
    with pytest.raises((ValidationError, CommandError)):
        setter(origin)
    assert not any(origin in c.allowed_origins for c in Channel.objects.filter(slug="c"))


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "setter"), SETTERS, ids=[s[0] for s in SETTERS])
def test_every_path_that_sets_origins_takes_a_real_one(name: str, setter: Callable[[str], None]) -> None:
    setter("https://partner.example")


@pytest.mark.django_db
def test_an_origin_that_got_in_another_way_never_reaches_frame_ancestors(client: Client) -> None:
    channel = upsert_channel("framed", allowed_origins=["https://partner.example"])[0]
    # An older release, a raw UPDATE: bypasses validation.
    Channel.objects.filter(pk=channel.pk).update(
        allowed_origins=["https://partner.example", "https://a.example; script-src *", "*"]
    )
    policy = client.get("/embed/framed/")["Content-Security-Policy"]
    assert policy.endswith("; frame-ancestors https://partner.example")
    assert "script-src 'self'" in policy
    assert policy.count("script-src") == 1


@pytest.mark.django_db
def test_the_admin_form_names_the_line_that_is_wrong(client: Client) -> None:
    client.force_login(User.objects.create_superuser("boss", "", "pw"))
    form = ChannelForm(
        data={
            "slug": "c",
            "visibility": "public",
            "allowed_origins": "https://partner.example\nhttps://a.example; script-src *",
            "stream_storage": "keep",
            "kind": "feed",
        }
    )
    assert not form.is_valid()
    assert "Line 2:" in form.errors["allowed_origins"][0]


@pytest.mark.parametrize(
    ("scope_scheme", "forwarded_proto", "origin", "same_origin"),
    [
        ("http", "https", "https://testserver", True),
        ("http", "https", "http://testserver", False),
        ("https", None, "https://testserver", True),
        ("http", None, "https://testserver", False),
        ("https", "http", "https://testserver", False),
    ],
)
def test_a_streams_own_origin_has_the_scheme_djangos_request_has(
    scope_scheme: str, forwarded_proto: str | None, origin: str, same_origin: bool
) -> None:
    # Behind a TLS proxy (SECURE_PROXY_SSL_HEADER, under a server that leaves the scope's
    # scheme "http"), Django's views took https://host as the page's own origin and the
    # stream did not: the site's own page was refused its stream (403) unless the channel
    # listed the site itself as an allowed origin.
    from django.test import override_settings

    from events.deliver.consumer import parse_stream_request
    from tests.support.asgi import http_scope

    headers = {"origin": origin}
    if forwarded_proto is not None:
        headers["x-forwarded-proto"] = forwarded_proto
    scope = http_scope("GET", "/events/news/", headers, scheme=scope_scheme)
    scope["url_route"] = {"args": (), "kwargs": {"slug": "news"}}
    with override_settings(
        SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"), ALLOWED_HOSTS=["testserver"]
    ):
        request = parse_stream_request(scope)  # type: ignore[arg-type]
    assert (request.origin == request.own_origin) is same_origin
