"""The copies the wheel carries, the agent unit's contract, and the per-profile install plans."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from device_profiles import list_profiles, load_profile
from edge_deploy import AGENT_UNIT, INSTALL_SCRIPT, install_plan

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_copies_match_scripts():
    hint = "run: python -m tests.deploy.sync_assets"
    assert (ROOT / "scripts/install-on-pi.sh").read_text() == INSTALL_SCRIPT, hint
    assert (ROOT / "scripts/edge-agent.service").read_text() == AGENT_UNIT, hint
    subprocess.run(["bash", "-n", str(ROOT / "scripts/install-on-pi.sh")], check=True)


def _unit_settings(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            out[key] = value
    return out


def test_agent_unit_follows_the_contract(tmp_path):
    unit = _unit_settings(AGENT_UNIT)
    assert unit["Type"] == "notify"
    assert unit["ExecStart"] == "/opt/edge/venv/bin/edge agent --config /etc/edge/agent.toml"
    assert unit["Restart"] == "always"
    assert int(unit["WatchdogSec"]) > 0
    assert (unit["User"], unit["Group"]) == ("edge", "edge")
    assert unit["StateDirectory"] == "edge"
    assert unit["WantedBy"] == "multi-user.target"
    # systemd's own parser accepts it; the only complaint allowed is the venv missing on this machine.
    path = tmp_path / "edge-agent.service"
    path.write_text(AGENT_UNIT)
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
    assert (plan.extras, plan.apt, plan.optional_pip) == (extras, apt, optional)
    assert plan.shell() == (f"profile={profile}\nextras={','.join(extras)}\napt={','.join(apt)}\n"
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
