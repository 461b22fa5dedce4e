"""Detect which profile fits a machine from what Linux and Android publish about it.

Read, in this order of trust: the device-tree ``model`` (exact board name on ARM boards), the
``Model``/``Hardware``/``Revision``/``CPU part`` lines of ``/proc/cpuinfo`` (Raspberry Pi kernels
print the board there too, which still works inside containers where the device tree is hidden),
``/proc/meminfo``, ``platform.machine()``/``platform.system()``, and Android markers (environment
of the process, ``/system/build.prop``). Which profile those facts select is data: the ``[detect]``
table of each profile; no device name is tested in code except to decode Raspberry Pi revision codes.

Everything is read below ``root``, so a copy of another machine's ``/proc`` can be examined.
"""

from __future__ import annotations

import logging
import os
import platform
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import DetectionError
from ._model import Profile, list_profiles, resolve_profile

__all__ = ["Detection", "decode_rpi_revision", "detect", "normalize_machine", "profile_for"]

log = logging.getLogger(__name__)

# platform.machine() spells the same userland differently per OS and kernel.
_MACHINE_ALIASES = {
    "arm64": "aarch64",  # macOS, Windows on ARM
    "aarch64": "aarch64",
    "amd64": "x86_64",  # Windows
    "x64": "x86_64",
    "x86_64": "x86_64",
    # armv8l is an ARMv8 CPU running in 32-bit mode (linux32 / a 32-bit kernel): armhf userland.
    "armv8l": "armv7l",
    "armv7l": "armv7l",
    "armv7hl": "armv7l",
}

# Arm Ltd. (implementer 0x41) part numbers, for readable evidence only; detection never uses them
# because the same core ships in many boards.
_ARM_PARTS = {
    "0xb76": "ARM1176",
    "0xc07": "Cortex-A7",
    "0xc0f": "Cortex-A15",
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
    "0xd42": "Cortex-A78AE",
    "0xd44": "Cortex-X1",
    "0xd46": "Cortex-A510",
    "0xd47": "Cortex-A710",
    "0xd48": "Cortex-X2",
    "0xd4d": "Cortex-A715",
    "0xd4e": "Cortex-X3",
}

# Raspberry Pi new-style revision codes (bit 23 set), as documented by Raspberry Pi Ltd:
# NOQuuuWuFMMMCCCCPPPPTTTTTTTTRRRR. Board types are mapped to the model string the device tree
# would show, so a Pi whose device tree and cpuinfo "Model" are both hidden is matched the same way.
_RPI_BOARD_MODELS = {
    0x00: "Raspberry Pi Model A",
    0x01: "Raspberry Pi Model B",
    0x02: "Raspberry Pi Model A Plus",
    0x03: "Raspberry Pi Model B Plus",
    0x04: "Raspberry Pi 2 Model B",
    0x06: "Raspberry Pi Compute Module",
    0x08: "Raspberry Pi 3 Model B",
    0x09: "Raspberry Pi Zero",
    0x0A: "Raspberry Pi Compute Module 3",
    0x0C: "Raspberry Pi Zero W",
    0x0D: "Raspberry Pi 3 Model B Plus",
    0x0E: "Raspberry Pi 3 Model A Plus",
    0x10: "Raspberry Pi Compute Module 3 Plus",
    0x11: "Raspberry Pi 4 Model B",
    0x12: "Raspberry Pi Zero 2 W",
    0x13: "Raspberry Pi 400",
    0x14: "Raspberry Pi Compute Module 4",
    0x15: "Raspberry Pi Compute Module 4S",
    0x17: "Raspberry Pi 5",
    0x18: "Raspberry Pi Compute Module 5",
    0x19: "Raspberry Pi 500",
    0x1A: "Raspberry Pi Compute Module 5 Lite",
}
_RPI_PROCESSORS = {0: "BCM2835", 1: "BCM2836", 2: "BCM2837", 3: "BCM2711", 4: "BCM2712"}


