"""Helpers of the agent tests and the agent benchmark: configs, the release under test, the cloud
service it updates from, records it produces."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.data import IMAGENET_LABELS, IMAGES_DIR, MOBILENET_MODEL
from tests.support.service import ADMIN_TOKEN, CloudService

__all__ = ["FAR_FUTURE", "IMAGES", "LABELS", "MODEL", "NAME", "ListSink", "admin", "agent_config", "expiring",
           "register", "start_service", "toml_dumps", "write_config"]

MODEL = MOBILENET_MODEL
LABELS = IMAGENET_LABELS
IMAGES = IMAGES_DIR
NAME = "mobilenet_v2"
FAR_FUTURE = "2099-01-01T00:00:00Z"


def expiring(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds").replace("+00:00", "Z")


def start_service(tmp_path: Path, trusted: list[Path], mqtt_port: int | None = None) -> CloudService:
    data = tmp_path / "cloud"
    data.mkdir(exist_ok=True)
    return CloudService(data, trusted, mqtt_port=mqtt_port).start()


def admin(service: CloudService) -> Any:
    from edge_device.client import CloudClient

    return CloudClient(service.url, ADMIN_TOKEN, timeout=120)


def register(service: CloudService, device_id: str, tmp_path: Path) -> Path:
    """Register the device for the model's stable channel; return its token file."""
    dev = admin(service).register_device(device_id, model=NAME, channel="stable")
    token_file = tmp_path / f"{device_id}.token"
    token_file.write_text(dev["token"] + "\n")
    return token_file


def agent_config(tmp_path: Path, *, device_id: str, bundle: Path, keys: tuple[Path, Path] | None,
                 source: str, **sections: Any) -> dict[str, Any]:
    """An agent.toml as a dict: offline, no telemetry, no updates unless ``sections`` say so."""
    cfg: dict[str, Any] = {
        "device_id": device_id,
        "state_dir": str(tmp_path / f"state-{device_id}"),
        "model": {"bundle": str(bundle), "trusted_keys": [str(keys[1])] if keys else [], "threads": 1},
        "source": {"spec": source},
        "updates": {"enabled": False},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(name), dict):
            cfg[name] = {**cfg[name], **value}
        else:
            cfg[name] = value
    return cfg


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(toml_dumps(cfg))
    return path


class ListSink:
    """Collects records (the pipeline's sink thread writes, the test waits)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._cond = threading.Condition()

    def write(self, record: dict[str, Any]) -> None:
        with self._cond:
            self.records.append(json.loads(json.dumps(record)))
            self._cond.notify_all()

    def close(self) -> None:
        pass

    def wait(self, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.records) >= n, timeout):
                raise TimeoutError(f"{len(self.records)} record(s) after {timeout} s, waiting for {n}")
            return list(self.records)

    def wait_for(self, pred: Callable[[list[dict[str, Any]]], bool], timeout: float, what: str) -> list[dict[str, Any]]:
        with self._cond:
            if not self._cond.wait_for(lambda: pred(self.records), timeout):
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
            return list(self.records)


def toml_dumps(data: dict[str, object]) -> str:
    """Just enough TOML for agent.toml: scalars, lists of scalars, nested tables."""

    def scalar(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (str, Path)):
            return json.dumps(str(v))
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} as TOML")

    lines: list[str] = []

    def table(d: dict[str, object], prefix: str) -> None:
        subs = []
        for k, v in d.items():
            if isinstance(v, dict):
                subs.append((k, v))
            elif v is not None:
                lines.append(f"{k} = {scalar(v)}")
        for k, v in subs:
            name = f"{prefix}.{k}" if prefix else k
            lines.append(f"\n[{name}]")
            table(v, name)

    table(data, "")
    return "\n".join(lines) + "\n"
