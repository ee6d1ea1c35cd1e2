"""The site's Content-Security-Policy, which pushsite/headers.py sets on every response."""

from __future__ import annotations

# No inline script anywhere (every script is a file in /static/); inline styles
# are allowed because the widget styles its Shadow DOM with a <style> element
# and styles cannot run code. Pages are framable by nobody; the iframe embed
# view sets its own frame-ancestors from the channel's allowed origins.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
