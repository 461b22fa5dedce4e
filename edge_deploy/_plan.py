"""What to install on a device for its profile: pip extras, apt packages, optional pip packages.

``install-on-pi.sh`` asks this after installing the bare wheel, so the choice follows the device
profile data (backends, camera, architecture) and no device name is tested anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_profiles import Profile
from edge_runtime.backends import BACKENDS

__all__ = ["InstallPlan", "install_plan"]


@dataclass(frozen=True)
class InstallPlan:
    profile: str
    extras: tuple[str, ...]
    """Extras of the edge-runtime distribution, e.g. ``("tflite", "device")``."""
    apt: tuple[str, ...]
    """Debian packages the profile needs from apt (the Pi camera stack is never pip-installed)."""
    optional_pip: tuple[str, ...]
    """Packages worth trying that may have no wheel for the platform; their failure is not fatal."""

    def shell(self) -> str:
        """``KEY=value`` lines that install-on-pi.sh reads (values are comma-separated)."""
        return (
            f"profile={self.profile}\n"
            f"extras={','.join(self.extras)}\n"
            f"apt={','.join(self.apt)}\n"
            f"optional_pip={','.join(self.optional_pip)}\n"
        )


def install_plan(profile: Profile) -> InstallPlan:
    """The plan for one device profile."""
    name, arch, backends, camera = profile.name, profile.arch, profile.backends, profile.camera
    extras: list[str] = []
    optional: list[str] = []
    # What each backend needs comes from the runtime's registry (its extra, the architectures its
    # library has no wheel for and what may stand in there); no backend name is tested here.
    for backend in backends:
        cls = BACKENDS.get(backend)
        if cls is None:
            continue
        if arch in cls.no_wheel:
            if cls.no_wheel[arch]:
                optional.append(cls.no_wheel[arch])
        elif cls.extra not in extras:
            extras.append(cls.extra)
    if camera == "usb" and "camera" not in extras:
        extras.append("camera")
    # The agent's own needs: MQTT, system metrics.
    extras.append("device")
    apt = ("python3-picamera2",) if camera == "picamera2" else ()
    return InstallPlan(profile=name, extras=tuple(extras), apt=apt, optional_pip=tuple(optional))
