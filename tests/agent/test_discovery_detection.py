"""Home Assistant discovery for a detector: one count sensor per configured label, following the
same rules as every other discovery config (tests/agent/test_discovery_ha.py), whose template
counts that label's objects in the latest record the device publishes on edge/D/telemetry.

Templates are rendered with Jinja2's immutable sandbox, the environment Home Assistant renders
MQTT value templates in."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edge_device.agent import Agent, AgentConfigError, discovery_messages, load_config
from edge_runtime import __version__
from tests.support.agent import agent_config
from tests.support.detection import detection_dir
from tests.support.mqtt import Subscriber
from tests.support.paths import ROOT, env_with_project
from tests.support.servers import Mosquitto

HA_TOPIC = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config")
HA_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
BASE = ("label", "score", "path", "model_version", "fps")
LABELS = ["person", "car", "traffic light", "Car", 'say "hi" }}', "café", "人"]


def configs(device_id: str, task: str | None, labels: list[str]) -> dict[str, dict[str, Any]]:
    msgs = discovery_messages(device_id, prefix="homeassistant", name=None, model_name="yolov8n", task=task,
                              count_labels=labels)
    return {topic: json.loads(payload) for topic, payload in msgs if payload}  # empty: an old topic cleared


def counts(found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The count sensors by their label (the name is '<label> count')."""
    return {c["name"].removesuffix(" count"): c for c in found.values() if c["name"].endswith(" count")}


@pytest.mark.parametrize("device_id", ["cam-1", "garage.cam", "Cam_7"])
def test_one_count_sensor_per_label_following_home_assistants_rules(device_id: str) -> None:
    found = configs(device_id, "detection", [*LABELS, "person"])  # a repeated label counts once
    by_label = counts(found)
    assert set(by_label) == set(LABELS) and len(found) == len(BASE) + len(LABELS)
    for topic, c in found.items():
        prefix, _, rest = topic.partition("/")
        m = HA_TOPIC.fullmatch(rest)
        assert prefix == "homeassistant" and m is not None and m["component"] == "sensor", topic
        assert HA_ENTITY_ID.match(c["default_entity_id"]) and c["default_entity_id"].startswith("sensor.")
        assert "object_id" not in c and "availability_topic" not in c
        assert c["origin"]["name"] == "edge-runtime" and c["origin"]["sw_version"] == __version__
        assert c["device"]["identifiers"] == [f"edge_{device_id}"]
        assert c["availability"][0]["topic"] == f"edge/{device_id}/status"
    for c in by_label.values():
        assert c["state_topic"] == f"edge/{device_id}/telemetry"
        assert c["state_class"] == "measurement" and "unit_of_measurement" not in c
    # every entity its own: "Car" and "car" do not collide, nor do labels with no ASCII letters
    assert len({c["unique_id"] for c in found.values()}) == len(found)
    assert len({c["default_entity_id"] for c in found.values()}) == len(found)
    if device_id == "cam-1":
        assert "homeassistant/sensor/cam-1/count_person/config" in found
        person = by_label["person"]
        assert person["unique_id"] == "edge_cam_1_count_person"
        assert person["default_entity_id"] == "sensor.edge_cam_1_count_person"
        assert by_label["traffic light"]["unique_id"] == "edge_cam_1_count_traffic_light"


def _record(dets: list[dict[str, Any]] | None, **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"ts": "2026-01-01T00:00:00Z", "frame": 1, "path": "local", "route": "offline-mode",
                           "model": {"name": "yolov8n", "version": 1}, **extra}
    if dets is not None:
        rec["detections"] = dets
    return rec


def _det(label: str, score: float) -> dict[str, Any]:
    return {"label": label, "score": score, "box": [1.0, 2.0, 30.0, 40.0]}


