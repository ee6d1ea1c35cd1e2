"""Logging filters named in ``settings.LOGGING``."""

from __future__ import annotations

import logging


class WithoutTraceback(logging.Filter):
    """Keeps a record's message and drops its traceback.

    For errors that are the client's (a request for a host this site does not
    serve): the message says it all, and a 30-line traceback per request lets
    anyone flood the log.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True
