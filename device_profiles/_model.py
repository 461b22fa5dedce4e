"""The :class:`Profile` model and reading profiles from TOML files.

Shipped profiles live in ``device_profiles/data/<name>.toml`` and are read through
``importlib.resources`` so they work from a wheel or a zip as well as from a checkout. A profile's
name is its file name: one source of truth, so a copied file cannot keep a stale name.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from ._errors import ProfileFormatError, ProfileNotFoundError
from .checked import Check, Checked, Invalid, dotted

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "Arch",
    "BackendName",
    "CameraKind",
    "DetectRules",
    "Profile",
    "Quantization",
    "list_profiles",
    "load_profile",
    "profile_names",
    "read_profile",
    "resolve_profile",
]

#: Normalised ``platform.machine()`` values a profile can target (see ``_detect.normalize_machine``).
Arch = Literal["aarch64", "armv7l", "x86_64"]
#: A backend name as the runtime's backend registry (edge_runtime.backends.BACKEND_NAMES) spells it. Profiles
#: sit below the runtime and cannot import its registry; tests/device_profiles checks every shipped profile
#: against it, and the runtime skips a name it does not know.
BackendName = Annotated[str, Check(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")]
Quantization = Literal["int8", "fp16", "dynamic", "none"]
CameraKind = Literal["picamera2", "usb", "android", "none"]

# Lowercase words joined by "-" (or "_", as in x86_64); also keeps names safe as file names.
_NAME_RE = re.compile(r"^[a-z0-9]+(?:[-_][a-z0-9]+)*$")

# Profile and DetectRules are checked records (device_profiles.checked: frozen dataclasses validated with the
# standard library), not pydantic models: detection reads every shipped profile on a device's start.
# They accept what TOML gives natively (no "4" for an int, no true for a number, no nan or inf);
# tests/device_profiles/test_profiles_differential.py proves them equal to the pydantic models they replaced.


@dataclass(frozen=True, init=False, kw_only=True)
class DetectRules(Checked):
    """How detection recognises the machine a profile is for (the ``[detect]`` table).

    A profile is a candidate only when the machine's architecture equals the profile's ``arch``
    and its ``platform.system()`` is in ``systems``. Among candidates, one recognised by the
    Android markers or by its board model string wins (the longest matching model string, i.e.
    the most specific one); otherwise the ``fallback`` profile of that architecture is used.
    """

    systems: Annotated[tuple[str, ...], Check(min_length=1)] = ("Linux",)
    """``platform.system()`` values this profile runs on (compared case-insensitively)."""
    models: tuple[str, ...] = ()
    """Substrings of the board model (device-tree ``model``, cpuinfo ``Model``) that identify it."""
    android: bool | None = None
    """True: only on Android (and Android markers select it); False: never on Android; None: either."""
    fallback: bool = False
    """Used for its architecture when no more specific profile matches."""

    @classmethod
    def _check_models(cls, value: tuple[str, ...], valid: dict[str, Any]) -> tuple[str, ...]:
        # An empty pattern would be a substring of every model and silently match any board.
        if any(not m.strip() for m in value):
            raise ValueError("model strings must not be empty")
        return value

    @classmethod
    def _check_fallback(cls, value: bool, valid: dict[str, Any]) -> bool:
        # A fallback catches whatever nothing else matched; giving it board models would make
        # it both specific and generic, and detection could no longer explain its choice.
        if value and valid.get("models"):
            raise ValueError("a fallback profile matches by architecture only; remove its models")
        return value


@dataclass(frozen=True, init=False, kw_only=True)
class Profile(Checked):
    """One kind of device: what it is and how the runtime should run models on it.

    Immutable: shipped profiles are cached and shared, so nobody may change them in place.
    """

    name: Annotated[str, Check(pattern=_NAME_RE.pattern)]
    """Identifier, equal to the file name without ``.toml`` (e.g. ``rpi-4b``)."""
    title: Annotated[str, Check(min_length=1)]
    """Human name, e.g. ``Raspberry Pi 4 Model B``."""
    description: str = ""
    arch: Arch
    """Python's view of the machine: ``aarch64``, ``armv7l`` (32-bit ARM userland) or ``x86_64``."""
    cpu: Annotated[str, Check(min_length=1)]
    """SoC and cores, e.g. ``Broadcom BCM2711, 4x Arm Cortex-A72``."""
    cores: Annotated[int, Check(ge=1, le=1024)]
    cpu_mhz: Annotated[int | None, Check(ge=1)] = None
    """Nominal clock of the fastest cores."""
    memory_mb: Annotated[int, Check(ge=64)]
    """Typical RAM of the device (detection reports the real MemTotal)."""
    memory_options_mb: tuple[int, ...] = ()
    """RAM sizes the device is sold with, if more than one."""
    os: Annotated[str, Check(min_length=1)]
    """Recommended operating system."""
    system_python: Annotated[str | None, Check(pattern=r"^3\.\d+$")] = None
    """Python version the OS ships (None when it varies)."""
    notes: tuple[str, ...] = ()
    """OS, Python and installation notes, one sentence each."""
    backends: Annotated[tuple[BackendName, ...], Check(min_length=1)]
    """Backends in order of preference; the runtime uses the first installed one that runs the format."""
    threads: Annotated[int, Check(ge=1)]
    """Inference threads to ask the backend for."""
    quantization: Quantization
    """Quantization to build models with for this device."""
    camera: CameraKind
    """The camera stack the device normally has."""
    latency_budget_ms: Annotated[float, Check(gt=0)]
    """Target end-to-end latency per frame (preprocess + inference + postprocess)."""
    memory_ceiling_mb: Annotated[int, Check(ge=16)]
    """Most memory the model and runtime should use, so the OS and camera stack keep the rest."""
    detect: DetectRules | None = None
    """How detection recognises the device; None: used only when named."""

    @classmethod
    def _check_memory_options_mb(cls, value: tuple[int, ...], valid: dict[str, Any]) -> tuple[int, ...]:
        typical = valid.get("memory_mb")
        if value and typical is not None and typical not in value:
            raise ValueError(f"memory_mb ({typical}) must be one of the memory options {list(value)}")
        if any(v < 64 for v in value):
            raise ValueError("memory options are in MB and must be at least 64")
        return value

    @classmethod
    def _check_backends(cls, value: tuple[str, ...], valid: dict[str, Any]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"backends must not repeat: {list(value)}")
        return value

    @classmethod
    def _check_threads(cls, value: int, valid: dict[str, Any]) -> int:
        # More threads than cores only adds contention on these small CPUs.
        cores = valid.get("cores")
        if cores is not None and value > cores:
            raise ValueError(f"threads ({value}) must not exceed cores ({cores})")
        return value

    @classmethod
    def _check_memory_ceiling_mb(cls, value: int, valid: dict[str, Any]) -> int:
        # The ceiling must hold on the smallest variant sold, not just the typical one.
        sizes = valid.get("memory_options_mb") or ()
        typical = valid.get("memory_mb")
        smallest = min(sizes) if sizes else typical
        if smallest is not None and value >= smallest:
            raise ValueError(
                f"memory_ceiling_mb ({value}) must be below the smallest memory size ({smallest} MB)"
            )
        return value


