"""The installer script and the agent's systemd unit, shipped as package data (edge_deploy/data/).

They are read through importlib.resources so the same call works from a checkout, an installed
wheel or a zip import: `edge pi prepare-image` writes the installer onto an image, and
install-on-pi.sh installs the unit from the package it just installed, so the two always match.
"""

from __future__ import annotations

from importlib.resources import files

from ._errors import DeployError

__all__ = ["agent_unit", "install_script"]

INSTALL_SCRIPT_NAME = "install-on-pi.sh"
AGENT_UNIT_NAME = "edge-agent.service"


def _read(name: str) -> str:
    resource = files("edge_deploy").joinpath("data", name)
    try:
        return resource.read_text(encoding="utf-8")
    except OSError as exc:
        raise DeployError(
            f"edge_deploy/data/{name} is missing from the installed package ({exc}); reinstall edge-runtime"
        ) from exc


def install_script() -> str:
    """The text of install-on-pi.sh, the script that installs edge onto a running Raspberry Pi."""
    return _read(INSTALL_SCRIPT_NAME)


def agent_unit() -> str:
    """The text of edge-agent.service, the systemd unit that runs `edge agent`."""
    return _read(AGENT_UNIT_NAME)
