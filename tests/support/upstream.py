"""A tiny upstream SSE server for relay tests: restartable on its port, with or without resume."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.servers import free_port

WAIT_SLICE = 0.5


class UpstreamFeed:
    """Events the test emits, served as SSE at ``url``; its history outlives restarts (ids continue)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.events: list[tuple[int, Any]] = []
        # The Last-Event-ID each connection asked for ("" when none).
        self.resume_requests: list[str] = []
        # False: ignore Last-Event-ID and send the whole history, like a forgetful upstream.
        self.honour_last_event_id = True
        self._changed = threading.Condition()
        self._stopping = False
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/feed"

    def emit(self, data: Any) -> int:
        with self._changed:
            number = len(self.events) + 1
            self.events.append((number, data))
            self._changed.notify_all()
        return number

    def start(self) -> None:
        self._stopping = False
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Close the port and every open connection (the relay sees the stream end)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        asked = handler.headers.get("Last-Event-ID", "")
        self.resume_requests.append(asked)
        sent = int(asked) if asked.isdigit() and self.honour_last_event_id else 0
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.end_headers()
        handler.wfile.write(b"retry: 100\n\n")  # reconnect fast in tests
        handler.wfile.flush()
        while True:
            with self._changed:
                if not self._stopping and len(self.events) <= sent:
                    self._changed.wait(WAIT_SLICE)
                if self._stopping:
                    return
                pending = self.events[sent:]
            for number, data in pending:
                frame = f"id: {number}\nevent: tick\ndata: {json.dumps(data)}\n\n"
                handler.wfile.write(frame.encode())
                sent = number
            handler.wfile.flush()


def _handler(feed: UpstreamFeed) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/feed":
                self.send_error(404)
                return
            try:
                feed._serve(self)
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet tests

    return Handler
