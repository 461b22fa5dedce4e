"""Payload validation and field extraction, without a broker."""

from __future__ import annotations

import json

import pytest

from cloud_sync import PayloadError
from cloud_sync.ingest import parse_message
from cloud_sync.ingest._parse import salvage_key, telemetry_row

UUID = "0b7f3f1e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def env(**over: object) -> bytes:
    body = {"schema": 1, "device_id": "dev1", "seq": 7, "uuid": UUID, "kind": "telemetry",
            "created": "2026-01-01T00:00:00Z", "records": [{"frame": 1}]}
    body.update(over)
    return json.dumps(body).encode()


def test_a_valid_message() -> None:
    p = parse_message("edge/dev1/telemetry", env(), max_payload_bytes=1 << 20)
    assert p.envelope is not None and p.envelope.seq == 7 and p.envelope.records == [{"frame": 1}]


@pytest.mark.parametrize(("topic", "payload", "category", "reason"), [
    ("edge/dev1/telemetry", b"{not json", "malformed", "not valid JSON"),
    ("edge/dev1/telemetry", b"\xff\xfe\x00binary", "malformed", "not valid JSON"),
    ("edge/dev1/telemetry", b"[1, 2, 3]", "malformed", "not a JSON object"),
    ("edge/dev1/telemetry", b"[" * 2000, "malformed", "not valid JSON"),  # nesting past the parser's limit
    ("edge/dev1/telemetry", env(schema=2), "schema", "unsupported schema 2"),
    ("edge/dev1/telemetry", json.dumps({"device_id": "dev1"}).encode(), "schema", "no 'schema' field"),
    ("edge/dev1/telemetry", env(seq="7"), "schema", "seq"),
    ("edge/dev1/telemetry", env(seq=2**64), "schema", "seq"),
    ("edge/dev1/telemetry", env(records=[1, 2]), "schema", "records.0"),
    ("edge/dev1/telemetry", env(extra=True), "schema", "extra"),
    ("edge/dev1/telemetry", env(device_id="dev2"), "mismatch", "does not match|but the topic"),
    ("edge/dev1/events", env(), "mismatch", "kind 'telemetry'"),
    ("edge/dev1/telemetry", env(records=[{"x": "y" * 5000}]), "oversized", "over the 2048-byte limit"),
    ("other/dev1/telemetry", env(), "topic", "unexpected topic"),
    ("edge/dev1/status", b'{"schema": 1, "device_id": "dev1", "state": "sleeping"}', "schema", "state"),
], ids=lambda v: v if isinstance(v, str) and len(v) < 40 else None)
def test_bad_payloads_get_a_category_and_a_reason(topic: str, payload: bytes, category: str, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason) as info:
        parse_message(topic, payload, max_payload_bytes=2048)
    assert info.value.category == category


def test_a_rejected_message_is_confirmable_only_when_it_names_its_own_device() -> None:
    assert salvage_key("edge/dev1/telemetry", env(schema=2)) == ("dev1", 7)
    assert salvage_key("edge/dev1/telemetry", env(device_id="dev2")) == ("dev1", None)
    assert salvage_key("edge/dev1/telemetry", b"garbage") == ("dev1", None)


def test_wrong_field_types_become_null_columns_not_rejects() -> None:
    row = telemetry_row({"ts": "yesterday", "frame": "12", "top_k": "cat", "model": [1],
                         "latency_ms": {"total": float("nan")}, "error": None})
    assert row["ts"] is None and row["frame"] is None and row["top_label"] is None
    assert row["model_name"] is None and row["latency_ms"] is None
    good = telemetry_row({"ts": "2026-01-01T00:00:00Z", "frame": 3, "top_k": [{"label": "cat", "score": 0.5}],
                          "model": {"name": "m", "version": 2}, "latency_ms": {"total": 4}})
    assert good["frame"] == 3 and good["top_label"] == "cat" and good["model_version"] == 2
    assert good["ts"] is not None and good["ts"].tzinfo is not None
