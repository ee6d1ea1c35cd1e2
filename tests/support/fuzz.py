"""schemathesis against a live server: the OpenAPI description's every operation, generated cases.

One run per database (tests/http/test_schemathesis.py on SQLite, tests/system/ on
PostgreSQL). Each case goes to a real server process over HTTP with a credential
drawn from a set (the site's key, none, a wrong key, another scheme), to one of
the site's real channels most of the time, positive and negative generation
mixed. Every response must be a documented status with a documented shape, and
never a 5xx.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.servers import ServerProcess, Site

# The channels each fuzzed site has (fuzz_channels()), and some that it does not.
SLUGS = ["fuzz-public", "fuzz-private", "fuzz-members", "fuzz-off", "fuzz-room", "nowhere"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Per endpoint family, on each database. The streaming publish's bodies are also
# driven by hypothesis straight into the parsers (tests/publish/test_streamed_bodies.py,
# 1,200 cases), so its HTTP share is smaller. PUSHSITE_FUZZ_SCALE shrinks or grows it all.
CASES = {"publish": 1000, "history": 1000, "tokens": 1000, "stream": 300, "chat": 1000, "meta": 20}

schemathesis.serializer.alias("application/x-ndjson", "text/plain")


def family(path: str, method: str) -> str:
    if path.startswith("/rooms/"):
        return "chat"
    if path.endswith("/stream"):
        return "stream"
    if path == "/api/tokens":
        return "tokens"
    if path.endswith("/messages"):
        return "publish" if method == "POST" else "history"
    return "meta"


def fuzz_channels(site: Site) -> str:
    """Create the fuzzed channels; the secret of a key for all of them."""
    site.shell(
        "from events.models import Kind\n"
        "from events.provisioning import upsert_channel\n"
        "upsert_channel('fuzz-public')\n"
        "upsert_channel('fuzz-private', visibility='private')\n"
        "upsert_channel('fuzz-members', visibility='authenticated')\n"
        "c, _ = upsert_channel('fuzz-off'); c.is_active = False; c.save()\n"
        "upsert_channel('fuzz-room', kind=Kind.CHAT)\n"
    )
    return site.create_api_key("fuzz")


def described_operations(schema: Any) -> list[Any]:
    """The description's operations; a part that schemathesis cannot read fails the test."""
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    return operations


def run(server: ServerProcess, key: str) -> Counter[str]:
    """Every operation of the served description, fuzzed; the number of cases per family."""
    spec = httpx.get(f"{server.url}/api/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(spec)
    scale = float(os.environ.get("PUSHSITE_FUZZ_SCALE", "1"))
    operations = described_operations(schema)
    per_family = Counter(family(op.path, op.method.upper()) for op in operations)
    done: Counter[str] = Counter()
    credentials = st.sampled_from(
        [
            {"Authorization": f"Bearer {key}"},
            {"Authorization": f"Bearer {key}"},
            {},
            {"Authorization": "Bearer psk_wrong"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
        ]
    )
    for operation in operations:
        name = family(operation.path, operation.method.upper())
        examples = max(1, round(CASES[name] * scale / per_family[name]))
        _fuzz(operation, server.url, credentials, examples, functools.partial(done.update, [name]))
    return done


def _fuzz(
    operation: Any,
    base_url: str,
    credentials: st.SearchStrategy[dict[str, str]],
    examples: int,
    count: Callable[[], None],
) -> None:
    session = requests.Session()  # one connection for the operation's cases
    cases = st.one_of(
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],  # no shrinking: a failure names its case as it is
        suppress_health_check=list(HealthCheck),
        derandomize=False,
    )
    @given(case=cases, headers=credentials, slug=st.sampled_from(SLUGS) | st.none())
    def one_case(case: Any, headers: dict[str, str], slug: str | None) -> None:
        if slug is not None and "slug" in (case.path_parameters or {}):
            case.path_parameters["slug"] = slug
        response = case.call(base_url=base_url, session=session, headers=headers, timeout=15)
        count()
        case.validate_response(response, checks=CHECKS)

    try:
        one_case()
    finally:
        session.close()
