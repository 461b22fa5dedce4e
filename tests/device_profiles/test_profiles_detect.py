"""Detection from copies of real boards' /proc, Android markers, fallbacks and the 32-bit case."""

from __future__ import annotations

import json
import platform

import pytest

import device_profiles._detect as detect_module
from device_profiles import (
    Detection,
    DetectionError,
    decode_rpi_revision,
    detect,
    load_profile,
    normalize_machine,
    profile_for,
    profile_names,
)

# fixture, expected profile, evidence that must be present exactly
BOARDS = [
    (
        "rpi-zero-2w",
        "rpi-zero-2w",
        {
            "device_tree_model": "Raspberry Pi Zero 2 W Rev 1.0",
            "cpuinfo_model": "Raspberry Pi Zero 2 W Rev 1.0",
            "cpuinfo_revision": "902120",
            "rpi_revision": "Raspberry Pi Zero 2 W rev 1.0, BCM2837, 512 MB",
            "cpu_part": "0xd03 (Cortex-A53)",
            "MemTotal": "439852 kB",
            "memory_mb": "429",
            "machine": "aarch64",
            "machine_source": "cpuinfo",
        },
    ),
    (
        "rpi-3b-plus",
        "rpi-3b-plus",
        {
            "device_tree_model": "Raspberry Pi 3 Model B Plus Rev 1.3",
            "rpi_revision": "Raspberry Pi 3 Model B Plus rev 1.3, BCM2837, 1024 MB",
            "cpu_part": "0xd03 (Cortex-A53)",
            "machine": "aarch64",
        },
    ),
    (
        "rpi-4b",
        "rpi-4b",
        {
            "device_tree_model": "Raspberry Pi 4 Model B Rev 1.4",
            "cpuinfo_revision": "c03114",
            "rpi_revision": "Raspberry Pi 4 Model B rev 1.4, BCM2711, 4096 MB",
            "cpu_part": "0xd08 (Cortex-A72)",
            "cpu_cores": "4",
            "MemTotal": "3884356 kB",
            "memory_mb": "3793",
            "machine": "aarch64",
        },
    ),
    (
        "rpi-5",
        "rpi-5",
        {
            "device_tree_model": "Raspberry Pi 5 Model B Rev 1.0",
            "rpi_revision": "Raspberry Pi 5 rev 1.0, BCM2712, 8192 MB",
            "cpu_part": "0xd0b (Cortex-A76)",
            "machine": "aarch64",
        },
    ),
    (
        "jetson-nano",
        "jetson-nano",
        {
            "device_tree_model": "NVIDIA Jetson Nano Developer Kit",
            "cpu_part": "0xd07 (Cortex-A57)",
            "cpu_model_name": "ARMv8 Processor rev 1 (v8l)",
            "MemTotal": "4059116 kB",
            "machine": "aarch64",
        },
    ),
    (
        "android-pixel-7",
        "android-arm64-termux",
        {
            "android_device": "Google Pixel 7, Android 14",
            "cpu_part": "0xd05 (Cortex-A55), 0xd41 (Cortex-A78), 0xd44 (Cortex-X1)",
            "cpu_cores": "8",
            "machine": "aarch64",
        },
    ),
    (
        "intel-x86_64",
        "generic-x86_64",
        {
            "cpu_model_name": "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz",
            "cpu_cores": "8",
            "MemTotal": "16235148 kB",
            "machine": "x86_64",
        },
    ),
    # A board without a profile of its own: the aarch64 fallback, not the Jetson Nano.
    (
        "jetson-orin-nano",
        "generic-aarch64",
        {"device_tree_model": "NVIDIA Jetson Orin Nano Developer Kit", "cpu_part": "0xd42 (Cortex-A78AE)"},
    ),
    # 32-bit kernel and userland on a Pi 4: the 32-bit profile (no onnxruntime wheel).
    (
        "rpi-4b-armhf",
        "rpi-4b-armv7",
        {
            "cpuinfo_hardware": "BCM2835",
            "rpi_revision": "Raspberry Pi 4 Model B rev 1.4, BCM2711, 8192 MB",
            "machine": "armv7l",
            "machine_source": "cpuinfo",
        },
    ),
    # A 32-bit Pi 3B+ has no board profile of its own: the armv7l fallback.
    (
        "rpi-3b-plus-armhf",
        "generic-armv7l",
        {"cpuinfo_hardware": "BCM2835", "cpuinfo_revision": "a020d3", "machine": "armv7l"},
    ),
]


@pytest.mark.parametrize(("fixture", "expected", "evidence"), BOARDS, ids=[b[0] for b in BOARDS])
def test_boards(board, fixture, expected, evidence):
    detection = detect(board(fixture))
    assert detection.profile.name == expected
    for key, value in evidence.items():
        assert detection.evidence.get(key) == value, key
    assert all(isinstance(v, str) for v in detection.evidence.values())
    assert "\0" not in json.dumps(detection.evidence)


