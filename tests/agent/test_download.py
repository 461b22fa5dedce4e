"""Downloads: an interrupted download is resumed, not started over; the size cap is enforced
before anything is downloaded; an unreachable registry is retried without an event storm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edge_device.agent import StateStore, Updater, load_config, resolve_startup
from edge_device.agent._startup import load_keys, model_options
from edge_device.client import CloudClient
from tests.support.agent import IMAGES, admin, agent_config, register, start_service
from tests.support.servers import TcpProxy
from tests.support.service import CloudService


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, keys, release) -> Any:
    tmp = tmp_path_factory.mktemp("download")
    svc = start_service(tmp, [keys[1]])
    admin(svc).publish(release(1), channel="stable")
    admin(svc).publish(release(2, pad_bytes=1_000_000), channel="stable")
    yield svc
    svc.stop()


def make_updater(tmp_path: Path, keys, release, url: str, token: str, **updates: Any) -> tuple[Updater, list]:
    cfg = load_config(data=agent_config(tmp_path, device_id="dl-1", bundle=release(1), keys=keys,
                                        source=str(IMAGES), cloud={"url": url, "token": token},
                                        updates={"enabled": True, **updates}), environ={})
    st = resolve_startup(cfg)
    running = [(st.model.name, st.model.version, st.pointer)]
    st.model.close()
    events: list[tuple[str, dict]] = []

    def activate(model, pointer) -> None:  # type: ignore[no-untyped-def]
        running[0] = (model.name, model.version, pointer)
        model.close()

    upd = Updater(cfg, StateStore(cfg.state_dir), load_keys(cfg), model_options(cfg),
                  client=CloudClient(url, token), emit=lambda name, **kw: events.append((name, kw)),
                  activate=activate, running=lambda: running[0])
    return upd, events


def test_an_interrupted_download_is_resumed(tmp_path: Path, keys, release, cloud: CloudService) -> None:
    token = register(cloud, "dl-1", tmp_path).read_text().strip()
    proxy = TcpProxy(cloud.port)
    try:
        proxy.rate = 4e6  # 4 MB/s: the first attempt's 0.4 s deadline ends mid-download
        upd, events = make_updater(tmp_path, keys, release, proxy.url, token, download_timeout_s=0.4)
        first = upd.check()
        assert first.outcome == "failed" and "download of version 2 failed" in (first.message or "")
        part = upd.store.staging / "mobilenet_v2-v2.tar.gz.part"
        have = part.stat().st_size
        size = release(2, pad_bytes=1_000_000).stat().st_size
        assert 0.1 * size < have < size
        assert [n for n, _ in events] == ["update_started", "update_failed"]
        proxy.rate = None
        before = proxy.bytes_down
        upd.cfg = upd.cfg.model_copy(update={"download_timeout_s": 60.0})
        second = upd.check()
        assert second.outcome == "installed" and second.version == 2, second
        # only the rest was fetched (plus the HTTP answers around it)
        assert proxy.bytes_down - before < size - have + 64_000
        assert upd.store.read_pointer("current").version == 2 and not part.exists()
    finally:
        proxy.close()


def test_size_cap_and_unreachable_registry(tmp_path: Path, keys, release, cloud: CloudService) -> None:
    token = register(cloud, "dl-2", tmp_path).read_text().strip()
    upd, events = make_updater(tmp_path, keys, release, cloud.url, token, max_bundle_bytes=1_000_000)
    r = upd.check()
    assert (r.outcome, r.reason) == ("refused", "too-large") and "more than updates.max_bundle_bytes" in r.message
    assert not list(upd.store.staging.glob("*.part"))  # refused before a byte was downloaded
    assert upd.check().outcome == "refused"
    assert [n for n, _ in events] == ["update_refused"]  # said once
    gone, _ = make_updater(tmp_path / "gone", keys, release, "http://127.0.0.1:9", token)
    assert gone.check().outcome == "unreachable"
    assert gone._next_delay(gone.last_result) <= 5.0  # retried soon, with backoff, not at the next hour
