"""Home Assistant MQTT discovery configs follow Home Assistant's current schema.

The rules checked here are Home Assistant's own (homeassistant/components/mqtt): the discovery topic
must match ``<component>/[<node_id>/]<object_id>/config`` with ids in ``[a-zA-Z0-9_-]`` (anything
else is logged as an illegal topic and ignored), ``origin`` needs ``name`` (``sw_version`` and
``support_url`` optional), a device needs an identifier, ``availability`` and ``availability_topic``
are exclusive, and ``default_entity_id`` (``<domain>.<object id>``) replaces the deprecated
``object_id``.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jinja2
import pytest

from edge_device.agent import discovery_messages, discovery_topic_filter
from edge_runtime import __version__

#: Home Assistant's matcher for the part of the topic after the discovery prefix
HA_TOPIC = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config")
#: Home Assistant's valid entity id: lower-case slug, no leading, trailing or doubled underscore
HA_ENTITY_ID = re.compile(r"^(?!.+__)(?!_)[\da-z_]+(?<!_)\.(?!_)[\da-z_]+(?<!_)$")
FIELDS = ("label", "score", "path", "model_version", "fps")


def configs(device_id: str, **kw: Any) -> dict[str, dict[str, Any]]:
    msgs = discovery_messages(device_id, prefix="homeassistant", name=kw.pop("name", None), model_name="plants", **kw)
    return {topic: json.loads(payload) for topic, payload in msgs if payload}  # empty: a clear (see below)


@pytest.mark.parametrize("device_id", ["greenhouse.1", "greenhouse-1", "Cam_7", "a.b.c"])
def test_topics_and_ids_match_home_assistants_rules(device_id: str) -> None:
    found = configs(device_id)
    assert len(found) == len(FIELDS)
    for topic, c in found.items():
        prefix, _, rest = topic.partition("/")
        assert prefix == "homeassistant"
        m = HA_TOPIC.fullmatch(rest)
        assert m is not None, f"Home Assistant ignores {topic}"
        assert m["component"] == "sensor"
        assert "object_id" not in c  # deprecated, stops working in Home Assistant 2026.4
        assert c["default_entity_id"].startswith("sensor.") and HA_ENTITY_ID.match(c["default_entity_id"])
        assert c["origin"]["name"] == "edge-runtime" and c["origin"]["sw_version"] == __version__
        assert c["device"]["identifiers"] == [f"edge_{device_id}"]
        assert "availability_topic" not in c  # exclusive with the availability list
        assert c["availability"] == [{"topic": f"edge/{device_id}/status", "value_template": "{{ value_json.state }}",
                                      "payload_available": "online", "payload_not_available": "offline"}]
        assert c["state_topic"] in (f"edge/{device_id}/telemetry", f"edge/{device_id}/metrics")
    uids = [c["unique_id"] for c in found.values()]
    entity_ids = [c["default_entity_id"] for c in found.values()]
    assert len(set(uids)) == len(set(entity_ids)) == len(FIELDS)


def test_a_dotted_id_gets_working_entities_distinct_from_its_lookalike() -> None:
    """``greenhouse.1`` gave no entities before (a '.' in the topic); now it does, and it does not
    collide with a device called ``greenhouse_1``."""
    dotted, underscored = configs("greenhouse.1"), configs("greenhouse_1")
    assert all("greenhouse.1" not in t for t in dotted)
    assert not set(dotted) & set(underscored)
    for key in ("unique_id", "default_entity_id"):
        assert not {c[key] for c in dotted.values()} & {c[key] for c in underscored.values()}


def test_ids_home_assistant_accepted_before_keep_their_unique_ids_and_old_topics_are_cleared() -> None:
    """An upgrade keeps existing entities: same unique_id and the default entity id Home Assistant
    derived from the old object_id. The configs moved from ``<node>_<field>`` to ``<node>/<field>``
    (an ACL can grant that to one device); the old retained configs are cleared first."""
    msgs = discovery_messages("svc-1", prefix="homeassistant", name=None, model_name="plants")
    found = configs("svc-1")
    assert set(found) == {f"homeassistant/sensor/svc-1/{f}/config" for f in FIELDS}
    label = found["homeassistant/sensor/svc-1/label/config"]
    assert label["unique_id"] == "edge_svc_1_label" and label["default_entity_id"] == "sensor.edge_svc_1_label"
    clears = [t for t, p in msgs if p == b""]
    assert clears == [f"homeassistant/sensor/svc-1_{f}/config" for f in FIELDS]
    assert [t for t, _ in msgs[:len(clears)]] == clears, "cleared before the new configs are sent"
    for topic in clears:
        m = HA_TOPIC.fullmatch(topic.partition("/")[2])
        assert m is not None and m["node_id"] is None  # the old layout, as Home Assistant parsed it


@pytest.mark.parametrize("device_id", ["greenhouse.1", "svc-1"])
def test_every_config_of_a_device_falls_under_its_acl_filter(device_id: str) -> None:
    pattern = discovery_topic_filter(device_id).replace("+", "[^/]+")
    assert all(re.fullmatch(pattern, t) for t in configs(device_id))
    assert not any(re.fullmatch(pattern, t) for t in configs("other"))


def test_origin_carries_the_support_url_and_the_templates_render() -> None:
    found = configs("greenhouse.1", name="Greenhouse", support_url="https://example.org/edge-runtime")
    env = jinja2.Environment()
    record = {"ts": "2026-01-01T00:00:00Z", "frame": 3, "top_k": [{"label": "tomato", "score": 0.91}],
              "path": "local", "route": "offline-mode", "model": {"name": "plants", "version": 4}, "fps": 12.5}
    envelope = {"schema": 1, "device_id": "greenhouse.1", "seq": 1, "records": [record]}
    states = {}
    for c in found.values():
        assert c["origin"] == {"name": "edge-runtime", "sw_version": __version__,
                               "support_url": "https://example.org/edge-runtime"}
        assert c["device"]["name"] == "Greenhouse"
        states[c["unique_id"].rsplit("_", 1)[-1]] = env.from_string(c["value_template"]).render(value_json=envelope)
    assert states["label"] == "tomato" and float(states["score"]) == 91.0 and states["fps"] == "12.5"
