"""A small HTTP client for the cloud service, for devices and admins alike (stdlib and edge_runtime only).

Every call has a deadline: ``timeout`` bounds the whole call (connect, send, every read), not
just one socket operation, so a device's online mode never waits longer than it said it would.

>>> c = CloudClient("http://cloud:8000", token=device_token, timeout=5)   # doctest: +SKIP
>>> c.check_update(current_version=3)                                      # doctest: +SKIP
>>> c.classify("cat.jpg", "mobilenet_v2", deadline=0.5)["top_k"][0]        # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import json
import logging
import mimetypes
import os
import ssl
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_runtime import EdgeError, sha256_file

__all__ = ["ClientError", "CloudClient", "DeadlineExceeded", "HTTPStatusError", "TransportError"]

log = logging.getLogger(__name__)

CHUNK = 256 * 1024


class ClientError(EdgeError):
    """Base of the client's errors (an EdgeError, so the CLI prints it as one line)."""


class TransportError(ClientError):
    """The service could not be reached or the connection broke."""


class DeadlineExceeded(TransportError):
    """The call did not finish within its timeout."""


class HTTPStatusError(ClientError):
    """The service answered with an error status; ``code`` is its machine-readable error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


@dataclass
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise ClientError(f"the service answered HTTP {self.status} with a body that is not JSON") from exc


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("deadline passed")
        return left


class CloudClient:
    """Talks to one service. ``token`` is the admin token or a device token (sent as a Bearer header)."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        u = urllib.parse.urlsplit(base_url.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ClientError(f"registry URL {base_url!r} must look like http(s)://host[:port]")
        self.base_url = base_url.rstrip("/")
        self._scheme, self._host, self._port = u.scheme, u.hostname, u.port
        self._prefix = u.path
        self._token = token
        self.timeout = timeout
        self._ssl = ssl_context

    def __repr__(self) -> str:  # never shows the token
        return f"<CloudClient {self.base_url}>"

    # -- plumbing ------------------------------------------------------------------------------
    def _connect(self, dl: _Deadline) -> http.client.HTTPConnection:
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._host, self._port, timeout=dl.left(), context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=dl.left())

    def _path(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        if path.startswith(("http://", "https://")):
            path = urllib.parse.urlsplit(path).path
        q = {k: v for k, v in (query or {}).items() if v is not None}
        return self._prefix + path + (("?" + urllib.parse.urlencode(q)) if q else "")

    def _open(self, method: str, path: str, *, body: bytes | Path | None = None,
              headers: Mapping[str, str] | None = None, query: Mapping[str, Any] | None = None,
              timeout: float | None = None) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, _Deadline]:
        dl = _Deadline(timeout if timeout is not None else self.timeout)
        h = {"Accept": "application/json", "User-Agent": "edge-runtime-cloud-client"}
        if self._token:
            h["Authorization"] = f"Bearer {self._token}"
        h.update(headers or {})
        conn = self._connect(dl)
        try:
            conn.connect()
            assert conn.sock is not None
            if isinstance(body, Path):
                h["Content-Length"] = str(body.stat().st_size)
                conn.putrequest(method, self._path(path, query), skip_accept_encoding=True)
                for k, v in h.items():
                    conn.putheader(k, v)
                conn.endheaders()
                with body.open("rb") as f:
                    for chunk in iter(lambda: f.read(CHUNK), b""):
                        conn.sock.settimeout(dl.left())
                        conn.send(chunk)
            else:
                conn.sock.settimeout(dl.left())
                conn.request(method, self._path(path, query), body=body, headers=h)
            conn.sock.settimeout(dl.left())
            resp = conn.getresponse()
        except TimeoutError as exc:
            conn.close()
            raise DeadlineExceeded(f"{method} {path}: no answer within the deadline") from exc
        except DeadlineExceeded:
            conn.close()
            raise
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise TransportError(f"{method} {self.base_url}{path}: {exc.__class__.__name__}: {exc}") from exc
        return conn, resp, dl

    def _read_chunks(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                     dl: _Deadline) -> Iterator[bytes]:
        try:
            while True:
                if conn.sock is not None:
                    conn.sock.settimeout(dl.left())
                chunk = resp.read(CHUNK)
                if not chunk:
                    return
                yield chunk
        except TimeoutError as exc:
            raise DeadlineExceeded("timed out while reading the answer") from exc
        except (OSError, http.client.HTTPException) as exc:
            raise TransportError(f"connection broke while reading the answer: {exc}") from exc

    def _request(self, method: str, path: str, **kw: Any) -> _Response:
        conn, resp, dl = self._open(method, path, **kw)
        try:
            body = b"".join(self._read_chunks(conn, resp, dl))
        finally:
            conn.close()
        r = _Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, body)
        if r.status >= 400:
            raise _status_error(r)
        return r

    def _json(self, method: str, path: str, payload: Any = None, **kw: Any) -> Any:
        if payload is not None:
            kw["body"] = json.dumps(payload).encode()
            kw["headers"] = {"Content-Type": "application/json", **kw.get("headers", {})}
        return self._request(method, path, **kw).json()

    # -- health --------------------------------------------------------------------------------
    def ready(self, *, timeout: float | None = None) -> bool:
        try:
            self._request("GET", "/v2/health/ready", timeout=timeout)
        except ClientError:
            return False
        return True

    # -- registry (admin) ----------------------------------------------------------------------
    def publish(self, bundle: str | Path, *, channel: str | None = None, timeout: float | None = None) -> Any:
        """Upload a signed bundle archive (.tar.gz); with ``channel``, point that channel at it."""
        p = Path(bundle)
        if not p.is_file():
            raise ClientError(f"{p}: publish takes a bundle archive (.tar.gz); pack a directory with "
                              "`edge bundle ... -o NAME.tar.gz`")
        return self._json("POST", "/api/v1/models", body=p, query={"channel": channel}, timeout=timeout,
                          headers={"Content-Type": "application/gzip"})

    def list_models(self) -> Any:
        return self._json("GET", "/api/v1/models")

    def model(self, name: str) -> Any:
        return self._json("GET", f"/api/v1/models/{_q(name)}")

    def channels(self, name: str) -> Any:
        return self._json("GET", f"/api/v1/models/{_q(name)}/channels")

    def promote(self, name: str, channel: str, version: int) -> Any:
        return self._json("PUT", f"/api/v1/models/{_q(name)}/channels/{_q(channel)}", {"version": version})

    def rollback(self, name: str, channel: str) -> Any:
        return self._json("POST", f"/api/v1/models/{_q(name)}/channels/{_q(channel)}/rollback")

    # -- devices (admin) -----------------------------------------------------------------------
    def register_device(self, device_id: str | None = None, *, name: str | None = None, model: str | None = None,
                        channel: str = "stable") -> Any:
        """Returns the device record with its ``token``: keep it, the service never shows it again."""
        return self._json("POST", "/api/v1/devices", {"id": device_id, "name": name, "model": model,
                                                      "channel": channel})

    def devices(self) -> Any:
        """Every device: registration, last seen, model version, outbox depth, latency, status."""
        return self._json("GET", "/api/v1/devices")

    def device(self, device_id: str) -> Any:
        return self._json("GET", f"/api/v1/devices/{_q(device_id)}")

    def revoke_device(self, device_id: str) -> Any:
        """Revoke a device: its token stops working at once. Revoking twice is harmless."""
        return self._json("DELETE", f"/api/v1/devices/{_q(device_id)}")

    # -- device --------------------------------------------------------------------------------
    def whoami(self, *, timeout: float | None = None) -> Any:
        """The calling device's own record (needs a device token)."""
        return self._json("GET", "/api/v1/device", timeout=timeout)

    def check_update(self, current_version: int | None = None, *, timeout: float | None = None) -> Any:
        """What this device's channel serves: ``{"update_available", "version", "url", "sha256", ...}``."""
        return self._json("GET", "/api/v1/device/update", query={"current_version": current_version},
                          timeout=timeout)

    def heartbeat(self, *, model_version: int | None = None, outbox_depth: int | None = None,
                  latency_ms: float | None = None, fps: float | None = None) -> Any:
        return self._json("POST", "/api/v1/device/heartbeat", {
            "model_version": model_version, "outbox_depth": outbox_depth, "latency_ms": latency_ms, "fps": fps})

    def download(self, url: str, dest: str | Path, *, sha256: str | None = None, max_bytes: int | None = None,
                 timeout: float | None = None) -> Path:
        """Download a bundle to ``dest``, resuming a ``dest.part`` left by a broken download.

        The partial file is only continued if the server's ETag still names the same content
        (``If-Range``), and the result is checked against ``sha256`` (or the ETag) before it is
        renamed into place. ``max_bytes`` bounds what is accepted.
        """
        d = Path(dest)
        part = d.with_name(d.name + ".part")
        tag_file = d.with_name(d.name + ".part.etag")
        have = part.stat().st_size if part.exists() else 0
        etag = tag_file.read_text().strip() if (have and tag_file.exists()) else None
        headers = {"Accept": "application/gzip"}
        if have and etag:
            headers.update({"Range": f"bytes={have}-", "If-Range": etag})
        conn, resp, dl = self._open("GET", url, headers=headers, timeout=timeout)
        try:
            if resp.status >= 400:
                body = b"".join(self._read_chunks(conn, resp, dl))
                if resp.status == 416 and have:  # the partial copy is already whole (or bigger)
                    part.unlink(missing_ok=True)
                    tag_file.unlink(missing_ok=True)
                raise _status_error(_Response(resp.status, {}, body))
            new_tag = resp.getheader("ETag")
            total = _total_size(resp)
            if max_bytes is not None and total is not None and total > max_bytes:
                raise ClientError(f"bundle is {total} bytes, more than the limit of {max_bytes}")
            if resp.status == 200:
                have = 0  # the server sent everything: start over
            if new_tag:
                tag_file.write_text(new_tag)
            with part.open("ab" if resp.status == 206 else "wb") as f:
                written = have
                for chunk in self._read_chunks(conn, resp, dl):
                    written += len(chunk)
                    if max_bytes is not None and written > max_bytes:
                        raise ClientError(f"download passed the limit of {max_bytes} bytes")
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
        finally:
            conn.close()
        want = sha256 or (new_tag.strip('"') if new_tag else None)
        if want is not None:
            got = sha256_file(part)
            if got != want:
                part.unlink(missing_ok=True)
                tag_file.unlink(missing_ok=True)
                raise ClientError(f"downloaded bundle sha256 {got[:12]}… differs from the expected {want[:12]}…")
        os.replace(part, d)
        tag_file.unlink(missing_ok=True)
        return d

    def upload_sample(self, image: bytes | str | Path, metadata: Mapping[str, Any] | None = None, *,
                      content_type: str | None = None, timeout: float | None = None) -> Any:
        """Send an image the device was unsure about, with what it knew of it, for the next training
        set. Returns the stored sample; ``duplicate`` is true when these bytes were already stored
        (a resend after a lost answer is harmless)."""
        if isinstance(image, bytes):
            data, ctype, name = image, content_type or _sniff(image), "sample"
        else:
            p = Path(image)
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise ClientError(f"{p}: cannot read image ({exc.strerror})") from exc
            ctype, name = content_type or mimetypes.guess_type(p.name)[0] or _sniff(data), p.name
        boundary = "edge-" + os.urandom(16).hex()
        meta = json.dumps(dict(metadata or {}), separators=(",", ":")).encode()
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n"
                f"Content-Type: application/json\r\n\r\n").encode() + meta + \
            (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{_q(name)}\"\r\n"
             f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        return self._request("POST", "/api/v1/device/samples", body=body, timeout=timeout,
                             headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}).json()

    # -- inference -----------------------------------------------------------------------------
    def classify(self, image: bytes | str | Path, model: str, *, top_k: int = 5, version: int | None = None,
                 deadline: float | None = None, content_type: str | None = None) -> Any:
        """Top-k labels for an image (file path or encoded bytes), answered within ``deadline`` s."""
        if isinstance(image, bytes):
            data, ctype = image, content_type or _sniff(image)
        else:
            p = Path(image)
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise ClientError(f"{p}: cannot read image ({exc.strerror})") from exc
            ctype = content_type or mimetypes.guess_type(p.name)[0] or _sniff(data)
        path = f"/v2/models/{_q(model)}" + (f"/versions/{version}" if version else "") + "/classify"
        return self._request("POST", path, body=data, headers={"Content-Type": ctype}, query={"top_k": top_k},
                             timeout=deadline).json()

    def infer(self, model: str, inputs: Mapping[str, Any], *, version: int | None = None,
              binary: bool = False, timeout: float | None = None) -> Any:
        """KServe v2 inference. ``inputs`` maps input names to numpy arrays; ``binary`` sends them with
        the binary tensor extension instead of JSON lists."""
        import numpy as np

        tensors, blobs = [], []
        for name, value in inputs.items():
            arr = np.ascontiguousarray(value)
            datatype = _DATATYPES.get(arr.dtype.name, "BYTES")
            t: dict[str, Any] = {"name": name, "shape": list(arr.shape), "datatype": datatype}
            if binary:
                t["parameters"] = {"binary_data_size": arr.nbytes}
                blobs.append(arr.tobytes())
            else:
                t["data"] = arr.reshape(-1).tolist()
            tensors.append(t)
        head = json.dumps({"inputs": tensors}).encode()
        path = f"/v2/models/{_q(model)}" + (f"/versions/{version}" if version else "") + "/infer"
        if binary:
            headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
            body = head + b"".join(blobs)
        else:
            headers, body = {"Content-Type": "application/json"}, head
        return self._request("POST", path, body=body, headers=headers, timeout=timeout).json()


# numpy dtype name -> KServe v2 datatype (the service's cloud_sync.service._oip has the same table)
_DATATYPES = {"bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32", "uint64": "UINT64",
              "int8": "INT8", "int16": "INT16", "int32": "INT32", "int64": "INT64", "float16": "FP16",
              "float32": "FP32", "float64": "FP64"}


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _status_error(r: _Response) -> HTTPStatusError:
    try:
        err = json.loads(r.body).get("error", {})
        if isinstance(err, str):  # the Open Inference Protocol's form (/v2): the code is in a header
            return HTTPStatusError(r.status, r.headers.get("edge-error-code", "error"), err)
        return HTTPStatusError(r.status, str(err.get("code", "error")), str(err.get("message", "")))
    except (ValueError, AttributeError):
        return HTTPStatusError(r.status, "error", r.body[:200].decode("utf-8", "replace"))


def _total_size(resp: http.client.HTTPResponse) -> int | None:
    cr = resp.getheader("Content-Range")
    if cr and "/" in cr:
        tail = cr.rsplit("/", 1)[1]
        return int(tail) if tail.isdigit() else None
    cl = resp.getheader("Content-Length")
    return int(cl) if cl and cl.isdigit() else None




def _sniff(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    return "application/octet-stream"
