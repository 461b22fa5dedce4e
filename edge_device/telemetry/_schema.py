"""The wire format between devices and the cloud (schema 1), shared by both sides.

Every payload is a JSON object with a ``schema`` field. Topics for device ``D``:

* ``edge/D/telemetry``, ``edge/D/metrics``, ``edge/D/events``: a :class:`MessageEnvelope`
  (``schema``, ``device_id``, ``seq``, ``uuid``, ``kind``, ``created``, ``records``). ``seq`` is
  per device, strictly increasing, and a resent message keeps its ``seq`` and ``uuid``, so the
  cloud drops duplicates on ``(device_id, seq)``.
* ``edge/D/status``: a retained :class:`StatusMessage`, ``offline`` through the last will.
* ``edge/D/cmd/ack``: a :class:`ConfirmMessage` from the ingester after its database commit.
* ``edge/D/cmd/ingest``: a retained :class:`IngestAnnouncement` while an ingester serves the device
  (``retired`` once it is removed for good); devices with ``confirm="auto"`` wait for the ingester's
  confirmations when it is there and delete at the broker's PUBACK when it is not.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from edge_runtime import utc_now

from ._config import DEVICE_ID_PATTERN
from ._errors import RecordError

__all__ = [
    "INGEST_ANNOUNCE_LEAF",
    "MAX_RECORDS_PER_MESSAGE",
    "SCHEMA_VERSION",
    "ConfirmMessage",
    "IngestAnnouncement",
    "MessageEnvelope",
    "ModelRef",
    "StatusMessage",
    "encode_record",
    "envelope_bytes",
    "topic_for",
    "utc_now_iso",
]

SCHEMA_VERSION = 1
MAX_RECORDS_PER_MESSAGE = 50_000
TOPIC_ROOT = "edge"
#: the topic leaf (under ``edge/D/``) of the retained :class:`IngestAnnouncement`
INGEST_ANNOUNCE_LEAF = "cmd/ingest"
_SEQ_MAX = 2**63 - 1


def topic_for(device_id: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{leaf}"


#: the records' timestamp format, shared with edge_runtime
utc_now_iso = utc_now


def _json_default(obj: Any) -> Any:
    # numpy scalars and arrays slip into records from postprocessing; .item()/.tolist() give plain
    # Python values without importing numpy here.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, datetime):
        return obj.isoformat()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _finite(obj: Any) -> Any:
    """Replace NaN/inf with None: strict JSON (and PostgreSQL's jsonb) cannot carry them, and a model
    that outputs NaN should still have its frame recorded rather than lost."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def encode_record(record: Any) -> str:
    """One record as compact JSON text; raises :class:`RecordError` naming what is wrong."""
    if not isinstance(record, dict):
        raise RecordError(f"a record must be a JSON object (dict), not {type(record).__name__}")
    try:
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=_json_default)
    except ValueError as exc:
        if "Out of range float" not in str(exc):
            raise RecordError(f"record is not JSON-serializable: {exc}") from exc
    except (TypeError, RecursionError) as exc:
        raise RecordError(f"record is not JSON-serializable: {exc}") from exc
    try:
        return json.dumps(_finite(record), separators=(",", ":"), ensure_ascii=False, allow_nan=False,
                          default=lambda o: _finite(_json_default(o)))
    except (TypeError, ValueError, RecursionError) as exc:
        raise RecordError(f"record is not JSON-serializable: {exc}") from exc


def envelope_bytes(*, device_id: str, seq: int, uuid: str, kind: str, created: str, bodies: list[str]) -> bytes:
    """Build a message from already-encoded records without parsing them again."""
    head = json.dumps(
        {"schema": SCHEMA_VERSION, "device_id": device_id, "seq": seq, "uuid": uuid, "kind": kind,
         "created": created},
        separators=(",", ":"),
    )
    return (head[:-1] + ',"records":[' + ",".join(bodies) + "]}").encode("utf-8")


#: bytes a message adds around its records (generous: long device ids, commas between records)
def envelope_overhead(device_id: str, n_records: int) -> int:
    return 200 + len(device_id.encode()) + n_records


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class MessageEnvelope(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    seq: StrictInt = Field(ge=0, le=_SEQ_MAX)
    uuid: UUID
    kind: Literal["metrics", "telemetry", "events"]
    created: str | None = None
    records: list[dict[str, Any]] = Field(max_length=MAX_RECORDS_PER_MESSAGE)


class ModelRef(_Wire):
    name: str = Field(min_length=1, max_length=128)
    version: StrictInt = Field(ge=1)


class StatusMessage(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    state: Literal["online", "offline"]
    ts: str | None = None
    runtime: str | None = None
    #: the model the device is running, once it runs one
    model: ModelRef | None = None


class ConfirmMessage(_Wire):
    schema_: Literal[1] = Field(alias="schema")
    device_id: str = Field(pattern=DEVICE_ID_PATTERN)
    seqs: list[StrictInt] = Field(max_length=100_000)

    @field_validator("seqs")
    @classmethod
    def _seq_range(cls, v: list[int]) -> list[int]:
        if any(s < 0 or s > _SEQ_MAX for s in v):
            raise ValueError("seq out of range")
        return v


class IngestAnnouncement(_Wire):
    """Retained on ``edge/D/cmd/ingest`` by an ingester that commits D's messages and confirms them.

    ``ingester`` names the ingestion service (its share group, else its client id), so that
    ``edge cloud ingest --retire`` clears only its own announcements.
    """

    schema_: Literal[1] = Field(alias="schema")
    ingester: str = Field(min_length=1, max_length=128)
    ts: str | None = None
    #: the ingester was removed for good: devices delete at the broker's PUBACK again (retained, so a
    #: device that was offline then learns it too, and forgets the ingester it remembered)
    retired: bool = False
