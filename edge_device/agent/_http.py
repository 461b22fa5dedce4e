"""A small local HTTP endpoint (stdlib): the latest result and the agent's health.

``GET /health``  200 with the agent's state while the pipeline makes progress, 503 otherwise
``GET /latest``  the latest record (404 before the first frame)

For a kiosk screen or Home Assistant's REST sensor. Bound to 127.0.0.1 unless configured
otherwise; read-only, no secrets in the answers.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge_runtime import Record

from ._errors import AgentError

__all__ = ["LocalHTTP"]

log = logging.getLogger(__name__)


class LocalHTTP:
    def __init__(self, host: str, port: int, *, health: Callable[[], tuple[bool, dict[str, Any]]],
                 latest: Callable[[], Record | None]) -> None:
        handler = _make_handler(health, latest)
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise AgentError(f"http: cannot listen on {host}:{port} ({exc.strerror}); "
                             "change http.port or turn http.enabled off") from exc
        self._server.daemon_threads = True
        addr = self._server.server_address
        self.host, self.port = str(addr[0]), int(addr[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="local-http", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        self._thread.start()
        log.info("local HTTP endpoint on %s (/health, /latest)", self.url)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _make_handler(health: Callable[[], tuple[bool, dict[str, Any]]],
                  latest: Callable[[], Record | None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edge-agent"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            if path == "/health":
                ok, body = health()
                self._send(200 if ok else 503, body)
            elif path == "/latest":
                rec = latest()
                if rec is None:
                    self._send(404, {"error": "no result yet"})
                else:
                    self._send(200, rec)
            else:
                self._send(404, {"error": f"no such endpoint {path!r}; try /health or /latest"})

        def do_HEAD(self) -> None:
            self.do_GET()

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body, default=str).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http: " + format, *args)

    return Handler
