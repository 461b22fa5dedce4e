"""The one piece every engine runs: load the bundle once, then turn inputs into rows.

``BatchPredictor`` opens the bundle with ``edge_runtime.open_bundle`` (verifying the signature
with the given keys), runs ``Model.predict`` and builds the runtime's own record
(``make_record`` / ``error_record``), so a batch row holds exactly what ``edge run`` or the
device would have said about the same image. The local engine calls it in a loop; the Ray engine
makes it the class of its actors (one model load per actor).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

from edge_runtime import (
    EdgeError,
    Model,
    PublicKey,
    Record,
    ScoredLabel,
    error_record,
    is_archive,
    load_public_key,
    make_record,
    open_bundle,
    pack_bundle,
)
from edge_runtime.sources import Frame

from ._inputs import InputItem, InputReader

__all__ = ["ROW_COLUMNS", "BatchPredictor", "PredictorSpec", "Row", "load_keys", "row_from_record"]

log = logging.getLogger(__name__)


class Row(TypedDict):
    """One output row: the record's fields as columns (JSON text for lists) and the whole record."""

    source_key: str
    model_name: str
    model_version: int
    ts: str
    backend: str | None
    top_label: str | None
    top_score: float | None
    detections: str | None
    values: str | None
    latency_ms: float | None
    error: str | None
    record: str


ROW_COLUMNS: tuple[str, ...] = tuple(Row.__annotations__)


@dataclass(frozen=True)
class PredictorSpec:
    """Everything a worker needs to load the model, picklable so that it travels to Ray actors.

    ``bundle_archive`` (the bundle packed as .tar.gz bytes) is set when the workers may not see
    the driver's files (a Ray cluster); otherwise ``bundle`` is a path they open themselves.
    """

    bundle: str
    pubkeys_pem: tuple[bytes, ...] = ()
    threads: int | None = None
    backend: str | None = None
    s3_endpoint_url: str | None = None
    bundle_archive: bytes | None = field(default=None, repr=False)

    def packed(self) -> PredictorSpec:
        """This spec with the bundle inside as .tar.gz bytes, for workers that cannot read the
        driver's files (a Ray cluster); they verify it again when they open it."""
        if self.bundle_archive is not None:
            return self
        src = Path(self.bundle)
        if src.is_file() and is_archive(src):
            return replace(self, bundle_archive=src.read_bytes())
        with tempfile.TemporaryDirectory(prefix="edge-batch-") as tmp:
            archive = pack_bundle(src, Path(tmp) / "bundle.tar.gz")
            return replace(self, bundle_archive=archive.read_bytes())


def load_keys(pems: Sequence[bytes], workdir: Path) -> list[PublicKey] | None:
    """Public keys from PEM bytes (through the runtime's own reader, so its checks apply)."""
    if not pems:
        return None
    keys = []
    for i, pem in enumerate(pems):
        p = workdir / f"key{i}.pem"
        p.write_bytes(pem)
        keys.append(load_public_key(p))
    return keys


class BatchPredictor:
    """Loads the bundle once; ``predict_items`` turns inputs into rows, never raising for a bad input."""

    def __init__(self, spec: PredictorSpec) -> None:
        self.spec = spec
        self._tmp = Path(tempfile.mkdtemp(prefix="edge-batch-"))
        try:
            keys = load_keys(spec.pubkeys_pem, self._tmp)
            source: str | Path = spec.bundle
            if spec.bundle_archive is not None:
                source = self._tmp / "bundle.tar.gz"
                source.write_bytes(spec.bundle_archive)
            bundle = open_bundle(source, pubkey=keys)
            self.model = Model.load(bundle, backend=spec.backend, threads=spec.threads)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.reader = InputReader(spec.s3_endpoint_url)
        log.info("batch worker loaded %r", self.model)

    def predict_item(self, item: InputItem) -> Row:
        frame = Frame(index=item.frame, source=item.key)
        try:
            image = self.reader.image(item.key)
            rec = make_record(self.model, frame, self.model.predict(image))
        except EdgeError as exc:
            rec = error_record(self.model, frame, str(exc))
        except Exception as exc:  # one bad input must never stop a batch
            log.warning("%s: unexpected %s", item.key, type(exc).__name__, exc_info=True)
            rec = error_record(self.model, frame, f"{item.key}: {type(exc).__name__}: {exc}")
        return row_from_record(item.key, rec)

    def predict_items(self, items: Sequence[InputItem]) -> list[Row]:
        return [self.predict_item(it) for it in items]

    def close(self) -> None:
        try:
            self.model.close()
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)


def row_from_record(key: str, rec: Record) -> Row:
    model = rec.get("model") or {"name": "", "version": 0}
    top_k = rec.get("top_k")
    dets = rec.get("detections")
    top: ScoredLabel | None = top_k[0] if top_k else None
    if top is None and dets:
        top = {"label": dets[0]["label"], "score": dets[0]["score"]}
    values = rec.get("values")
    latency = rec.get("latency_ms") or {}
    return {
        "source_key": key,
        "model_name": model["name"],
        "model_version": int(model["version"]),
        "ts": rec["ts"],
        "backend": rec.get("backend"),
        "top_label": top["label"] if top else None,
        "top_score": float(top["score"]) if top else None,
        "detections": json.dumps(dets) if dets is not None else None,
        "values": json.dumps(values) if values is not None else None,
        "latency_ms": latency.get("total"),
        "error": rec.get("error"),
        "record": json.dumps(rec, separators=(",", ":")),
    }


def describe(spec: PredictorSpec) -> dict[str, Any]:
    return {"bundle": spec.bundle, "threads": spec.threads, "backend": spec.backend,
            "signed": bool(spec.pubkeys_pem)}
