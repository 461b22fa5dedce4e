"""A bundle is on disk before a pointer can name it: install_dir fsyncs every file and folder of the
extracted bundle before the rename (a power cut, unlike a process kill, loses unsynced pages)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge_device.agent import StateStore


def test_every_file_of_an_installed_bundle_is_synced_before_the_rename(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore(tmp_path / "state")
    store.ensure()
    src = tmp_path / "staging" / "b"
    (src / "samples").mkdir(parents=True)
    for name in ("manifest.json", "model.tflite", "samples/cat.png"):
        (src / name).write_bytes(b"x")
    synced: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    renamed_after: list[int] = []

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(a: object, b: object) -> None:
        renamed_after.append(len(synced))
        real_replace(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = store.install_dir(src, 2)
    assert (target / "model.tflite").read_bytes() == b"x"
    before_rename = synced[:renamed_after[0]]
    for name in ("manifest.json", "model.tflite", "samples/cat.png", "samples", ""):
        assert str(src / name).rstrip("/") in before_rename, (name, before_rename)
