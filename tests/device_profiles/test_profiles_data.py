"""The shipped TOML profiles: all load, validate and carry realistic, consistent values."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import FrozenInstanceError
from importlib import resources
from pathlib import Path

import pytest

from device_profiles import Profile, list_profiles, load_profile, profile_names, read_profile

DATA = Path(str(resources.files("device_profiles").joinpath("data")))
SHIPPED = sorted(p.stem for p in DATA.glob("*.toml"))

REQUIRED = {
    "rpi-zero-2w",
    "rpi-3b-plus",
    "rpi-4b",
    "rpi-4b-armv7",
    "rpi-5",
    "android-arm64-termux",
    "jetson-nano",
    "generic-aarch64",
    "generic-armv7l",
    "generic-x86_64",
}


def test_required_profiles_are_shipped():
    assert set(SHIPPED) >= REQUIRED
    assert profile_names() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_file_loads_and_validates(name):
    from_file = read_profile(DATA / f"{name}.toml")
    by_name = load_profile(name)
    assert isinstance(by_name, Profile)
    assert by_name == from_file
    assert by_name.name == name
    assert by_name.threads <= by_name.cores
    assert by_name.memory_ceiling_mb < min(by_name.memory_options_mb or (by_name.memory_mb,))
    assert by_name.notes, "every profile carries OS/Python notes"


def test_list_profiles_is_every_file_sorted():
    assert [p.name for p in list_profiles()] == SHIPPED


@pytest.mark.parametrize(
    ("name", "arch", "core", "cores", "mhz", "memory", "options"),
    [
        ("rpi-zero-2w", "aarch64", "Cortex-A53", 4, 1000, 512, ()),
        ("rpi-3b-plus", "aarch64", "Cortex-A53", 4, 1400, 1024, ()),
        ("rpi-4b", "aarch64", "Cortex-A72", 4, 1500, 4096, (1024, 2048, 4096, 8192)),
        ("rpi-4b-armv7", "armv7l", "Cortex-A72", 4, 1500, 4096, (1024, 2048, 4096, 8192)),
        ("rpi-5", "aarch64", "Cortex-A76", 4, 2400, 4096, (2048, 4096, 8192, 16384)),
        ("jetson-nano", "aarch64", "Cortex-A57", 4, 1479, 4096, (2048, 4096)),
    ],
)
def test_board_hardware_values(name, arch, core, cores, mhz, memory, options):
    p = load_profile(name)
    assert (p.arch, p.cores, p.cpu_mhz, p.memory_mb, p.memory_options_mb) == (
        arch,
        cores,
        mhz,
        memory,
        options,
    )
    assert core in p.cpu


def test_raspberry_pis_use_picamera2_from_a_system_site_packages_venv():
    for name in ("rpi-zero-2w", "rpi-3b-plus", "rpi-4b", "rpi-4b-armv7", "rpi-5"):
        p = load_profile(name)
        assert p.camera == "picamera2"
        assert p.system_python == "3.11" and "Bookworm" in p.os
        assert any("--system-site-packages" in note for note in p.notes), name


def test_32_bit_profiles_never_ask_for_onnxruntime():
    # onnxruntime publishes no 32-bit ARM wheel: litert first, OpenCV DNN for ONNX.
    armv7 = [p for p in list_profiles() if p.arch == "armv7l"]
    assert {p.name for p in armv7} >= {"rpi-4b-armv7", "generic-armv7l"}
    for p in armv7:
        assert p.backends == ("litert", "opencv-dnn")


def test_other_device_facts():
    termux = load_profile("android-arm64-termux")
    assert (termux.arch, termux.camera) == ("aarch64", "android")
    assert termux.detect is not None and termux.detect.android is True
    assert load_profile("jetson-nano").camera == "usb"
    assert load_profile("jetson-nano").system_python == "3.6"
    assert load_profile("generic-x86_64").backends[0] == "onnxruntime"
    # Budgets follow the hardware: a faster board gets a tighter budget.
    budgets = [load_profile(n).latency_budget_ms for n in ("rpi-5", "rpi-4b", "rpi-3b-plus", "rpi-zero-2w")]
    assert budgets == sorted(budgets)


def test_exactly_one_fallback_per_architecture():
    fallbacks: dict[str, list[str]] = {}
    for p in list_profiles():
        if p.detect is not None and p.detect.fallback:
            fallbacks.setdefault(p.arch, []).append(p.name)
    assert fallbacks == {
        "aarch64": ["generic-aarch64"],
        "armv7l": ["generic-armv7l"],
        "x86_64": ["generic-x86_64"],
    }


def test_no_two_profiles_of_one_architecture_claim_the_same_board():
    seen: dict[tuple[str, str], str] = {}
    for p in list_profiles():
        for model in p.detect.models if p.detect else ():
            key = (p.arch, model.casefold())
            assert key not in seen, f"{p.name} and {seen[key]} both claim {model!r} on {p.arch}"
            seen[key] = p.name


def test_profiles_are_immutable():
    p = load_profile("rpi-4b")
    with pytest.raises(FrozenInstanceError):
        p.threads = 1  # type: ignore[misc]
    assert load_profile("rpi-4b").threads == 4


def test_import_is_light():
    # Devices import this on every start: the standard library only (no pydantic: ~50 ms and 8 MiB).
    code = (
        "import sys, device_profiles\n"
        "device_profiles.list_profiles()\n"
        "heavy = [m for m in ('click', 'numpy', 'edge_runtime', 'tomli', 'pydantic', 'pydantic_core')\n"
        "         if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root, timeout=60
    )
    assert out.stdout.strip() == ""
