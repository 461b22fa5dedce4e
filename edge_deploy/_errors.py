"""Errors of ``edge_deploy``, part of the one ``EdgeError`` tree::

    EdgeError
    └── DeployError                 preparing or flashing cannot go on
        ├── ImageError              the image file is missing, compressed, or has no usable boot partition
        ├── DeployInputError        a bundle, config, key, WiFi or name given by the user is unusable
        ├── ToolError               a required program (mtools, pip) is missing or failed
        └── FlashError              writing the target failed
            ├── FlashRefusedError   the target is unsafe (mounted, the system disk, too small, a partition)
            └── VerifyError         what was read back differs from the image

Nothing is written before every input has been checked, so any of these raised before writing
starts leaves the image and the target untouched.
"""

from __future__ import annotations

from edge_runtime import EdgeError

__all__ = [
    "DeployError",
    "DeployInputError",
    "FlashError",
    "FlashRefusedError",
    "ImageError",
    "ToolError",
    "VerifyError",
]


class DeployError(EdgeError):
    """Preparing an image or flashing a device cannot go on."""


class ImageError(DeployError):
    """The image is missing, compressed, not partitioned, or has no Raspberry Pi OS boot partition."""


class DeployInputError(DeployError):
    """An input (bundle, agent config, SSH key, WiFi settings, host or user name) is unusable."""


class ToolError(DeployError):
    """A program this step needs (mtools, pip) is missing or failed; the message says how to fix it."""


class FlashError(DeployError):
    """Writing or reading back the target failed."""


class FlashRefusedError(FlashError):
    """The target must not be written: mounted, the running system's disk, too small, or a partition."""


class VerifyError(FlashError):
    """The data read back from the target does not hash to the image's sha256."""
