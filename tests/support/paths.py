"""Where the project and the shared third-party test data live, resolved from this file so the
tests run from any working directory."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def env_with_project() -> dict[str, str]:
    """The environment for a subprocess that imports the project from this checkout."""
    # Hermetic: no EDGE_* override from the machine running the tests leaks into what they start.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    # A test that runs under systemd must not make the child talk to the real service manager.
    env.pop("NOTIFY_SOCKET", None)
    env.pop("WATCHDOG_USEC", None)
    return env
