"""The OpenAPI description (GET /api/openapi.json) names every API route, and only real ones."""

from __future__ import annotations

import re
from typing import Any

import pytest
import schemathesis
from django.test import Client
from django.urls import URLPattern, URLResolver

from events.http.openapi import description
from events.routing import http_urlpatterns
from pushsite.urls import urlpatterns
from tests.support.fuzz import described_operations

# Pages for people, not JSON actions: the room list and a room's page.
NOT_API = {"/rooms/", "/rooms/{slug}/"}
METHODS = {"get", "post", "put", "patch", "delete"}


def routes(patterns: list[Any], prefix: str = "") -> list[str]:
    """Every route of Django's and Channels' URL patterns, in OpenAPI's form (``{name}``)."""
    found: list[str] = []
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            found += routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            found.append("/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route))
    return found


def json_api_routes() -> set[str]:
    every = routes(urlpatterns) + routes(http_urlpatterns)
    return {
        route
        for route in every
        if (route.startswith("/api/") or route.startswith("/rooms/"))
        and "^" not in route  # the catch-all JSON 404 for the rest of /api/
        and route not in NOT_API
    }


def test_every_api_route_is_described_and_every_described_path_is_a_route() -> None:
    described = set(description()["paths"])
    assert json_api_routes() == described


def test_the_catch_all_comes_after_the_description() -> None:
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json() == description()
    assert Client().get("/api/openapi.json/").json()["error"] == "not_found"


def test_the_description_is_valid_openapi_3_1() -> None:
    schema = schemathesis.openapi.from_dict(description())
    operations = described_operations(schema)
    described = {
        (method.upper(), path)
        for path, item in description()["paths"].items()
        for method in item
        if method in METHODS
    }
    assert {(operation.method.upper(), operation.path) for operation in operations} == described


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_the_description_is_read_only(method: str) -> None:
    response = getattr(Client(enforce_csrf_checks=True), method)("/api/openapi.json")
    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["error"] == "method_not_allowed"


def test_every_error_status_is_described_with_the_one_error_shape() -> None:
    spec = description()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    assert response == {"$ref": f"#/components/responses/{status}"}, (path, method, status)
    for status, response in spec["components"]["responses"].items():
        assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (
            status
        )


@pytest.mark.parametrize(
    "path",
    [
        "/api/channels/%0A/messages",  # a newline where the slug goes (found by schemathesis)
        "/api/nothing/%0Ahere",
        "/rooms/%C3%A9t%C3%A9/guest",  # not a slug (found by schemathesis)
        "/rooms/a%0Ab/messages/1/delete",
    ],
)
def test_an_api_path_with_a_non_slug_is_a_json_404(path: str) -> None:
    response = Client().post(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"
