"""The one exception hierarchy of ``device_profiles``.

Every error this package raises on purpose is a :class:`ProfileError`, so callers (and the ``edge``
CLI, which prints it as one ``error: ...`` line) only ever catch this tree::

    ProfileError
    ├── ProfileNotFoundError    no profile has that name (the message lists the known names)
    ├── ProfileFormatError      a profile file is not TOML or does not validate (names file and key)
    └── DetectionError          no profile fits the machine (names what was found)

Messages are single lines that name the file, key or value at fault.
"""

from __future__ import annotations

__all__ = ["DetectionError", "ProfileError", "ProfileFormatError", "ProfileNotFoundError"]


class ProfileError(Exception):
    """Base of every error raised on purpose by device_profiles."""


class ProfileNotFoundError(ProfileError):
    """No shipped profile has the requested name."""


class ProfileFormatError(ProfileError):
    """A profile file cannot be read, is not valid TOML, or does not validate."""


class DetectionError(ProfileError):
    """No profile fits the machine being detected."""
