"""Publishing for the benchmark: ``send_event`` from a view, as the README shows."""

from __future__ import annotations

import json
import threading

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django_eventstream import send_event

_lock = threading.Lock()
_sequence: dict[str, int] = {}


@csrf_exempt
def publish(request: HttpRequest, slug: str) -> JsonResponse:
    payload = json.loads(request.body)
    with _lock:
        sequence = _sequence[slug] = _sequence.get(slug, 0) + 1
    send_event(slug, payload.get("event", "message"), payload["data"])
    return JsonResponse({"id": sequence, "channel": slug}, status=201)


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
