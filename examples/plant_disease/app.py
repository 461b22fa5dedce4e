"""Plant-disease checker: camera → classify → a local web page with the condition and what to do.

    python examples/plant_disease/app.py --bundle OUT/tflite/plant_disease-tflite-int8 --source picamera
    python examples/plant_disease/app.py --bundle B --source 0                      # USB webcam
    python examples/plant_disease/app.py --bundle B --source photos/ --interval 3   # slideshow stand-in
    python examples/plant_disease/app.py --bundle B --source photos/ --step         # one photo per click

then open http://127.0.0.1:8080/ (``--host 0.0.0.0`` to reach it from a phone on the same network).

Built on the public API only: ``edge_runtime`` (Model, sources), ``edge_device.agent`` (the hybrid
Router), ``edge_device.telemetry`` (outbox → MQTT) and ``edge_device.client`` (the cloud).

- Every frame is classified on the device. With ``--cloud``, a frame whose device confidence is
  under ``--threshold`` is also sent to the cloud model (cascade); a cloud that is down or slow
  costs at most ``--deadline-ms`` and then nothing while its circuit breaker is open.
- Those unsure frames are kept in ``--unsure-dir`` (at most ``--unsure-max``, oldest dropped
  first) and uploaded to the cloud when it answers, each deleted only once the cloud acknowledged
  it, so the next model can be trained on what the field actually sees.
- With ``--mqtt``, every result goes to the telemetry outbox (SQLite), then MQTT.
- A frame that cannot be read or classified shows as an error on the page; the app goes on.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from PIL import Image

from edge_device.agent import BreakerConfig, CloudClassifier, RepeatSource, Router, RouterConfig
from edge_device.client import ClientError, CloudClient
from edge_device.telemetry import Telemetry, TelemetryError, open_telemetry, validate_device_id
from edge_runtime import EdgeError, Model, utc_now
from edge_runtime.sources import Frame, Source, open_source

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling helper modules, wherever run from

from leaf_advice import DEFAULT_ADVICE, AdviceBook, AdviceError
from leaf_samples import SampleStore, Uploader, cloud_sender
from leaf_web import LatestView, StepGate, WebServer

log = logging.getLogger("plant_disease.app")

_AS_IS = {".jpg": ".jpg", ".jpeg": ".jpg", ".png": ".png"}
_DISPLAY_MAX = 800  # px: the page's picture; the kept sample keeps the full frame


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="the model bundle (directory or .tar.gz), e.g. the int8 TFLite one")
    p.add_argument("--source", required=True,
                   help="picamera, a camera index (0), an rtsp:// URL, a video file, an image folder or glob")
    p.add_argument("--host", default="127.0.0.1", help="address of the web page (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080, help="port of the web page (0: any free port)")
    p.add_argument("--advice", type=Path, default=DEFAULT_ADVICE, help="advice JSON, one entry per label")
    p.add_argument("--threshold", type=float, default=0.7,
                   help="a frame whose device confidence is below this is unsure (default 0.7)")
    g = p.add_argument_group("pacing (files and videos stand in for a camera)")
    g.add_argument("--interval", type=float, default=0.0, metavar="S",
                   help="seconds between frames: a slideshow of a folder, a calmer page for a camera")
    g.add_argument("--step", action="store_true",
                   help="classify one frame per press of the page's button (or POST /api/next)")
    g.add_argument("--loop", action="store_true", help="start a folder or video again when it ends")
    g = p.add_argument_group("cloud")
    g.add_argument("--cloud", default=None, metavar="URL", help="cloud service: cascade when unsure, sample uploads")
    g.add_argument("--token", default=os.environ.get("PLANT_CLOUD_TOKEN"),
                   help="device token (default $PLANT_CLOUD_TOKEN)")
    g.add_argument("--token-file", type=Path, default=None, help="a file holding the device token")
    g.add_argument("--cloud-model", default=None, help="model the cloud runs (default: the bundle's name)")
    g.add_argument("--deadline-ms", type=float, default=1500.0,
                   help="longest a frame waits for the cloud (default 1500)")
    g.add_argument("--upload-interval", type=float, default=10.0, metavar="S",
                   help="seconds between upload attempts while the cloud does not answer (default 10)")
    g = p.add_argument_group("storage and telemetry")
    g.add_argument("--data-dir", type=Path, default=Path("plant-disease-data"),
                   help="home of the unsure frames and the telemetry outbox (default ./plant-disease-data)")
    g.add_argument("--unsure-dir", type=Path, default=None, help="folder of unsure frames (default DATA_DIR/unsure)")
    g.add_argument("--unsure-max", type=int, default=500, help="most unsure frames kept (default 500)")
    g.add_argument("--mqtt", default=None, metavar="URL", help="telemetry broker, e.g. mqtt://broker:1883")
    g.add_argument("--device-id", default=None, help="device id (default: the host name)")
    g.add_argument("--outbox", type=Path, default=None, help="telemetry outbox (default DATA_DIR/outbox.db)")
    g.add_argument("--telemetry-confirm", choices=["auto", "ingester", "broker"], default="auto",
                   help="when a record leaves the outbox: auto (default) waits for the cloud's ingester when one "
                        "announces itself on edge/D/cmd/ingest, else for the broker's acknowledgement; ingester or "
                        "broker force one")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if not 0.0 <= args.threshold <= 1.0:
        p.error("--threshold is a confidence between 0 and 1")
    if args.interval < 0 or args.unsure_max < 1 or args.upload_interval <= 0 or args.deadline_ms <= 0:
        p.error("--interval must be >= 0, --unsure-max >= 1, --upload-interval and --deadline-ms > 0")
    if args.token_file is not None:
        try:
            args.token = args.token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            p.error(f"--token-file {args.token_file}: {exc.strerror}")
    if args.cloud and not args.token:
        p.error("--cloud needs the device's token: --token, --token-file or $PLANT_CLOUD_TOKEN")
    if args.device_id is None:
        host = "".join(c if c.isalnum() or c in "._-" else "-" for c in socket.gethostname()).strip("-._")
        args.device_id = (host or "plant-checker")[:64]
    try:
        validate_device_id(args.device_id)
    except ValueError as exc:
        p.error(str(exc))
    return args


def _jpeg(rgb: np.ndarray, *, max_side: int | None, quality: int) -> bytes:
    im = Image.fromarray(rgb if rgb.dtype == np.uint8 else np.clip(rgb, 0, 255).astype(np.uint8))
    if max_side is not None and max(im.size) > max_side:
        im.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


class App:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop_event = threading.Event()
        self.threshold: float = args.threshold
        self.frames = 0
        self.errors = 0
        self.unsure = 0
        self.telemetry: Telemetry | None = None
        self.uploader: Uploader | None = None
        self.gate: StepGate | None = StepGate() if args.step else None
        self._classifier = threading.Thread(target=self._run_loop, name="classify", daemon=True)
        # Each part is registered for closing as soon as it exists, so a failure half-way through
        # the start releases what was opened (last opened, first closed).
        self._parts = contextlib.ExitStack()
        self._closed = False
        self._end_reason = "end of source"
        try:
            self.advice = AdviceBook.load(args.advice)
            self.model = self._parts.enter_context(Model.load(args.bundle))
            missing = self.advice.missing(self.model.labels)
            if missing:
                log.warning("no advice for %d label(s): %s", len(missing), ", ".join(missing))
            self.source = self._open_source()
            self._parts.callback(self.source.close)
            cloud = None
            if args.cloud:
                cloud = CloudClassifier(args.cloud, args.token, args.cloud_model or self.model.name, top_k=5)
            mode = "cascade" if cloud is not None else "offline"
            self.router = Router(RouterConfig(mode=mode, threshold=self.threshold, deadline_ms=args.deadline_ms,
                                              cloud_model=args.cloud_model, breaker=BreakerConfig()), cloud)
            self._parts.callback(self.router.close)
            data_dir: Path = args.data_dir
            self.samples = SampleStore(args.unsure_dir or data_dir / "unsure", args.unsure_max)
            if args.cloud:
                send = cloud_sender(CloudClient(args.cloud, args.token), args.device_id)
                self.uploader = Uploader(self.samples, send, interval=args.upload_interval)
                self._parts.callback(self.uploader.stop)
            if args.mqtt:
                self.telemetry = open_telemetry(args.mqtt, args.device_id, args.outbox or data_dir / "outbox.db",
                                                delivery={"confirm": args.telemetry_confirm})
                self._parts.callback(self.telemetry.close, 2.0)
            self.view = LatestView({"model": {"name": self.model.name, "version": self.model.version},
                                    "device_id": args.device_id, "step": bool(args.step), "mode": mode,
                                    "threshold": self.threshold})
            self.web = WebServer(args.host, args.port, self.view, status=self.status, gate=self.gate)
            self._parts.callback(self.web.close)
        except BaseException:
            self._parts.close()
            raise

    def _open_source(self) -> Source:
        spec = self.args.source
        first = open_source(spec)
        if not self.args.loop or first.live:
            return first
        first.close()
        return RepeatSource(lambda: open_source(spec))

    # -- running ---------------------------------------------------------------------------
    def run(self) -> int:
        self.web.start()
        if self.uploader is not None:
            self.uploader.start()
        if self.telemetry is not None:
            self._event("app_started", model=self.model.name, version=self.model.version,
                        mode=self.router.mode, threshold=self.threshold)
        self._classifier.start()
        try:
            while not self.stop_event.wait(0.5):
                pass
        finally:
            self.close()
        return 0

    def stop(self) -> None:
        self.stop_event.set()
        if self.gate is not None:
            self.gate.close()

    def _run_loop(self) -> None:
        assert self.source is not None
        it = iter(self.source)
        # A folder or video is read one frame ahead, so its end shows on the page (and in step
        # mode the button says so) right after the last frame, not at the next press. A camera
        # is not: a frame taken ahead would be stale by the time it is classified.
        ahead = not self.source.live
        upcoming = self._take(it) if ahead else None
        while not self.stop_event.is_set():
            if ahead and upcoming is None:
                break
            if self.gate is not None and not self.gate.wait(self.stop_event):
                break
            frame = upcoming if ahead else self._take(it)
            if frame is None:
                break
            self.process(frame)
            if ahead:
                upcoming = self._take(it)
            if self.args.interval > 0 and self.stop_event.wait(self.args.interval):
                break
        if not self.stop_event.is_set():
            log.info("%s after %d frame(s); the page keeps the last one", self._end_reason, self.frames + self.errors)
            self.view.set_flags(finished=True)
            self._event("source_finished", frames=self.frames, errors=self.errors, unsure=self.unsure)

    def _take(self, it: Iterator[Frame]) -> Frame | None:
        """The next frame, or None at the end of the source or when it failed (shown on the page)."""
        try:
            return next(it)
        except StopIteration:
            return None
        except EdgeError as exc:  # a camera that stopped delivering
            log.error("the source failed: %s", exc)
            self._end_reason = f"source failed: {exc}"
            self.view.publish({"error": str(exc), "frame": None, "source": self.args.source, "has_frame": False},
                              None)
            return None

    def process(self, frame: Frame) -> dict[str, Any]:
        """Classify one frame, show it, keep it if unsure, send its record to telemetry."""
        t0 = time.perf_counter()
        try:
            if frame.error is not None:
                raise EdgeError(frame.error)
            data = frame.load()
            tensors = self.model.preprocess(data)
            frame.meta["preprocess_ms"] = (time.perf_counter() - t0) * 1000
            rec = self.router(self.model, frame, tensors)
        except EdgeError as exc:
            rec = {"ts": utc_now(), "source": frame.source, "frame": frame.index, "error": str(exc),
                   "model": {"name": self.model.name, "version": self.model.version}, "path": "local"}
            data = None
        result = self._result(rec)
        if "error" in rec:
            self.errors += 1
            log.warning("frame %s (%s): %s", frame.index, frame.source, rec["error"])
        else:
            self.frames += 1
        jpeg = None
        if isinstance(data, np.ndarray) and data.ndim == 3:
            jpeg = _jpeg(data, max_side=_DISPLAY_MAX, quality=85)
            if result["unsure"]:
                self._keep(frame, data, rec)
        result["has_frame"] = jpeg is not None
        self.view.publish(result, jpeg)
        rec["unsure"] = result["unsure"]
        if self.telemetry is not None:
            try:
                self.telemetry.write(rec)
            except TelemetryError as exc:
                log.error("telemetry did not take the record: %s", exc)
        return result

    def _result(self, rec: dict[str, Any]) -> dict[str, Any]:
        top = rec.get("top_k") or []
        label = top[0]["label"] if top else None
        confidence = float(top[0]["score"]) if top else None
        # The device's own confidence: the router keeps it as local_score when the cloud answered.
        local = rec.get("local_score", confidence) if rec.get("path") == "cloud" else confidence
        unsure = "error" not in rec and local is not None and float(local) < self.threshold
        if unsure:
            self.unsure += 1
        return {"ts": rec.get("ts"), "frame": rec.get("frame"), "source": rec.get("source"), "label": label,
                "confidence": confidence, "local_confidence": local, "unsure": unsure,
                "path": rec.get("path"), "route": rec.get("route"), "top_k": top, "error": rec.get("error"),
                "advice": self.advice.lookup(label).as_dict() if label is not None else None,
                "answered_by": rec.get("model"), "latency_ms": rec.get("latency_ms")}

    def _keep(self, frame: Frame, rgb: np.ndarray, rec: dict[str, Any]) -> None:
        src = Path(frame.source) if frame.source else None
        suffix = _AS_IS.get(src.suffix.lower()) if src is not None else None
        try:
            if src is not None and suffix is not None and src.is_file():
                # A photo file is kept as it is: no second JPEG generation for the training set.
                data = src.read_bytes()
            else:
                data, suffix = _jpeg(rgb, max_side=None, quality=92), ".jpg"
            meta = {"ts": rec.get("ts"), "source": frame.source, "frame": frame.index,
                    "model": {"name": self.model.name, "version": self.model.version},
                    "threshold": self.threshold, "local_score": rec.get("local_score", rec["top_k"][0]["score"]),
                    "path": rec.get("path"), "route": rec.get("route"), "top_k": rec.get("top_k")}
            self.samples.keep(data, suffix, meta)
        except (OSError, ValueError) as exc:
            log.error("unsure frame %s not kept: %s", frame.index, exc)
            return
        if self.uploader is not None:
            self.uploader.notify()

    def _event(self, name: str, **fields: Any) -> None:
        if self.telemetry is not None:
            try:
                self.telemetry.event(name, **fields)
            except TelemetryError as exc:
                log.error("event %s not queued: %s", name, exc)

    def status(self) -> dict[str, Any]:
        up = self.uploader
        body: dict[str, Any] = {
            "frames": self.frames, "errors": self.errors, "unsure": self.unsure,
            "finished": bool(self.view.latest().get("finished")),
            "samples": {"pending": len(self.samples), "kept": self.samples.kept, "dropped": self.samples.dropped,
                        "max": self.samples.max_items, "uploaded": up.uploaded if up else 0,
                        "rejected": up.rejected if up else 0, "cloud_online": up.online if up else None,
                        "last_error": up.last_error if up else None},
            "cloud": {"mode": self.router.mode, "breaker": self.router.breaker.state,
                      "routes": dict(self.router.counts)},
        }
        if self.telemetry is not None:
            stats = self.telemetry.stats()
            body["telemetry"] = {"outbox": stats.get("outbox"), "mqtt": stats.get("mqtt")}
        return body

    def close(self) -> None:
        """Stop the classifier first (no new records), then close the parts in reverse order of
        opening: the page, telemetry (it flushes to its outbox), the uploader, the router, the
        source, the model."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._classifier.is_alive():
            self._classifier.join(10)
        try:
            self._parts.close()
        except EdgeError as exc:
            log.error("not everything closed cleanly: %s", exc)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = App(args)
    except (EdgeError, AdviceError, TelemetryError, ClientError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        app.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"plant-disease checker: http://{args.host}:{app.web.port}/  ({app.model.name} v{app.model.version}, "
          f"{app.router.mode} mode)", flush=True)
    return app.run()


if __name__ == "__main__":
    sys.exit(main())
