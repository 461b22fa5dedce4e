"""Device profiles: what a device is and how to run models on it, as TOML data plus detection.

>>> from device_profiles import profile_for
>>> profile = profile_for(None)            # the detected profile (or $EDGE_PROFILE)
>>> profile.backends, profile.threads      # e.g. ('litert', 'onnxruntime', 'opencv-dnn'), 4

Code asks the profile for what it needs (backends, threads, quantization, camera, budgets); it
never tests a device name. Importing this package loads only the standard library: profiles are
:mod:`device_profiles.checked` records (validated dataclasses), not pydantic models.

Errors::

    ProfileError
    ├── ProfileNotFoundError    no profile has that name (the message lists the known names)
    ├── ProfileFormatError      a profile file is not TOML or does not validate (names file and key)
    └── DetectionError          no profile fits the machine (names what was found)
"""

from __future__ import annotations

from ._detect import Detection, decode_rpi_revision, detect, normalize_machine, profile_for
from ._errors import DetectionError, ProfileError, ProfileFormatError, ProfileNotFoundError
from ._model import (
    DetectRules,
    Profile,
    list_profiles,
    load_profile,
    profile_names,
    read_profile,
    resolve_profile,
)

__all__ = [
    "DetectRules",
    "Detection",
    "DetectionError",
    "Profile",
    "ProfileError",
    "ProfileFormatError",
    "ProfileNotFoundError",
    "decode_rpi_revision",
    "detect",
    "list_profiles",
    "load_profile",
    "normalize_machine",
    "profile_for",
    "profile_names",
    "read_profile",
    "resolve_profile",
]
