"""Validation of profile files: every broken file gives one line naming the file and the key."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from device_profiles import (
    ProfileError,
    ProfileFormatError,
    ProfileNotFoundError,
    load_profile,
    profile_for,
    profile_names,
    read_profile,
)

GOOD = resources.files("device_profiles").joinpath("data", "rpi-4b.toml").read_text(encoding="utf-8")


def write(tmp_path: Path, text: str, name: str = "my-board") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def broken(tmp_path: Path, text: str, name: str = "my-board") -> tuple[Path, str]:
    path = write(tmp_path, text, name)
    with pytest.raises(ProfileFormatError) as info:
        read_profile(path)
    message = str(info.value)
    assert "\n" not in message, "the CLI prints errors on one line"
    assert str(path) in message
    return path, message


def test_a_copied_profile_reads_under_its_file_name(tmp_path):
    profile = read_profile(write(tmp_path, GOOD, "lab-pi"))
    assert profile.name == "lab-pi"
    assert profile.backends == load_profile("rpi-4b").backends


def test_toml_syntax_error_names_file_and_line(tmp_path):
    _, message = broken(tmp_path, GOOD.replace("threads = 4", "threads = "))
    assert "not valid TOML" in message and "line" in message


def test_unknown_key_is_named_with_the_known_ones(tmp_path):
    _, message = broken(tmp_path, GOOD.replace("threads = 4", "threads = 4\ngpu = 'videocore'"))
    assert "gpu: unknown key" in message and "latency_budget_ms" in message


def test_unknown_key_in_detect_table(tmp_path):
    _, message = broken(tmp_path, GOOD.replace("models = [", "modles = ["))
    assert "detect.modles: unknown key" in message
    assert "known keys: systems, models, android, fallback" in message


def test_wrong_type_names_the_key(tmp_path):
    _, message = broken(tmp_path, GOOD.replace("threads = 4", 'threads = "four"'))
    assert message.endswith(
        "threads: Input should be a valid integer, unable to parse string as an integer (got 'four')"
    )


def test_unknown_backend_names_the_list_position(tmp_path):
    # Profiles cannot see the runtime's backend registry (they sit below it); the runtime refuses the
    # name when it reads the profile, before loading anything.
    from edge_runtime import BackendError
    from edge_runtime._model import resolve_settings

    text = GOOD.replace(
        'backends = ["litert", "onnxruntime", "opencv-dnn"]', 'backends = ["litert", "tensorrt"]'
    )
    profile = read_profile(write(tmp_path, text, "my-board"))
    with pytest.raises(BackendError) as info:
        resolve_settings(profile)
    message = str(info.value)
    assert "backends[1]:" in message and "'onnxruntime'" in message and "tensorrt" in message


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            'quantization = "int8"',
            'quantization = "int4"',
            "quantization: Input should be 'int8', 'fp16', 'dynamic' or",
        ),
        (
            'camera = "picamera2"',
            'camera = "csi"',
            "camera: Input should be 'picamera2', 'usb', 'android' or 'none'",
        ),
        ('arch = "aarch64"', 'arch = "arm64"', "arch: Input should be 'aarch64', 'armv7l' or 'x86_64'"),
        ("threads = 4", "threads = 8", "threads: threads (8) must not exceed cores (4)"),
        ("threads = 4", "threads = 0", "threads: Input should be greater than or equal to 1"),
        (
            "memory_ceiling_mb = 512",
            "memory_ceiling_mb = 1024",
            "memory_ceiling_mb: memory_ceiling_mb (1024) must be",
        ),
        ("memory_mb = 4096", "memory_mb = 3072", "memory_options_mb: memory_mb (3072) must be one of"),
        (
            "latency_budget_ms = 100",
            "latency_budget_ms = -5",
            "latency_budget_ms: Input should be greater than 0",
        ),
        (
            'backends = ["litert", "onnxruntime", "opencv-dnn"]',
            'backends = ["litert", "litert"]',
            "backends: backends must not repeat",
        ),
        ("backends = [", "backends = [] #", "backends: Tuple should have at least 1 item"),
        ('system_python = "3.11"', 'system_python = "3"', "system_python: String should match pattern"),
        (
            "android = false",
            "android = false\nfallback = true",
            "detect.fallback: a fallback profile matches",
        ),
        (
            'models = ["Raspberry',
            'models = ["", "Raspberry',
            "detect.models: model strings must not be empty",
        ),
    ],
)
def test_invalid_values_name_the_key(tmp_path, old, new, expected):
    assert old in GOOD
    _, message = broken(tmp_path, GOOD.replace(old, new, 1))
    assert expected in message


def test_missing_key_is_named(tmp_path):
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith("camera ="))
    _, message = broken(tmp_path, text)
    assert "camera: required key is missing" in message


def test_every_bad_key_is_reported_at_once(tmp_path):
    text = GOOD.replace("threads = 4", "threads = 0").replace('camera = "picamera2"', 'camera = "csi"')
    _, message = broken(tmp_path, text)
    assert "threads:" in message and "camera:" in message and "; " in message


def test_name_in_the_file_must_match_the_file_name(tmp_path):
    _, message = broken(tmp_path, 'name = "rpi-4b"\n' + GOOD, name="lab-pi")
    assert "name: 'rpi-4b' differs from the file name 'lab-pi'" in message


def test_file_name_must_be_a_valid_profile_name(tmp_path):
    _, message = broken(tmp_path, GOOD, name="My Board")
    assert "name: 'My Board' (the file name) must be" in message


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.toml"
    path.write_bytes(GOOD.replace("°C", "\xb0C").encode("latin-1"))
    with pytest.raises(ProfileFormatError, match=r"latin\.toml: not UTF-8 text"):
        read_profile(path)


def test_missing_file(tmp_path):
    with pytest.raises(ProfileFormatError, match=r"nothere\.toml: cannot read profile file"):
        read_profile(tmp_path / "nothere.toml")


def test_unknown_name_lists_the_known_profiles():
    with pytest.raises(ProfileNotFoundError) as info:
        load_profile("rpi4")
    message = str(info.value)
    assert message.startswith("unknown device profile 'rpi4' (did you mean 'rpi-4b'?); known profiles: ")
    for name in profile_names():
        assert name in message
    assert isinstance(info.value, ProfileError)


@pytest.mark.parametrize("name", ["../data/rpi-4b", "data/rpi-4b", "rpi-4b.toml", "", "RPI-4B"])
def test_only_exact_shipped_names_load(name):
    with pytest.raises(ProfileNotFoundError):
        load_profile(name)


def test_profile_for_resolves_names_and_files(tmp_path):
    assert profile_for("jetson-nano").name == "jetson-nano"
    path = write(tmp_path, GOOD.replace("threads = 4", "threads = 2"), "lab-pi")
    assert profile_for(path).threads == 2
    assert profile_for(str(path)).name == "lab-pi"
    with pytest.raises(ProfileNotFoundError):
        profile_for("no-such-board")
