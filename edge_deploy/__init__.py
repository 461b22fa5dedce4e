"""Deploy to Raspberry Pis: prepare an SD card image, flash it, install onto a running Pi.

>>> from edge_deploy import DeviceSettings, prepare_image, flash_image
>>> prepare_image("raspios.img", bundle="mobilenet_v2.tar.gz", config="agent.toml",
...               settings=DeviceSettings(hostname="cam-1", ssh_keys=read_ssh_keys(Path("id.pub"))))
>>> flash_image("raspios.img", "/dev/sdb")      # refuses mounted, system and too-small disks

The boot (FAT) partition of the image is written with GNU mtools at the partition's offset in the
file: no loop device, no mount, no root. Imported only by ``edge pi``; ``import edge_runtime``
does not load it.
"""

from __future__ import annotations

from ._errors import (
    DeployError,
    DeployInputError,
    FlashError,
    FlashRefusedError,
    ImageError,
    ToolError,
    VerifyError,
)
from ._fat import FatVolume
from ._firstboot import BOOT_MOUNT, EDGE_DIR, FIRSTRUN_ARGS, Mechanism
from ._flash import FlashResult, FlashSystem, check_target, flash_image
from ._packaged import agent_unit, install_script
from ._partitions import Partition, boot_partition, read_partitions
from ._plan import InstallPlan, install_plan
from ._prepare import PrepareResult, detect_mechanism, prepare_image
from ._settings import (
    DeviceSettings,
    DeviceToken,
    TrustedKey,
    WifiSettings,
    device_token,
    read_device_token,
    read_ssh_keys,
    read_trusted_key,
    read_wifi,
)
from ._wheel import build_wheel, check_wheel

__all__ = [
    "BOOT_MOUNT",
    "EDGE_DIR",
    "FIRSTRUN_ARGS",
    "DeployError",
    "DeployInputError",
    "DeviceSettings",
    "DeviceToken",
    "FatVolume",
    "FlashError",
    "FlashRefusedError",
    "FlashResult",
    "FlashSystem",
    "ImageError",
    "InstallPlan",
    "Mechanism",
    "Partition",
    "PrepareResult",
    "ToolError",
    "TrustedKey",
    "VerifyError",
    "WifiSettings",
    "agent_unit",
    "boot_partition",
    "build_wheel",
    "check_target",
    "check_wheel",
    "detect_mechanism",
    "device_token",
    "flash_image",
    "install_plan",
    "install_script",
    "prepare_image",
    "read_device_token",
    "read_partitions",
    "read_ssh_keys",
    "read_trusted_key",
    "read_wifi",
]
