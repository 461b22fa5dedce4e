"""The arm64 proof: the project, run by an arm64 Debian CPython under qemu-user, classifies the cat.

The interpreter is Debian 12's python3.11 for arm64 (unpacked from the .debs debootstrap fetched),
the libraries are the aarch64 manylinux wheels of numpy, Pillow, pydantic and ai-edge-litert from
PyPI, and the project is this checkout: the same bits a 64-bit Raspberry Pi OS runs. qemu is
invoked explicitly with ``-L ROOT`` (binfmt_misc is not needed, and cannot be mounted in every
sandbox). Everything is cached between runs (see _roots.py).

Run it alone with:  python -m pytest tests/deploy/test_arm64.py -m slow -q
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.debian_roots import aarch64_site, debian_root_arm64, project_requirements

pytestmark = pytest.mark.slow

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def arm64_python() -> list[str]:
    qemu = shutil.which("qemu-aarch64-static") or shutil.which("qemu-aarch64")
    if qemu is None:
        pytest.fail("qemu-aarch64-static not found: apt-get install qemu-user-static")
    root = debian_root_arm64()
    return [qemu, "-L", str(root), str(root / "usr/bin/python3.11")]


@pytest.fixture(scope="module")
def arm64_env() -> dict[str, str]:
    site = aarch64_site(project_requirements("tflite"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_"))}
    env.update({"PYTHONPATH": f"{PROJECT}{os.pathsep}{site}", "PYTHONNOUSERSITE": "1",
                "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def test_the_interpreter_really_is_aarch64(arm64_python, arm64_env):
    code = ("import json, platform, sys, numpy, ai_edge_litert; "
            "print(json.dumps({'machine': platform.machine(), 'version': sys.version_info[:2], "
            "'numpy': numpy.__file__, 'so': numpy._core._multiarray_umath.__file__}))")
    proc = subprocess.run([*arm64_python, "-c", code], env=arm64_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["machine"] == "aarch64"
    assert info["version"] == [3, 11]
    assert info["so"].endswith("aarch64-linux-gnu.so")
    # The extension module is an ARM64 ELF (e_machine 183), not an x86-64 one that happened to load.
    with open(info["so"], "rb") as f:
        header = f.read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183


def test_mobilenet_says_egyptian_cat_on_arm64(arm64_python, arm64_env, mobilenet_bundle, reference_images):
    proc = subprocess.run(
        [*arm64_python, "-m", "edge_cli", "run", str(mobilenet_bundle),
         "--source", str(reference_images["cat.png"])],
        env=arm64_env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.splitlines()[0])
    assert record["top_k"][0]["label"] == "Egyptian cat"
    assert abs(record["top_k"][0]["score"] - 0.79) <= 2 / 256
    assert record["backend"] == "litert"
