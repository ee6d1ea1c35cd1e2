"""Domain errors. Each carries the HTTP status and error code the API answers with."""

from __future__ import annotations


class PushsiteError(Exception):
    """Base class: a request Pushsite refuses, with a sentence saying why."""

    status = 400
    code = "bad_request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(PushsiteError):
    """A field, header or body that is malformed or out of range."""

    status = 400
    code = "invalid"


class NotAuthenticated(PushsiteError):
    """No credentials, or credentials that are wrong, expired or revoked."""

    status = 401
    code = "unauthorized"


class PermissionDenied(PushsiteError):
    """Valid credentials that do not allow this action."""

    status = 403
    code = "forbidden"


class TokenExpired(PermissionDenied):
    """A subscribe token past its expiry: the client should fetch a fresh one."""

    code = "token_expired"


class Muted(PermissionDenied):
    """A participant muted in this room by staff."""

    code = "muted"


class NotFound(PushsiteError):
    """Something other than a channel (a message, a room) that does not exist."""

    status = 404
    code = "not_found"


class MethodNotAllowed(PushsiteError):
    """An HTTP method the endpoint does not serve; ``allow`` lists the ones it does."""

    status = 405
    code = "method_not_allowed"

    def __init__(self, detail: str, allow: str = "") -> None:
        super().__init__(detail)
        self.allow = allow


class RequestTimeout(PushsiteError):
    """A request body that stopped arriving."""

    status = 408
    code = "timeout"


class IdempotencyKeyInUse(PushsiteError):
    """A streamed publish whose Idempotency-Key belongs to a stream that is still running."""

    status = 409
    code = "idempotency_key_in_use"


class IdempotencyKeyReused(PushsiteError):
    """An Idempotency-Key already used for a different request (another body, channel endpoint or format)."""

    status = 422
    code = "idempotency_key_reused"


class UnsupportedMediaType(PushsiteError):
    """A request body in a format this endpoint does not read."""

    status = 415
    code = "unsupported_media_type"


class ChannelNotFound(PushsiteError):
    """No active channel has this slug."""

    status = 404
    code = "channel_not_found"


class ChannelHidden(ChannelNotFound, PermissionDenied):
    """A channel this reader may not read, refused exactly as one that does not exist (404)."""

    status = 404
    code = "channel_not_found"


class PayloadTooLarge(PushsiteError):
    """A body or payload over the configured size limit."""

    status = 413
    code = "too_large"


class RateLimited(PushsiteError):
    """Too many requests or connections from one client; retry after ``retry_after`` seconds."""

    status = 429
    code = "rate_limited"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class ServiceUnavailable(PushsiteError):
    """A backing service (database or channel layer) cannot be reached; retry after ``retry_after`` seconds."""

    status = 503
    code = "unavailable"

    def __init__(self, detail: str, retry_after: int = 5) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class InternalError(PushsiteError):
    """A failure inside Pushsite (a bug), answered in the usual JSON shape; never caused by bad input."""

    status = 500
    code = "internal"
