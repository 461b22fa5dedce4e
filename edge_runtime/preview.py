"""A live preview for a headless device: `edge run --preview [HOST:]PORT` (import `edge_runtime.preview`;
it is not imported by `import edge_runtime`, which stays free of http.server).

A small page served by the standard library's ``http.server`` (one thread per connection), with
the annotated stream as MJPEG (``multipart/x-mixed-replace``) and the latest record as JSON that the
page polls. Nothing on the page comes from the network but this server (no CDN).

Bounded by construction: the pipeline hands over (record, pixels) by reference into a one-slot
mailbox (:meth:`PreviewServer.publish`, constant time, never blocks), so only the newest frame is
kept. One encoder thread draws the boxes and encodes that frame to JPEG, and only while someone is
watching; each viewer's thread sends the newest JPEG when it is ready, so a slow viewer skips
frames instead of queueing them and never slows inference. Simultaneous streams and connections
(threads) are capped.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
from PIL import Image

from ._annotate import draw_detections
from ._errors import EdgeError
from ._record import Detection, Record

__all__ = ["PreviewError", "PreviewServer", "parse_listen"]

log = logging.getLogger(__name__)

BOUNDARY = "edgeframe"
#: how long after the last request the encoder keeps encoding frames for nobody
_IDLE_S = 5.0


class PreviewError(EdgeError):
    """The preview server cannot start (bad address, port in use)."""


def parse_listen(spec: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` to ``(host, port)``; the host defaults to loopback."""
    s = spec.strip()
    host, sep, port_s = s.rpartition(":")
    if not sep:
        host, port_s = default_host, s
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise PreviewError(f"{spec!r}: write an IPv6 address in brackets, [::1]:8080")
    if not host:
        host = default_host
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise PreviewError(f"{spec!r}: expected [HOST:]PORT with PORT 0-65535")
    return host, int(port_s)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    preview: PreviewServer

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], preview: PreviewServer,
                 max_connections: int) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.preview = preview
        #: one thread per connection, so connections are capped: the excess is closed at once
        self._slots = threading.BoundedSemaphore(max_connections)
        super().__init__(addr, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("preview: connection from %s refused, every slot is taken", client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except Exception:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class PreviewServer:
    """Serves the newest annotated frame and record at ``http://HOST:PORT/``.

    ``publish(record, pixels)`` is the pipeline's hook (``Pipeline(on_frame=...)``); ``pixels`` is
    the frame as an RGB array (anything that is not an image is ignored, the record still shows).
    Frames are shrunk to ``max_side`` pixels before encoding; ``max_fps`` caps the encoder.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 8080, *, max_viewers: int = 8,
                 max_connections: int = 32, max_side: int = 960, quality: int = 80, max_fps: float = 15.0) -> None:
        self.host, self.port = host, port
        self.max_viewers = max_viewers
        self.max_connections = max(max_connections, max_viewers + 1)
        self.max_side = max_side
        self.quality = quality
        self.max_fps = max_fps
        self._cond = threading.Condition()
        self._record: Record | None = None
        self._record_seq = 0
        self._pixels: np.ndarray | None = None
        self._dets: list[Detection] = []
        self._frame_seq = 0
        self._jpeg: bytes | None = None
        self._jpeg_seq = 0
        self._streams = 0
        self._last_request = float("-inf")
        self._closed = False
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        #: frames encoded, and frames handed over (for tests and the summary)
        self.encoded = 0
        self.published = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> PreviewServer:
        try:
            self._server = _Server((self.host, self.port), _Handler, self, self.max_connections)
        except (OSError, OverflowError) as exc:
            msg = getattr(exc, "strerror", None) or str(exc)
            raise PreviewError(f"preview: cannot listen on {self.host}:{self.port} ({msg})") from exc
        self.port = int(self._server.server_address[1])
        if self.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("preview on %s has no authentication: anyone who can reach the port sees the camera",
                        self.host)
        for target, name in ((self._server.serve_forever, "preview-http"), (self._encode_loop, "preview-encode")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("preview at %s", self.url)
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> PreviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipeline's side: constant time, never blocks on a viewer ----------------------
    def publish(self, record: Record, pixels: Any = None) -> None:
        image = pixels if isinstance(pixels, np.ndarray) and pixels.ndim in (2, 3) and pixels.size else None
        with self._cond:
            self._record = record
            self._record_seq += 1
            if image is not None:
                self._pixels = image
                self._dets = list(record.get("detections") or [])
                self._frame_seq += 1
            self._cond.notify_all()
        self.published += 1

    # -- encoder ---------------------------------------------------------------------------
    def _wanted(self) -> bool:
        return self._streams > 0 or time.monotonic() - self._last_request < _IDLE_S

    def _touch(self) -> None:
        with self._cond:
            self._last_request = time.monotonic()
            self._cond.notify_all()

    def _encode_loop(self) -> None:
        min_interval = 1.0 / self.max_fps if self.max_fps > 0 else 0.0
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or (self._frame_seq > self._jpeg_seq and self._wanted()),
                                    timeout=1.0)
                if self._closed:
                    return
                if not (self._frame_seq > self._jpeg_seq and self._wanted()) or self._pixels is None:
                    continue
                pixels, dets, seq = self._pixels, self._dets, self._frame_seq
            t0 = time.monotonic()
            try:
                jpeg = self.encode(pixels, dets)
            except (OSError, ValueError, TypeError) as exc:
                log.warning("preview: cannot encode frame: %s", exc)
                with self._cond:
                    self._jpeg_seq = seq  # do not retry the same frame forever
                continue
            with self._cond:
                self._jpeg, self._jpeg_seq = jpeg, seq
                self.encoded += 1
                self._cond.notify_all()
            spare = min_interval - (time.monotonic() - t0)
            if spare > 0:
                time.sleep(spare)

    def encode(self, pixels: np.ndarray, detections: list[Detection]) -> bytes:
        """The frame shrunk to ``max_side``, its detections drawn, as JPEG bytes."""
        im = Image.fromarray(np.ascontiguousarray(pixels)).convert("RGB")
        scale = min(1.0, self.max_side / max(im.size))
        if scale < 1.0:
            size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
            im = im.resize(size, Image.Resampling.BILINEAR)
            detections = [{"label": d["label"], "score": d["score"], "box": [float(v) * scale for v in d["box"]]}
                          for d in detections]
        if detections:
            im = draw_detections(im, detections)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=self.quality)
        return buf.getvalue()

    # -- the viewers' side -----------------------------------------------------------------
    def next_jpeg(self, after: int, timeout: float) -> tuple[bytes | None, int]:
        """The newest JPEG newer than sequence ``after`` (waiting up to ``timeout``), and its sequence."""
        with self._cond:
            self._last_request = time.monotonic()
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._closed or (self._jpeg is not None and self._jpeg_seq > after),
                                timeout=timeout)
            if self._jpeg is not None and self._jpeg_seq > after:
                return self._jpeg, self._jpeg_seq
            return None, after

    def latest_json(self) -> bytes:
        self._touch()
        with self._cond:
            rec, seq = self._record, self._record_seq
        body: dict[str, Any] = {"seq": seq, "record": rec}
        return json.dumps(body, default=str).encode()

    def _enter_stream(self) -> bool:
        with self._cond:
            if self._streams >= self.max_viewers:
                return False
            self._streams += 1
            self._cond.notify_all()
            return True

    def _leave_stream(self) -> None:
        with self._cond:
            self._streams -= 1
            self._last_request = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closed


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    #: a viewer that stops reading is dropped after this many seconds of blocked writes
    timeout = 15
    server_version = "edge-preview"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("preview %s: " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        routes: dict[str, Callable[[], None]] = {
            "/": self._page, "/index.html": self._page, "/stream.mjpg": self._stream,
            "/frame.jpg": self._frame, "/detections.json": self._detections,
        }
        route = routes.get(path)
        if route is None:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")
            return
        try:
            route()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _page(self) -> None:
        self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")

    def _detections(self) -> None:
        self._send(HTTPStatus.OK, self.server.preview.latest_json(), "application/json")

    def _frame(self) -> None:
        jpeg, _ = self.server.preview.next_jpeg(0, timeout=10.0)
        if jpeg is None:
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet\n", "text/plain; charset=utf-8")
        else:
            self._send(HTTPStatus.OK, jpeg, "image/jpeg")

    def _stream(self) -> None:
        preview = self.server.preview
        if not preview._enter_stream():
            self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"too many viewers\n", "text/plain; charset=utf-8")
            return
        self.close_connection = True
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            seq = 0
            while not preview.closed:
                jpeg, seq = preview.next_jpeg(seq, timeout=1.0)
                if jpeg is None:
                    continue
                self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                                 .encode() + jpeg + b"\r\n")
                self.wfile.flush()
        finally:
            preview._leave_stream()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edge preview</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{margin:0;font:14px system-ui,sans-serif;background:#111;color:#eee;
  display:flex;flex-wrap:wrap;gap:12px;padding:12px}
#view{max-width:100%;height:auto;background:#000;border:1px solid #333}
#side{min-width:240px}
ul{list-style:none;padding:0;margin:0}
li{padding:3px 6px;border-bottom:1px solid #333;display:flex;justify-content:space-between;gap:12px}
.score{font-variant-numeric:tabular-nums;color:#9cf}
#status{color:#aaa;margin-bottom:8px;white-space:pre-line}
.error{color:#f88}
</style></head>
<body>
<img id="view" src="stream.mjpg" alt="annotated camera stream">
<div id="side">
<div id="status">waiting for the first frame</div>
<ul id="detections"></ul>
</div>
<script>
"use strict";
const view = document.getElementById("view");
let polling = false;
view.addEventListener("error", () => {
  // no MJPEG support, or the stream was refused (too many viewers): poll single frames instead
  if (polling) return;
  polling = true;
  const next = () => { view.src = "frame.jpg?t=" + Date.now(); };
  view.addEventListener("load", () => setTimeout(next, 200));
  view.addEventListener("error", () => setTimeout(next, 1000));
  next();
});
function show(data) {
  const rec = data.record;
  const list = document.getElementById("detections");
  const status = document.getElementById("status");
  if (!rec) return;
  const lat = rec.latency_ms ? rec.latency_ms.total : null;
  status.textContent = "frame " + rec.frame + " \\u00b7 " + rec.source +
    (lat != null ? "\\n" + lat.toFixed(1) + " ms" : "") +
    (rec.model ? " \\u00b7 " + rec.model.name + " v" + rec.model.version : "");
  const items = [];
  if (rec.error) {
    const li = document.createElement("li"); li.className = "error"; li.textContent = rec.error; items.push(li);
  }
  for (const d of (rec.detections || rec.top_k || [])) {
    const li = document.createElement("li"); li.className = "det";
    const label = document.createElement("span"); label.className = "label"; label.textContent = d.label;
    const score = document.createElement("span"); score.className = "score"; score.textContent = d.score.toFixed(2);
    li.append(label, score); items.push(li);
  }
  list.replaceChildren(...items);
}
async function poll() {
  try {
    const r = await fetch("detections.json", {cache: "no-store"});
    if (r.ok) show(await r.json());
  } catch (e) { /* the device went away; try again */ }
  setTimeout(poll, 500);
}
poll();
</script>
</body></html>
"""