def render(found: dict[str, dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, str]:
    env = ImmutableSandboxedEnvironment()
    envelope = {"schema": 1, "device_id": "cam-1", "seq": 7, "kind": "telemetry", "records": records}
    # Home Assistant hands the template the payload parsed from JSON
    value_json = json.loads(json.dumps(envelope))
    return {c["name"]: env.from_string(c["value_template"]).render(value_json=value_json) for c in found.values()}


def test_the_templates_count_the_latest_frames_objects() -> None:
    found = configs("cam-1", "detection", LABELS)
    older = _record([_det("car", 0.9)] * 5)
    latest = _record([_det("person", 0.86), _det("car", 0.8), _det("person", 0.71), _det("traffic light", 0.6),
                      _det('say "hi" }}', 0.5), _det("café", 0.5), _det("人", 0.4), _det("kite", 0.3)])
    states = render(found, [older, latest])
    assert {k: states[f"{k} count"] for k in LABELS} == {
        "person": "2", "car": "1", "traffic light": "1", "Car": "0", 'say "hi" }}': "1", "café": "1", "人": "1"}
    # the label and score sensors read the best object of a detector's record
    assert states["Label"] == "person" and float(states["Score"]) == 86.0
    # a frame with nothing in it, and a failed frame: zero of everything
    for rec in (_record([]), _record(None, error="camera unplugged")):
        states = render(found, [latest, rec])
        assert all(states[f"{k} count"] == "0" for k in LABELS)
    assert render(found, [_record(None, error="camera unplugged")])["Label"] == "error"
    assert render(found, [_record([])])["Label"] == "none"


def test_a_classifier_gets_no_count_sensors(caplog: pytest.LogCaptureFixture) -> None:
    found = configs("cam-1", "classification", ["person"])
    assert len(found) == len(BASE) and not counts(found)
    assert "count_labels" in caplog.text and "not a detector" in caplog.text
    # its label sensor still reads top_k
    states = render(found, [_record(None, top_k=[{"label": "tabby", "score": 0.5}])])
    assert states["Label"] == "tabby" and float(states["Score"]) == 50.0


def test_count_labels_in_agent_toml(tmp_path: Path) -> None:
    base = {"device_id": "cam-1", "model": {"bundle": str(tmp_path / "b")}, "source": {"spec": "0"},
            "telemetry": {"mqtt_url": "mqtt://127.0.0.1:1883"}}
    cfg = load_config(data={**base, "home_assistant": {"enabled": True, "count_labels": ["person", "car"]}},
                      environ={})
    assert cfg.home_assistant.count_labels == ["person", "car"]
    assert load_config(data=base, environ={}).home_assistant.count_labels == []
    for bad in ([""], ["a\nb"], ["x" * 65], [f"l{i}" for i in range(51)], "person"):
        with pytest.raises(AgentConfigError, match="count_labels"):
            load_config(data={**base, "home_assistant": {"enabled": True, "count_labels": bad}}, environ={})


def test_a_running_detector_agent_feeds_its_count_sensors(tmp_path: Path, mosquitto: Mosquitto,
                                                         shared_data: Path) -> None:
    """The real agent, a real detection bundle (`edge bundle --task detection` of the shared
    YOLOv8n) on kite_and_cold.jpg, a real Mosquitto: the retained count sensors' templates, applied
    to what the agent publishes on its telemetry topic, give the counts of its latest frame."""
    det = detection_dir(shared_data)
    bundle = tmp_path / "yolov8n"
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "bundle", str(det / "models" / "yolov8n_qdq.onnx"),
                           "--task", "detection", "--name", "yolov8n", "-o", str(bundle)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=env_with_project())
    assert proc.returncode == 0, proc.stderr
    device = "kite-cam"
    cfg = load_config(data=agent_config(
        tmp_path, device_id=device, bundle=bundle, keys=None, source=str(det / "images" / "kite_and_cold.jpg"),
        telemetry={"mqtt_url": mosquitto.url, "confirm": "broker", "linger_s": 0.05, "metrics_interval_s": 0.5,
                   "drain_s": 5},
        home_assistant={"enabled": True, "count_labels": ["person", "kite", "car"]}), environ={})
    sub = Subscriber(mosquitto.port, f"edge/{device}/telemetry", "homeassistant/sensor/+/+/config")
    agent = Agent(cfg)
    t = threading.Thread(target=agent.run, daemon=True)
    t.start()
    try:
        tele = f"edge/{device}/telemetry"
        wanted = [f"homeassistant/sensor/{device}/count_{x}/config" for x in ("person", "kite", "car")]
        sub.wait(lambda: all(sub.payloads(w) for w in wanted) and bool(sub.payloads(tele)), 60,
                 "the count sensors and a telemetry message")
    finally:
        agent.stop()
        t.join(30)
    env = ImmutableSandboxedEnvironment()
    envelope = sub.payloads(tele)[-1]
    last = envelope["records"][-1]  # type: ignore[index]
    assert last["model"]["name"] == "yolov8n" and "error" not in last, last
    labels = [d["label"] for d in last["detections"]]
    assert labels.count("person") >= 2 and labels.count("kite") >= 2
    for w, label in zip(wanted, ("person", "kite", "car"), strict=True):
        config = sub.payloads(w)[-1]
        assert config["state_topic"] == tele
        assert env.from_string(config["value_template"]).render(value_json=envelope) == str(labels.count(label))
    sub.close()
    late = Subscriber(mosquitto.port, "homeassistant/sensor/+/+/config")  # Home Assistant starting later
    try:
        late.wait(lambda: all(late.payloads(w) for w in wanted), 10, "the retained count sensors")
        assert all(retained for topic, _, retained in late.messages if topic in wanted)
    finally:
        late.close()
