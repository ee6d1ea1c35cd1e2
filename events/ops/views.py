"""Operational endpoints: ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events.deliver.relay import get_relay

logger = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 2.0


def _database_answers() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the channel layer answer; 503 naming the part that does not."""
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(sync_to_async(_database_answers)(), HEALTH_TIMEOUT_SECONDS)
        checks["database"] = "ok"
    except Exception as exc:
        logger.warning("Health check: database failed: %s", exc)
        checks["database"] = f"error: {type(exc).__name__}"
    relay = get_relay()
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
            await relay.ping()
        checks["channel_layer"] = "ok"
    except Exception as exc:
        logger.warning("Health check: channel layer failed: %r", exc)
        checks["channel_layer"] = f"error: {type(exc).__name__}"
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        body = {
            "error": "unavailable",
            "detail": f"Not answering: {', '.join(failing)}.",
            "status": "unavailable",
            **checks,
        }
        response = JsonResponse(body, status=503)
        response["Retry-After"] = "5"
    else:
        response = JsonResponse({"status": "ok", **checks, "connections": len(relay.streams)})
    response["Cache-Control"] = "no-store"
    return response


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
