"""JSON error responses in the contract's shape: {"error": code, "detail": sentence}."""

from __future__ import annotations

from django.http import JsonResponse

from events.exceptions import PushsiteError, RateLimited
from events.metrics import REJECTED_REQUESTS


def error_response(status: int, code: str, detail: str, **extra: object) -> JsonResponse:
    REJECTED_REQUESTS.labels(code=code).inc()
    response = JsonResponse({"error": code, "detail": detail, **extra}, status=status)
    response["Cache-Control"] = "no-store"
    return response


def from_exception(error: PushsiteError) -> JsonResponse:
    response = error_response(error.status, error.code, error.detail)
    if isinstance(error, RateLimited):
        response["Retry-After"] = str(error.retry_after)
    return response
