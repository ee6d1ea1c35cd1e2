"""Candidate B's upper bound: Django's path with only the middleware that never leaves the loop.

Pushsite's settings minus every ``MiddlewareMixin`` middleware (security,
sessions, common, CSRF, auth, messages, X-Frame-Options): each of those runs its
``process_request`` / ``process_response`` through ``sync_to_async`` under ASGI.
What remains is the async-only WhiteNoise and django-cors-headers (async-native).
The fast path steps aside (settings.MIDDLEWARE is not the list it stands in for),
so every API-key publish goes through Django's handler and the async view.

Not deployable (no sessions, CSRF or logins): it measures the best an async
publish view could do through Django's handler without a separate fast path.
"""

from __future__ import annotations

from pushsite.settings import *  # noqa: F403

MIDDLEWARE = [
    "pushsite.middleware.AsyncWhiteNoiseMiddleware",
    "corsheaders.middleware.CorsMiddleware",
]
# The admin needs sessions, auth and messages; this bound never serves it.
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]