# -- reading ---------------------------------------------------------------------------------------------


def _data_dir() -> Traversable:
    # From a folder (a checkout, an installed wheel), the folder itself: importlib.resources (and
    # through it tempfile, shutil, importlib.readers, zipfile: ~4 ms) only for a zip import.
    here = Path(__file__).parent / "data"
    if here.is_dir():
        return here
    from importlib import resources

    return resources.files("device_profiles").joinpath("data")


def profile_names() -> list[str]:
    """Names of the shipped profiles, sorted, without parsing them."""
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in _data_dir().iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    )


def list_profiles() -> list[Profile]:
    """Every shipped profile, sorted by name; any invalid file raises ProfileFormatError."""
    return [load_profile(name) for name in profile_names()]


def load_profile(name: str) -> Profile:
    """The shipped profile called ``name``; ProfileNotFoundError (listing the known names) if none."""
    known = profile_names()
    # The name check also keeps "../x" or "a/b" from reaching the file system.
    if name not in known:
        import difflib  # only for the hint

        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ProfileNotFoundError(
            f"unknown device profile {name!r}{hint}; known profiles: {', '.join(known)}"
        )
    return _load_shipped(name)


@functools.cache
def _load_shipped(name: str) -> Profile:
    entry = _data_dir().joinpath(f"{name}.toml")
    return parse_profile(entry.read_bytes(), name=name, source=str(entry))


def read_profile(path: str | Path) -> Profile:
    """Read a profile from any TOML file (e.g. a custom board); its name is the file name."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileFormatError(f"{path}: cannot read profile file: {exc.strerror or exc}") from exc
    return parse_profile(raw, name=path.stem, source=str(path))


def resolve_profile(name_or_path: str | Path) -> Profile:
    """A shipped profile by name, or a profile file when given a Path or a ``*.toml`` string."""
    if isinstance(name_or_path, Path) or name_or_path.endswith(".toml"):
        return read_profile(name_or_path)
    return load_profile(name_or_path)


def parse_profile(raw: bytes, *, name: str, source: str) -> Profile:
    """Validate the TOML bytes of one profile; errors name ``source`` and the offending key."""
    try:
        data: dict[str, Any] = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ProfileFormatError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ProfileFormatError(f"{source}: not valid TOML: {exc}") from exc
    if not _NAME_RE.match(name):
        raise ProfileFormatError(
            f"{source}: name: {name!r} (the file name) must be lowercase letters and digits "
            "joined by '-' or '_'"
        )
    if "name" in data and data["name"] != name:
        raise ProfileFormatError(f"{source}: name: {data['name']!r} differs from the file name {name!r}")
    try:
        return Profile.from_dict({**data, "name": name})
    except Invalid as exc:
        raise ProfileFormatError(f"{source}: {_describe(exc)}") from exc


def _describe(exc: Invalid) -> str:
    """One line naming every bad key, e.g. ``backends[1]: Input should be 'litert', ...``."""
    parts: list[str] = []
    for err in exc.errors():
        loc = err["loc"]
        key = dotted(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _known_keys(loc[:-1])
            msg = f"unknown key (known keys: {', '.join(allowed)})"
        elif kind == "missing":
            msg = "required key is missing"
        elif kind == "value_error":
            msg = str(err["msg"]).removeprefix("Value error, ")
        else:
            msg = f"{err['msg']} (got {err['input']!r})"
        parts.append(f"{key}: {msg}" if key else msg)
    return "; ".join(parts)


def _known_keys(parent: tuple[int | str, ...]) -> list[str]:
    model: type[Checked] = DetectRules if parent and parent[0] == "detect" else Profile
    return [k for k in model.field_names() if k != "name"]
