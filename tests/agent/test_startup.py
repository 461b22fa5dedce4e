"""Startup: the configured bundle is adopted on the first start; then ``current``, else
``previous``, else the configured bundle, each verified before it is loaded, each fallback said."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge_device.agent import (
    AgentRunningError,
    Pointer,
    StateStore,
    load_config,
    resolve_startup,
    rollback_pointers,
    verify_startup,
)
from edge_runtime import load_image
from tests.support.agent import IMAGES, agent_config


def config(tmp_path: Path, keys, bundle: Path, **kw):
    return load_config(data=agent_config(tmp_path, device_id="dev-start", bundle=bundle, keys=keys,
                                         source=str(IMAGES), **kw), environ={})


def install_v2(cfg, release) -> StateStore:
    """v1 adopted and v2 installed beside it, as an update leaves them (without the network)."""
    from edge_device.agent import Updater
    from edge_device.agent._startup import load_keys, model_options

    st = resolve_startup(cfg)
    running = (st.model.name, st.model.version, st.pointer)
    st.model.close()
    store = StateStore(cfg.state_dir)
    upd = Updater(cfg, store, load_keys(cfg), model_options(cfg), client=None, emit=lambda *a, **k: None,
                  activate=lambda m, p: m.close(), running=lambda: running)
    upd.install(release(2))
    return store


def test_first_start_adopts_the_configured_bundle(tmp_path: Path, keys, release) -> None:
    cfg = config(tmp_path, keys, release(1))
    st = resolve_startup(cfg)
    try:
        assert st.adopted and st.chosen == "current" and st.fallbacks == []
        assert st.model.version == 1
        assert st.model.predict(load_image(IMAGES / "cat.png")).label == "Egyptian cat"
    finally:
        st.model.close()
    store = StateStore(cfg.state_dir)
    assert store.read_pointer("current") == Pointer("v1", 1)
    assert (cfg.state_dir / "models" / "v1" / "manifest.sig").is_file()
    state = store.load()
    assert state.highest_accepted == 1 and state.model_name == "mobilenet_v2" and state.running
    # a second start uses models/v1, not the configured archive
    st2 = resolve_startup(cfg)
    assert not st2.adopted and st2.chosen == "current" and Path(st2.bundle.root) == cfg.state_dir / "models" / "v1"
    st2.model.close()


def test_falls_back_current_then_previous_then_config(tmp_path: Path, keys, release) -> None:
    cfg = config(tmp_path, keys, release(1))
    store = install_v2(cfg, release)
    assert store.read_pointer("current") == Pointer("v2", 2)
    assert store.read_pointer("previous") == Pointer("v1", 1)
    # bit rot in the current model: its hash no longer matches, so it is passed over for previous
    model_file = cfg.state_dir / "models" / "v2" / "model.tflite"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    report = verify_startup(cfg)
    assert report["chosen"] == "previous" and report["version"] == 1
    assert report["fallbacks"][0]["candidate"] == "current" and "sha256" in report["fallbacks"][0]["error"]
    # previous gone as well: the configured bundle, verified
    shutil.rmtree(cfg.state_dir / "models" / "v1")
    report = verify_startup(cfg)
    assert report["chosen"] == "config" and report["version"] == 1
    assert [f["candidate"] for f in report["fallbacks"]] == ["current", "previous"]
    assert "models/v1 is missing" in report["fallbacks"][1]["error"]
    # the read-only check changed nothing
    assert store.read_pointer("current") == Pointer("v2", 2)


def test_a_forged_current_is_never_loaded(tmp_path: Path, keys, other_keys, release) -> None:
    cfg = config(tmp_path, keys, release(1))
    store = install_v2(cfg, release)
    # somebody re-signs models/v2 with a key the device does not trust
    from edge_runtime import load_private_key, sign_bundle

    sign_bundle(cfg.state_dir / "models" / "v2", load_private_key(other_keys[0]))
    st = resolve_startup(cfg)
    try:
        assert st.chosen == "previous" and st.model.version == 1
        assert "signature does not match the trusted key" in st.fallbacks[0].error
    finally:
        st.model.close()
    # a corrupt pointer file is a fallback too, not a crash
    (cfg.state_dir / "current").write_text("{not json")
    report = verify_startup(cfg)
    assert report["chosen"] == "previous" and "current" in report["fallbacks"][0]["error"]
    assert store.running_agent_pid() is None


def test_crash_loop_of_a_version_on_probation_rolls_it_back_at_start(tmp_path: Path, keys, release) -> None:
    cfg = config(tmp_path, keys, release(1), updates={"enabled": False, "max_trial_starts": 2})
    store = install_v2(cfg, release)
    assert store.load().trial == 2
    versions = []
    for _ in range(4):  # each start "crashes": running stays set, as after a SIGKILL or a segfault
        st = resolve_startup(cfg)
        versions.append(st.model.version)
        if st.rolled_back:
            rolled = st.rolled_back
        st.model.close()
    assert versions == [2, 2, 1, 1]
    assert rolled == {"from": 2, "to": 1, "reason": "did not run cleanly through 2 starts on probation"}
    state = store.load()
    assert 2 in state.bad_versions and state.trial is None and state.highest_accepted == 2


def test_rollback_pointers_and_the_agent_lock(tmp_path: Path, keys, release) -> None:
    cfg = config(tmp_path, keys, release(1))
    store = install_v2(cfg, release)
    left, back = rollback_pointers(store, "by hand: test")
    assert (left.version, back.version) == (2, 1)
    assert store.read_pointer("current") == Pointer("v1", 1) and store.read_pointer("previous") is None
    assert json.loads((cfg.state_dir / "state.json").read_text())["bad_versions"] == {"2": "by hand: test"}
    with pytest.raises(Exception, match="nothing to roll back to"):
        rollback_pointers(store, "again")
    store.acquire_agent_lock()
    try:
        other = StateStore(cfg.state_dir)
        with pytest.raises(AgentRunningError, match="another agent"):
            other.acquire_agent_lock()
        assert other.running_agent_pid() is not None
    finally:
        store.release_agent_lock()
    assert StateStore(cfg.state_dir).running_agent_pid() is None


def test_leftovers_are_collected_but_never_what_a_pointer_might_name(tmp_path: Path, keys, release) -> None:
    cfg = config(tmp_path, keys, release(1))
    store = install_v2(cfg, release)
    shutil.copytree(store.model_dir(2), store.model_dir(3))  # an install a kill left before its switch
    (store.staging / "v3.work").mkdir()
    part = store.staging / "mobilenet_v2-v4.tar.gz.part"
    part.write_bytes(b"half a download")
    removed = store.collect_garbage()
    assert sorted(removed) == ["models/v3", "staging/v3.work"]
    assert part.exists()  # resumed by the next attempt
    assert sorted(p.name for p in store.models.iterdir()) == ["v1", "v2"]
    shutil.copytree(store.model_dir(2), store.model_dir(3))
    (cfg.state_dir / "previous").write_text("garbage")  # which version did it name? unknown: keep all
    assert store.collect_garbage() == []
    assert sorted(p.name for p in store.models.iterdir()) == ["v1", "v2", "v3"]