def test_match_reasons_say_why(board):
    assert detect(board("rpi-4b")).evidence["matched"] == (
        "board model 'Raspberry Pi 4 Model B Rev 1.4' contains 'Raspberry Pi 4 Model B' (machine aarch64)"
    )
    orin = detect(board("jetson-orin-nano")).evidence["matched"]
    assert (
        orin
        == "no profile for board 'NVIDIA Jetson Orin Nano Developer Kit' on aarch64; fallback for aarch64"
    )
    assert "build.prop" in detect(board("android-pixel-7")).evidence["matched"]


def test_explicit_machine_overrides_cpuinfo(board):
    # A Pi 4 with a 64-bit kernel but a 32-bit userland: uname says aarch64, Python is armv7l.
    detection = detect(board("rpi-4b"), machine="armv7l")
    assert detection.profile.name == "rpi-4b-armv7"
    assert detection.evidence["machine_source"] == "argument"
    assert "onnxruntime" not in detection.profile.backends


def test_32_bit_userland_on_64_bit_kernel(board):
    detection = detect(board("rpi-4b"), machine="aarch64", userland_bits=32)
    assert detection.profile.name == "rpi-4b-armv7"
    assert detection.evidence["userland"] == "32-bit Python on a 64-bit (aarch64) kernel"
    assert detection.evidence["machine"] == "armv7l"
    assert detect(board("rpi-4b"), machine="aarch64", userland_bits=64).profile.name == "rpi-4b"


