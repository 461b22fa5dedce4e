"""Updates from the real cloud registry under the DEFAULT update policy: a release the policy refuses
is not a bad version (said once, not downloaded again at every poll, and installed once the device's
config allows it); a release failing its health check is a bad version for good."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge_device.agent import StateStore, Updater, ensure_adopted, load_config, load_keys, model_options
from edge_device.client import CloudClient
from tests.support.agent import admin, agent_config, register, start_service

DEVICE = "policy-upd-1"


def _updater(cfg: Any, events: list[tuple[str, dict[str, Any]]], running: list[int]) -> Updater:
    store = StateStore(cfg.state_dir)
    keys = load_keys(cfg)
    ensure_adopted(cfg, keys=keys, store=store)
    client = CloudClient(cfg.cloud.url, cfg.cloud_token(), timeout=60)

    def activate(model: Any, pointer: Any) -> None:
        running[0] = model.version
        model.close()

    return Updater(cfg, store, keys, model_options(cfg), client=client,
                   emit=lambda name, **kw: events.append((name, kw)), activate=activate,
                   running=lambda: ("mobilenet_v2", running[0], None))


def test_policy_refusals_from_the_registry_are_not_bad_versions(tmp_path: Path, keys, release) -> None:  # type: ignore[no-untyped-def]
    cloud = start_service(tmp_path, [keys[1]])
    try:
        admin(cloud).publish(release(1), channel="stable")
        token = register(cloud, DEVICE, tmp_path)
        data = agent_config(tmp_path, device_id=DEVICE, bundle=release(1), keys=keys, source=str(tmp_path),
                            cloud={"url": cloud.url, "token_file": str(token)},
                            updates={"enabled": True, "first_poll_s": 3600})
        cfg = load_config(data=data, environ={})
        assert cfg.updates.require_samples and cfg.updates.require_expiry  # the defaults
        events: list[tuple[str, dict[str, Any]]] = []
        running = [1]
        upd = _updater(cfg, events, running)
        store = StateStore(cfg.state_dir)

        admin(cloud).publish(release(2, kind="no-samples"), channel="stable")
        for _ in range(3):  # polls: refused each time, downloaded and said once
            r = upd.check("test")
            assert (r.outcome, r.version, r.reason) == ("refused", 2, "no-samples")
        refusals = [kw for name, kw in events if name == "update_refused"]
        assert len(refusals) == 1 and refusals[0]["policy"] is True
        assert [name for name, _ in events].count("update_started") == 1
        assert store.load().bad_versions == {} and running == [1]

        # the operator relaxes the policy (a new config, as a restart reads it): the same release installs
        relaxed = load_config(data={**data, "updates": {**data["updates"], "require_samples": False}}, environ={})
        r = _updater(relaxed, events, running).check("test")
        assert (r.outcome, r.version) == ("installed", 2) and running == [2]

        # a release failing its health check is a verdict: bad for good, however relaxed the policy
        admin(cloud).publish(release(3, kind="bad-labels"), channel="stable")
        r = _updater(relaxed, events, running).check("test")
        assert (r.outcome, r.reason) == ("refused", "health")
        assert 3 in store.load().bad_versions
        r = _updater(relaxed, events, running).check("test")
        assert (r.outcome, r.reason) == ("refused", "bad-version") and running == [2]
    finally:
        cloud.stop()
