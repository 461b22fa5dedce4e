"""The local web page: the latest frame, the condition, the confidence and what to do.

Standard library only (``http.server``), and the page is one file with its CSS and JS inline, so
it works on a phone next to the device in a field with no internet at all.

    GET  /             the page (polls /api/latest, shows /frame.jpg)
    GET  /api/latest   the latest result as JSON (``seq`` counts results)
    GET  /frame.jpg    the frame of that result (JPEG)
    GET  /api/status   counters: frames, unsure frames kept/uploaded/dropped, cloud, telemetry
    POST /api/next     step mode: classify the next frame (what the page's button does)
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["PAGE", "LatestView", "StepGate", "WebServer"]

log = logging.getLogger("plant_disease.web")

PAGE = Path(__file__).resolve().parent / "static" / "index.html"


class LatestView:
    """What the page shows, swapped whole under a lock: a reader never sees the text of one
    frame with the picture of another."""

    def __init__(self, info: dict[str, Any]) -> None:
        self._lock = threading.Lock()
        self._latest: dict[str, Any] = {"seq": 0, "waiting": True, "finished": False, **info}
        self._jpeg: bytes | None = None
        self.info = info

    def publish(self, result: dict[str, Any], jpeg: bytes | None) -> int:
        with self._lock:
            seq = int(self._latest["seq"]) + 1
            self._latest = {**self.info, **result, "seq": seq, "waiting": False, "finished": False}
            if jpeg is not None:
                self._jpeg = jpeg
            return seq

    def set_flags(self, **flags: Any) -> None:
        with self._lock:
            self._latest = {**self._latest, **flags}

    def latest(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._latest)

    def frame(self) -> bytes | None:
        with self._lock:
            return self._jpeg


class StepGate:
    """Step mode: the classifier waits here until someone asks for the next frame (the page's
    button, or ``POST /api/next``). Requests add up, so two quick presses give two frames."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._credits = 0
        self._closed = False
        self.requested = 0

    def request(self) -> int:
        with self._cond:
            self._credits += 1
            self.requested += 1
            self._cond.notify_all()
            return self.requested

    def wait(self, stop: threading.Event, poll: float = 0.5) -> bool:
        """True when a frame was asked for; False when stopping."""
        with self._cond:
            while self._credits == 0 and not self._closed and not stop.is_set():
                self._cond.wait(poll)
            if self._credits == 0:
                return False
            self._credits -= 1
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class WebServer:
    def __init__(self, host: str, port: int, view: LatestView, *, status: Callable[[], dict[str, Any]],
                 gate: StepGate | None = None, page: Path = PAGE) -> None:
        self.view = view
        self.gate = gate
        self.status = status
        self.page = page.read_bytes()  # read once: a broken install fails at start, not per request
        handler = _handler(self)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="web", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)


def _handler(server: WebServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "plant-disease"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            # Every answer is "now": a cached frame or result would show a stale leaf.
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode("utf-8"), "application/json")

        def do_HEAD(self) -> None:
            self.do_GET()

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path in ("/", "/index.html"):
                self._send(200, server.page, "text/html; charset=utf-8")
            elif path == "/api/latest":
                self._json(200, server.view.latest())
            elif path == "/frame.jpg":
                jpeg = server.view.frame()
                if jpeg is None:
                    self._json(404, {"error": "no frame yet"})
                else:
                    self._send(200, jpeg, "image/jpeg")
            elif path == "/api/status":
                self._json(200, server.status())
            else:
                self._json(404, {"error": f"no such page: {path}"})

        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            length = int(self.headers.get("Content-Length") or 0)
            if 0 < length <= 65536:
                self.rfile.read(length)  # nothing to read in it, but keep the connection usable
            elif length:
                self.close_connection = True  # not worth reading: end the connection after answering
            if path != "/api/next":
                self._json(404, {"error": f"no such endpoint: {path}"})
            elif server.gate is None:
                self._json(409, {"error": "not in step mode: the app classifies frames by itself (start it "
                                          "with --step to classify one frame per request)"})
            elif server.view.latest().get("finished"):
                self._json(409, {"error": "the source has no more frames"})
            else:
                self._json(int(HTTPStatus.ACCEPTED), {"requested": server.gate.request()})

    return Handler