def test_this_machine_uses_the_interpreter_width(monkeypatch):
    # Detecting "/" on a 32-bit Python running on an aarch64 kernel (Bookworm 32-bit on a Pi 4).
    monkeypatch.setattr(detect_module.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(detect_module.platform, "system", lambda: "Linux")
    monkeypatch.setattr(detect_module, "_interpreter_bits", lambda: 32)
    detection = detect("/", environ={})
    assert detection.evidence["machine"] == "armv7l"
    assert detection.evidence["machine_source"] == "platform.machine()"
    assert detection.profile.arch == "armv7l"


@pytest.mark.parametrize(("given", "expected"), [("arm64", "generic-aarch64"), ("AMD64", "generic-x86_64")])
def test_machine_spellings_are_normalised(board, given, expected):
    # Using the x86 laptop's files with another machine string: only the machine decides here.
    assert detect(board("intel-x86_64"), machine=given).profile.name == expected


def test_normalize_machine():
    assert normalize_machine("arm64") == "aarch64"
    assert normalize_machine("armv8l") == "armv7l"
    assert normalize_machine(" x86_64 ") == "x86_64"
    assert normalize_machine("riscv64") == "riscv64"


def test_pi_profiles_are_linux_only(board):
    assert detect(board("rpi-4b"), system="Darwin").profile.name == "generic-aarch64"


@pytest.mark.parametrize("machine", ["riscv64", "armv6l", "i686"])
def test_no_profile_for_other_architectures(board, machine):
    with pytest.raises(DetectionError) as info:
        detect(board("rpi-4b"), machine=machine)
    message = str(info.value)
    assert f"machine {machine}" in message
    assert all(name in message for name in profile_names())


def test_pi_zero_w_armv6_from_cpuinfo(board_copy):
    root = board_copy("rpi-3b-plus-armhf")
    cpuinfo = (
        (root / "proc" / "cpuinfo")
        .read_text()
        .replace("ARMv7 Processor rev 4 (v7l)", "ARMv6-compatible processor rev 7 (v6l)")
    )
    (root / "proc" / "cpuinfo").write_text(cpuinfo)
    with pytest.raises(DetectionError, match="machine armv6l"):
        detect(root)


def test_copied_root_without_cpuinfo_needs_a_machine(tmp_path):
    with pytest.raises(DetectionError, match="--machine"):
        detect(tmp_path)
    detection = detect(tmp_path, machine="x86_64")
    assert detection.profile.name == "generic-x86_64"
    assert detection.memory_mb is None
    assert detection.memory_ceiling_mb == detection.profile.memory_ceiling_mb


def test_android_from_termux_environment(board_copy):
    root = board_copy("android-pixel-7")
    (root / "system" / "build.prop").unlink()
    assert detect(root).profile.name == "generic-aarch64"
    termux = {"PREFIX": "/data/data/com.termux/files/usr", "ANDROID_ROOT": "/system"}
    detection = detect(root, environ=termux)
    assert detection.profile.name == "android-arm64-termux"
    assert detection.evidence["android"] == "ANDROID_ROOT=/system; PREFIX=/data/data/com.termux/files/usr"


def test_android_from_platform_system(board_copy):
    root = board_copy("android-pixel-7")
    (root / "system" / "build.prop").unlink()
    # Python 3.13+ reports "Android" itself.
    detection = detect(root, system="Android")
    assert detection.profile.name == "android-arm64-termux"
    assert "platform.system()=Android" in detection.evidence["android"]


def test_android_wins_over_the_board_model(board):
    # LineageOS on a Pi 4: Android decides wheels, camera and process model.
    detection = detect(board("rpi-4b"), environ={"ANDROID_ROOT": "/system", "ANDROID_DATA": "/data"})
    assert detection.profile.name == "android-arm64-termux"


def test_environment_is_ignored_for_other_roots_unless_given(board, monkeypatch):
    monkeypatch.setenv("PREFIX", "/data/data/com.termux/files/usr")
    assert detect(board("rpi-4b")).profile.name == "rpi-4b"


def test_pi_in_a_container_without_device_tree(board_copy):
    root = board_copy("rpi-5")
    (root / "proc" / "device-tree" / "model").unlink()
    detection = detect(root)
    assert detection.profile.name == "rpi-5"
    assert detection.evidence["model_source"] == "cpuinfo Model"
    assert "device_tree_model" not in detection.evidence


def test_pi_with_only_a_revision_code(board_copy):
    root = board_copy("rpi-zero-2w")
    (root / "proc" / "device-tree" / "model").unlink()
    cpuinfo = root / "proc" / "cpuinfo"
    cpuinfo.write_text(
        "".join(line for line in cpuinfo.read_text().splitlines(True) if not line.startswith("Model"))
    )
    detection = detect(root)
    assert detection.profile.name == "rpi-zero-2w"
    assert detection.evidence["model_source"] == "cpuinfo Revision"


def test_device_tree_under_sys_firmware(board_copy):
    root = board_copy("jetson-nano")
    (root / "proc" / "device-tree" / "model").unlink()
    assert detect(root).profile.name == "generic-aarch64"
    dt = root / "sys" / "firmware" / "devicetree" / "base"
    dt.mkdir(parents=True)
    (dt / "model").write_bytes(b"NVIDIA Jetson Nano Developer Kit\0")
    assert detect(root).profile.name == "jetson-nano"


def test_memory_ceiling_follows_the_detected_ram(board_copy, board):
    # The typical 4 GB Pi 4 keeps the profile's ceiling ...
    assert detect(board("rpi-4b")).memory_ceiling_mb == 512
    # ... a 1 GB one (MemTotal as such a board reports it) gets half of its RAM.
    root = board_copy("rpi-4b")
    meminfo = root / "proc" / "meminfo"
    meminfo.write_text(meminfo.read_text().replace("3884356 kB", " 948304 kB", 1))
    detection = detect(root)
    assert detection.profile.name == "rpi-4b"
    assert detection.memory_mb == 926
    assert detection.evidence["MemTotal"] == "948304 kB"
    assert detection.memory_ceiling_mb == 463


def test_to_dict_is_json(board):
    data = json.loads(json.dumps(detect(board("rpi-5")).to_dict()))
    assert data["name"] == "rpi-5"
    assert data["memory_mb"] == 8052
    assert data["profile"]["backends"] == ["litert", "onnxruntime", "opencv-dnn"]
    assert data["evidence"]["cpuinfo_revision"] == "d04170"


@pytest.mark.parametrize(
    ("code", "model", "memory", "processor"),
    [
        ("a020d3", "Raspberry Pi 3 Model B Plus", "1024", "BCM2837"),
        ("c03114", "Raspberry Pi 4 Model B", "4096", "BCM2711"),
        ("d03114", "Raspberry Pi 4 Model B", "8192", "BCM2711"),
        ("d04170", "Raspberry Pi 5", "8192", "BCM2712"),
        ("902120", "Raspberry Pi Zero 2 W", "512", "BCM2837"),
        ("c04170", "Raspberry Pi 5", "4096", "BCM2712"),
    ],
)
def test_decode_rpi_revision(code, model, memory, processor):
    decoded = decode_rpi_revision(code)
    assert decoded is not None
    assert (decoded["model"], decoded["memory_mb"], decoded["processor"]) == (model, memory, processor)


@pytest.mark.parametrize("code", ["000e", "0000", "zz", "", "a02fe3"])
def test_decode_rpi_revision_rejects_old_and_unknown_codes(code):
    assert decode_rpi_revision(code) is None


def test_this_machine():
    machine = normalize_machine(platform.machine())
    if machine not in ("aarch64", "armv7l", "x86_64"):
        pytest.skip(f"no profile for {machine}")
    detection = detect(environ={})
    assert isinstance(detection, Detection)
    assert detection.evidence["machine_source"] == "platform.machine()"
    assert detection.profile.arch == detection.evidence["machine"]


def test_profile_for_none_detects_or_obeys_edge_profile(monkeypatch):
    assert profile_for(None, environ={"EDGE_PROFILE": "rpi-5"}) == load_profile("rpi-5")
    monkeypatch.setattr(detect_module.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(detect_module.platform, "system", lambda: "Linux")
    monkeypatch.setattr(detect_module, "_interpreter_bits", lambda: 64)
    monkeypatch.setattr(detect_module, "_read_board_model", lambda root, evidence: None)
    assert profile_for(None, environ={}).name == "generic-x86_64"
    assert profile_for(None, environ={"EDGE_PROFILE": " "}).name == "generic-x86_64"
