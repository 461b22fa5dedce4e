"""The package data the wheel carries, the agent unit's contract, and the per-profile install plans."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from device_profiles import list_profiles, load_profile
from edge_deploy import agent_unit, build_wheel, install_plan, install_script

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "edge_deploy/data"
PACKAGES = ("cloud_sync", "converters", "device_profiles", "edge_cli", "edge_deploy", "edge_device", "edge_runtime")


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> dict[str, bytes]:
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"), root=ROOT)
    with zipfile.ZipFile(wheel) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def test_wheel_carries_the_installer_and_the_unit(wheel_files):
    for name in ("install-on-pi.sh", "edge-agent.service"):
        assert wheel_files[f"edge_deploy/data/{name}"] == (DATA / name).read_bytes(), name


def test_wheel_carries_the_dashboard_and_the_profiles(wheel_files):
    # `edge cloud serve` mounts this directory at /static and serves index.html at /: without it an
    # installed service dies at start-up.
    static = ROOT / "cloud_sync/service/static"
    expected = {f"cloud_sync/service/static/{p.relative_to(static)}" for p in static.rglob("*") if p.is_file()}
    assert "cloud_sync/service/static/index.html" in expected
    assert expected <= set(wheel_files)
    profiles = {f"device_profiles/data/{p.name}" for p in (ROOT / "device_profiles/data").glob("*.toml")}
    assert profiles and profiles <= set(wheel_files)
    # Nothing of the checkout beyond the packages (tests, scripts, the venv) leaks into the wheel.
    tops = {name.split("/", 1)[0] for name in wheel_files if not name.startswith("edge_runtime-")}
    assert tops == set(PACKAGES)


def test_wheel_carries_every_file_of_the_packages(wheel_files):
    # Any file in a package folder is there to be read at run time (templates, migrations, data):
    # one that pyproject.toml's package-data forgets works from the checkout and fails once installed.
    files = {path.relative_to(ROOT).as_posix() for pkg in PACKAGES for path in (ROOT / pkg).rglob("*")
             if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"}
    assert "cloud_sync/service/static/index.html" in files
    assert sorted(files - set(wheel_files)) == []


def test_the_package_reads_its_data_files():
    assert install_script() == (DATA / "install-on-pi.sh").read_text()
    assert agent_unit() == (DATA / "edge-agent.service").read_text()
    # The README's paths still lead to the same files.
    assert (ROOT / "scripts/install-on-pi.sh").resolve() == DATA / "install-on-pi.sh"
    subprocess.run(["bash", "-n", str(DATA / "install-on-pi.sh")], check=True)
    # install-on-pi.sh writes the unit from the package it installed, through this public name.
    assert "from edge_deploy import agent_unit; sys.stdout.write(agent_unit())" in install_script()


def _unit_settings(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def test_agent_unit_follows_the_contract(tmp_path):
    unit = _unit_settings(agent_unit())
    assert unit["Type"] == "notify"
    assert unit["ExecStart"] == "/opt/edge/venv/bin/edge agent --config /etc/edge/agent.toml"
    assert unit["Restart"] == "always"
    assert int(unit["WatchdogSec"]) > 0
    assert (unit["User"], unit["Group"]) == ("edge", "edge")
    assert unit["StateDirectory"] == "edge"
    assert unit["WantedBy"] == "multi-user.target"
    # systemd's own parser accepts it; the only complaint allowed is the venv missing on this machine.
    path = tmp_path / "edge-agent.service"
    path.write_text(agent_unit())
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in proc.stderr.splitlines() if "/opt/edge/venv/bin/edge" not in line]
    assert problems == []


@pytest.mark.parametrize(
    ("profile", "extras", "apt", "optional"),
    [
        ("rpi-4b", ("tflite", "onnx", "camera", "device"), ("python3-picamera2",), ()),
        ("rpi-4b-armv7", ("camera", "device"), ("python3-picamera2",), ("tflite-runtime",)),
        ("generic-x86_64", ("tflite", "onnx", "camera", "device"), (), ()),
    ],
)
def test_install_plan_follows_the_profile(profile, extras, apt, optional):
    plan = install_plan(load_profile(profile))
    # Which extras, not their order: pip installs `.[a,b]` the same either way.
    assert (sorted(plan.extras), plan.apt, plan.optional_pip) == (sorted(extras), apt, optional)
    assert plan.shell() == (f"profile={profile}\nextras={','.join(plan.extras)}\napt={','.join(apt)}\n"
                            f"optional_pip={','.join(optional)}\n")


def test_every_shipped_profile_gets_extras_that_exist():
    import tomllib

    known = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for profile in list_profiles():
        plan = install_plan(profile)
        assert "device" in plan.extras and set(plan.extras) <= known, profile.name
        if profile.camera == "picamera2":
            assert plan.apt == ("python3-picamera2",)


def test_importing_edge_runtime_does_not_load_deploy():
    code = "import sys, edge_runtime; print(any(m.startswith('edge_deploy') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
