"""Operational endpoints: ``/healthz`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from events.deliver.relay import current_relay, get_relay
from events.http.responses import allow_methods
from events.publish import fanout

logger = logging.getLogger(__name__)

# Each check has its own bound and they run side by side, so /healthz answers
# within about this long whatever hangs (a frozen Redis, a stuck database).
HEALTH_CHECK_SECONDS = 0.5
HEALTH_RETRY_AFTER_SECONDS = 5

# The database check runs in a thread of its own: not the data path's database
# thread (a probe must not queue behind stream admission, nor delay it), and
# while an earlier check is still stuck in it, a new one does not queue up.
_database_executor = ThreadPoolExecutor(1, thread_name_prefix="pushsite-health")
_database_check: asyncio.Future[None] | None = None


def _database_answers() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        connection.close()


async def check_database() -> None:
    global _database_check
    previous = _database_check
    if previous is not None and not previous.done() and previous.get_loop() is asyncio.get_running_loop():
        raise TimeoutError("the previous check has not come back")
    _database_check = asyncio.ensure_future(
        sync_to_async(_database_answers, thread_sensitive=False, executor=_database_executor)()
    )
    await asyncio.shield(_database_check)


async def check_channel_layer() -> None:
    await get_relay().ping()


async def _bounded(name: str, check: Callable[[], Awaitable[None]]) -> str:
    started = time.monotonic()
    try:
        async with asyncio.timeout(HEALTH_CHECK_SECONDS):
            await check()
    except Exception as exc:
        kind = "no answer" if isinstance(exc, TimeoutError) else type(exc).__name__
        logger.warning(
            "Health check: %s failed after %.0f ms: %r", name, (time.monotonic() - started) * 1000, exc
        )
        return f"error: {kind}"
    return "ok"


HEALTH_CHECKS: dict[str, Callable[[], Awaitable[None]]] = {
    "database": check_database,
    "channel_layer": check_channel_layer,
}


@allow_methods("GET, HEAD")
async def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the channel layer answer; 503 naming the part that does not.

    Each check is bounded by HEALTH_CHECK_SECONDS and they run concurrently, so
    a hung service costs the probe that bound once, not once per check (issue 15).
    ``fanout`` tells what this process's background fan-out holds: frames queued,
    how long the oldest has waited (a send in progress included), frames dropped.
    """
    names = list(HEALTH_CHECKS)
    results = await asyncio.gather(*(_bounded(name, HEALTH_CHECKS[name]) for name in names))
    checks = dict(zip(names, results, strict=True))
    failing = [name for name, result in checks.items() if result != "ok"]
    if failing:
        body = {
            "error": "unavailable",
            "detail": f"Not answering within {HEALTH_CHECK_SECONDS:g} s: {', '.join(failing)}.",
            "status": "unavailable",
            "sick": failing,
            **checks,
            "fanout": fanout.state(),
        }
        response = JsonResponse(body, status=503)
        response["Retry-After"] = str(HEALTH_RETRY_AFTER_SECONDS)
        # The failing check was logged above as a WARNING naming it; without this
        # Django logs every probe's 503 again as an ERROR ("Service Unavailable:
        # /healthz"), once per probe per load balancer, which pages nobody usefully.
        response._has_been_logged = True  # type: ignore[attr-defined]  # read by django.utils.log.log_response
    else:
        relay = current_relay()
        connections = len(relay.streams) if relay is not None else 0
        response = JsonResponse(
            {"status": "ok", **checks, "connections": connections, "fanout": fanout.state()}
        )
    response["Cache-Control"] = "no-store"
    return response


@allow_methods("GET, HEAD")
def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(), content_type=CONTENT_TYPE_LATEST)
