"""The stream finds the session cookie in a Cookie header exactly where Django's views find it.

The stream path reads the session itself (it bypasses Django's middleware). It used
``http.cookies.SimpleCookie``, which drops *every* cookie of a header that holds one it
cannot parse: a JSON-valued consent cookie, a space in a value, an "@" in a name. A
member whose browser held such a cookie was logged in for the history and the pages and
anonymous for the stream: a private channel's stream was a 404, its history a 200.
"""

from __future__ import annotations

import io

import httpx
import pytest
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest

from events.deliver.consumer import session_cookie
from tests.support.servers import ServerProcess, Site

RAW_HEADERS = [
    "sessionid=abc",
    "a=b; sessionid=abc",
    'consent={"ads":false}; sessionid=abc',
    'x="unterminated; sessionid=abc',
    "a=b c; sessionid=abc",
    "sessionid=abc;a@b=c",
    "sessionid=abc; sessionid=def",
    "$Version=1; sessionid=abc",
    "sessionid=",
    "sessionid",
    "SESSIONID=abc",
    " ; ;sessionid=abc ;",
    "",
]


@pytest.mark.parametrize("raw", RAW_HEADERS)
def test_the_session_cookie_is_the_one_djangos_request_reads(raw: str) -> None:
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [(b"cookie", raw.encode())]}
    django_value = ASGIRequest(scope, io.BytesIO()).COOKIES.get(settings.SESSION_COOKIE_NAME)
    assert session_cookie(raw) == (django_value or None)


def test_a_member_with_an_unparsable_cookie_reads_the_private_stream_and_history(
    server: ServerProcess, site: Site
) -> None:
    out = site.shell(
        "from django.contrib.auth.models import User\n"
        "from django.contrib.sessions.backends.db import SessionStore\n"
        "from django.contrib.auth import SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY\n"
        "from events.models import Channel\n"
        "user, _ = User.objects.get_or_create(username='cookie-member')\n"
        "Channel.objects.get(slug='private-room').members.add(user)\n"
        "s = SessionStore()\n"
        "s[SESSION_KEY] = str(user.pk)\n"
        "s[BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'\n"
        "s[HASH_SESSION_KEY] = user.get_session_auth_hash()\n"
        "s.save()\n"
        "print(s.session_key)\n"
    )
    session = out.strip().splitlines()[-1]
    cookie = f'consent={{"ads":false}}; sessionid={session}'
    history = httpx.get(
        f"{server.url}/api/channels/private-room/messages", headers={"Cookie": cookie}, timeout=10
    )
    assert history.status_code == 200, history.text
    with httpx.stream(
        "GET", f"{server.url}/events/private-room/", headers={"Cookie": cookie}, timeout=10
    ) as stream:
        assert stream.status_code == 200, stream.read()