@dataclass(frozen=True)
class Detection:
    """The profile chosen for a machine and the facts that chose it."""

    profile: Profile
    evidence: dict[str, str] = field(default_factory=dict)
    """What was read and matched, e.g. ``device_tree_model``, ``cpu_part``, ``MemTotal``, ``matched``."""
    memory_mb: int | None = None
    """MemTotal of the machine in MiB, when /proc/meminfo was readable."""

    @property
    def memory_ceiling_mb(self) -> int:
        """The profile's ceiling, lowered to half the detected RAM on a smaller variant.

        Half, because the OS, the camera stack and the page cache need the rest; a Pi 4 sold with
        1 GB must not be planned like the typical 4 GB one.
        """
        if self.memory_mb is None:
            return self.profile.memory_ceiling_mb
        return max(1, min(self.profile.memory_ceiling_mb, self.memory_mb // 2))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as ``edge profiles detect --json`` prints it."""
        return {
            "name": self.profile.name,
            "memory_mb": self.memory_mb,
            "memory_ceiling_mb": self.memory_ceiling_mb,
            "evidence": dict(self.evidence),
            "profile": self.profile.to_dict(json=True),
        }


def normalize_machine(machine: str) -> str:
    """``platform.machine()`` as profiles spell it: ``arm64`` -> ``aarch64``, ``AMD64`` -> ``x86_64``."""
    key = machine.strip().lower()
    return _MACHINE_ALIASES.get(key, key)


def decode_rpi_revision(code: str) -> dict[str, str] | None:
    """Decode a new-style Raspberry Pi revision code (``c03114``); None if it is not one."""
    try:
        value = int(code.strip(), 16)
    except ValueError:
        return None
    if not value & (1 << 23):
        return None  # old-style codes (Pi 1 era) carry no board type
    model = _RPI_BOARD_MODELS.get((value >> 4) & 0xFF)
    if model is None:
        return None
    return {
        "model": model,
        "memory_mb": str(256 << ((value >> 20) & 0x7)),
        "processor": _RPI_PROCESSORS.get((value >> 12) & 0xF, "unknown"),
        "board_revision": f"1.{value & 0xF}",
    }


def detect(
    root: str | Path = "/",
    *,
    machine: str | None = None,
    system: str | None = None,
    environ: Mapping[str, str] | None = None,
    userland_bits: int | None = None,
) -> Detection:
    """Pick the profile for the machine whose files are under ``root``.

    ``machine``/``system`` override ``platform.machine()``/``platform.system()``; ``environ``
    overrides ``os.environ`` for the Android markers. When ``root`` is not ``/`` the files belong
    to another machine, so this process's platform and environment are ignored: the machine is
    read from that cpuinfo unless given, the system is taken as Linux, the environment as empty.

    ``userland_bits`` is the width of the Python that will run models. It matters on a Raspberry
    Pi running 32-bit Raspberry Pi OS on a 64-bit kernel (the Bookworm default on a Pi 4), where
    ``uname`` says aarch64 but only armhf wheels install. When detecting this machine it defaults
    to the running interpreter's; with an explicit ``machine`` that machine is taken as the userland.

    Raises DetectionError when no profile fits (e.g. riscv64, or armv6l on a Pi Zero).
    """
    root = Path(root)
    local = _is_local_root(root)
    evidence: dict[str, str] = {}

    board_model = _read_board_model(root, evidence)
    cpu = _read_cpuinfo(root, evidence)
    memory_mb = _read_meminfo(root, evidence)

    if board_model is None and cpu.get("model"):
        board_model = cpu["model"]
        evidence["model_source"] = "cpuinfo Model"
    if board_model is None and cpu.get("revision"):
        decoded = decode_rpi_revision(cpu["revision"])
        if decoded is not None:
            board_model = decoded["model"]
            evidence["model_source"] = "cpuinfo Revision"

    resolved_machine = _resolve_machine(machine, local, userland_bits, cpu, evidence)
    if system is not None:
        resolved_system = system
        evidence["system"] = system
        evidence["system_source"] = "argument"
    elif local:
        resolved_system = platform.system()
        evidence["system"] = resolved_system
        evidence["system_source"] = "platform.system()"
    else:
        resolved_system = "Linux"  # a copy of /proc comes from Linux (Android included)
        evidence["system"] = resolved_system
        evidence["system_source"] = "assumed for a copied root"

    if environ is None:
        environ = os.environ if local else {}
    android = _android_markers(root, resolved_system, environ, evidence)

    profile, reason = _choose(resolved_machine, resolved_system, android, board_model)
    evidence["matched"] = reason
    log.debug("detected profile %s: %s", profile.name, evidence)
    return Detection(profile=profile, evidence=evidence, memory_mb=memory_mb)


def profile_for(
    name_or_none: str | Path | None = None, *, environ: Mapping[str, str] | None = None
) -> Profile:
    """The profile to run with: the named one (or a ``.toml`` file), else ``EDGE_PROFILE``, else detected.

    This is what the runtime calls with its ``--profile`` option, which is usually unset.
    """
    if name_or_none is not None:
        return resolve_profile(name_or_none)
    env = os.environ if environ is None else environ
    # An explicit override for boards detection cannot tell apart, set once in the service unit.
    forced = env.get("EDGE_PROFILE", "").strip()
    if forced:
        return resolve_profile(forced)
    return detect(environ=environ).profile


# -- reading ---------------------------------------------------------------------------------------------


def _is_local_root(root: Path) -> bool:
    try:
        return root.resolve() == Path("/").resolve()
    except OSError:
        return False


def _read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError as exc:
        # Missing files are normal (no device tree on x86, SELinux on Android); never fatal.
        log.debug("cannot read %s: %s", path, exc)
        return None
    return data.decode("utf-8", errors="replace")


def _read_board_model(root: Path, evidence: dict[str, str]) -> str | None:
    # /proc/device-tree is a symlink to /sys/firmware/devicetree/base; a copied root may hold either.
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        text = _read_text(root / rel)
        if text is None:
            continue
        # Device-tree strings are NUL-terminated on real boards.
        model = text.split("\0", 1)[0].strip()
        if model:
            evidence["device_tree_model"] = model
            evidence["model_source"] = "device tree"
            return model
    return None


def _read_cpuinfo(root: Path, evidence: dict[str, str]) -> dict[str, str]:
    """The cpuinfo facts detection needs, as a flat dict; adds readable entries to ``evidence``."""
    text = _read_text(root / "proc" / "cpuinfo")
    if text is None:
        return {}
    processors = 0
    parts: list[str] = []
    implementers: list[str] = []
    facts: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        # Old 32-bit ARM kernels also print "Processor : ARMv7 ..." (capital P, a model name):
        # only the lowercase, numbered line counts a core.
        if key == "processor" and value.isdigit():
            processors += 1
        elif key == "CPU part":
            parts.append(value.lower())
        elif key == "CPU implementer":
            implementers.append(value.lower())
        elif key in ("Hardware", "Revision", "Model", "Serial"):
            facts[key.lower()] = value
        elif key in ("model name", "CPU architecture", "vendor_id", "flags"):
            facts.setdefault(key.lower().replace(" ", "_"), value)
    if processors:
        facts["cores"] = str(processors)
        evidence["cpu_cores"] = str(processors)
    if "hardware" in facts:
        evidence["cpuinfo_hardware"] = facts["hardware"]
    if "model" in facts:
        evidence["cpuinfo_model"] = facts["model"]
    if "revision" in facts:
        evidence["cpuinfo_revision"] = facts["revision"]
        decoded = decode_rpi_revision(facts["revision"])
        if decoded is not None:
            evidence["rpi_revision"] = (
                f"{decoded['model']} rev {decoded['board_revision']}, {decoded['processor']}, "
                f"{decoded['memory_mb']} MB"
            )
    if "model_name" in facts:
        evidence["cpu_model_name"] = facts["model_name"]
    if parts:
        arm = bool(implementers) and all(i == "0x41" for i in implementers)
        unique = list(dict.fromkeys(parts))
        evidence["cpu_part"] = ", ".join(
            f"{p} ({_ARM_PARTS[p]})" if arm and p in _ARM_PARTS else p for p in unique
        )
    return facts


def _read_meminfo(root: Path, evidence: dict[str, str]) -> int | None:
    text = _read_text(root / "proc" / "meminfo")
    if text is None:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            evidence["MemTotal"] = " ".join(fields[1:])
            try:
                kib = int(fields[1])
            except (IndexError, ValueError):
                return None
            unit = fields[2].lower() if len(fields) > 2 else "kb"
            # The kernel always writes kB (meaning KiB); accept a bare number as the same.
            mb = kib // 1024 if unit == "kb" else None
            if mb is not None:
                evidence["memory_mb"] = str(mb)
            return mb
    return None


def _interpreter_bits() -> int:
    """Pointer width of the running Python: 32 for an armhf build even on an aarch64 kernel."""
    return struct.calcsize("P") * 8


def _machine_from_cpuinfo(cpu: dict[str, str]) -> str | None:
    """The architecture a copied /proc/cpuinfo was written by, or None if it does not say."""
    flags = cpu.get("flags")
    if flags is not None or "vendor_id" in cpu:
        return "x86_64" if flags is not None and "lm" in flags.split() else "i686"
    model_name = cpu.get("model_name", "")
    # A 32-bit ARM kernel names the mode in the model name, even on an ARMv8 core.
    if "(v7l)" in model_name:
        return "armv7l"
    if "(v6l)" in model_name:
        return "armv6l"
    if cpu.get("cpu_architecture") in ("8", "AArch64"):
        return "aarch64"
    return None


def _resolve_machine(
    machine: str | None,
    local: bool,
    userland_bits: int | None,
    cpu: dict[str, str],
    evidence: dict[str, str],
) -> str:
    if machine is not None:
        resolved, source = normalize_machine(machine), "argument"
    elif local:
        raw = platform.machine()
        resolved, source = normalize_machine(raw), "platform.machine()"
        if userland_bits is None:
            userland_bits = _interpreter_bits()
    else:
        inferred = _machine_from_cpuinfo(cpu)
        if inferred is None:
            raise DetectionError(
                "cannot tell the machine architecture from the copied cpuinfo; give it explicitly "
                "(machine=..., or --machine aarch64/armv7l/x86_64)"
            )
        resolved, source = inferred, "cpuinfo"
    if userland_bits == 32 and resolved in ("aarch64", "x86_64"):
        # 32-bit userland on a 64-bit kernel: wheels must match the interpreter, not the kernel.
        evidence["userland"] = f"32-bit Python on a 64-bit ({resolved}) kernel"
        resolved = "armv7l" if resolved == "aarch64" else "i686"
    evidence["machine"] = resolved
    evidence["machine_source"] = source
    return resolved


def _android_markers(
    root: Path, system: str, environ: Mapping[str, str], evidence: dict[str, str]
) -> list[str]:
    markers: list[str] = []
    for var in ("ANDROID_ROOT", "ANDROID_DATA", "TERMUX_VERSION"):
        if environ.get(var):
            markers.append(f"{var}={environ[var]}")
    prefix = environ.get("PREFIX", "")
    if "com.termux" in prefix:
        markers.append(f"PREFIX={prefix}")
    if system.lower() == "android":  # Python 3.13+ reports Android itself
        markers.append("platform.system()=Android")
    build_prop = root / "system" / "build.prop"
    text = _read_text(build_prop)
    if text is not None:
        markers.append(str(build_prop))
        # Since Android 10 the device's own name lives in the vendor partition's properties;
        # the system partition may only carry a generic one ("mainline").
        props = _parse_props(text)
        props |= _parse_props(_read_text(root / "vendor" / "build.prop") or "")
        device = " ".join(
            p
            for p in (
                _first(
                    props,
                    "ro.product.manufacturer",
                    "ro.product.vendor.manufacturer",
                    "ro.product.system.manufacturer",
                ),
                _first(props, "ro.product.model", "ro.product.vendor.model", "ro.product.system.model"),
            )
            if p
        )
        release = _first(props, "ro.build.version.release", "ro.system.build.version.release")
        if device or release:
            evidence["android_device"] = (device or "unknown device") + (
                f", Android {release}" if release else ""
            )
    if markers:
        evidence["android"] = "; ".join(markers)
    return markers


def _first(props: Mapping[str, str], *keys: str) -> str | None:
    return next((props[k] for k in keys if props.get(k)), None)


def _parse_props(text: str) -> dict[str, str]:
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    return props


# -- choosing --------------------------------------------------------------------------------------------


def _choose(
    machine: str, system: str, android_markers: list[str], board_model: str | None
) -> tuple[Profile, str]:
    """The best profile for the facts and a sentence saying why.

    Specific beats generic: Android markers first (Android userland decides wheels, camera and
    process model even on a Pi board), then the longest board-model string that matches, then
    the architecture's fallback.
    """
    best: tuple[int, int] | None = None
    chosen: Profile | None = None
    reason = ""
    fallback: Profile | None = None
    android = bool(android_markers)
    model_cf = board_model.casefold() if board_model else ""
    for profile in list_profiles():
        rules = profile.detect
        if rules is None or profile.arch != machine:
            continue
        if system.casefold() not in {s.casefold() for s in rules.systems}:
            continue
        if rules.android is not None and rules.android != android:
            continue
        if rules.android and android:
            score, why = (2, 0), "Android markers: " + "; ".join(android_markers)
        else:
            hits = [m for m in rules.models if model_cf and m.casefold() in model_cf]
            if hits:
                hit = max(hits, key=len)
                score, why = (1, len(hit)), f"board model {board_model!r} contains {hit!r}"
            else:
                if rules.fallback and fallback is None:
                    fallback = profile
                continue
        if best is None or score > best:
            best, chosen, reason = score, profile, why
    if chosen is not None:
        return chosen, f"{reason} (machine {machine})"
    if fallback is not None:
        what = f"board {board_model!r}" if board_model else "this board"
        return fallback, f"no profile for {what} on {machine}; fallback for {machine}"
    names = ", ".join(p.name for p in list_profiles())
    raise DetectionError(
        f"no device profile fits this machine (machine {machine}, system {system}"
        + (f", board {board_model!r}" if board_model else "")
        + f"); name one explicitly: {names}"
    )
