"""Which optional libraries each command (or option) needs, checked before the command starts.

A device installs only the extras of its role, so a verb may find a library missing. Checking the
table below before the command's body runs turns that into one line naming the ``pip install`` that
fixes it, instead of a traceback from deep inside (or, worse, from a background thread after the
run has started). The check only looks modules up (``importlib.util.find_spec``); it imports nothing.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ._common import CliError

__all__ = ["REQUIREMENTS", "MissingExtraError", "Requirement", "guard_command", "missing_for", "module_missing"]


class MissingExtraError(CliError):
    """A command needs a library that is not installed; the message says how to install it."""


@dataclass(frozen=True)
class Requirement:
    """``command`` (e.g. ``"run"``, ``"cloud serve"``) needs ``modules`` (import name -> pip name)
    from ``extra``: always when ``option`` is None, otherwise when that parameter is set (and
    ``when`` accepts its value)."""

    command: str
    modules: Mapping[str, str]
    extra: str
    option: str | None = None
    #: how the message names the option, e.g. "--mqtt"; "{value}" is replaced by its value
    flag: str = ""
    when: Callable[[Any], bool] | None = field(default=None, compare=False)

    def applies(self, params: Mapping[str, Any]) -> bool:
        if self.option is None:
            return True
        value = params.get(self.option)
        if value is None or value is False or value == ():
            return False
        return self.when(value) if self.when is not None else True

    def describe(self, params: Mapping[str, Any]) -> str:
        flag = self.flag.replace("{value}", str(params.get(self.option or "", "")))
        return f"edge {self.command}" + (f" {flag}" if flag else "")


def _needs_opencv(source: Any) -> bool:
    """Camera indexes, stream URLs and video files are read through OpenCV."""
    # Imported here: `edge run` imports the runtime anyway, `edge --help` must not.
    from edge_runtime.sources import VIDEO_SUFFIXES

    spec = str(source)
    return spec.isdigit() or ("://" in spec) or Path(spec).suffix.lower() in VIDEO_SUFFIXES


#: the table: every optional library a command can reach, and the extra that brings it
REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("run", {"paho": "paho-mqtt"}, "device", option="mqtt_url", flag="--mqtt"),
    Requirement("run", {"cv2": "opencv-python-headless"}, "camera", option="source", flag="--source {value}",
                when=_needs_opencv),
    Requirement("worker", {"pika": "pika"}, "worker"),
    Requirement("cloud serve", {"fastapi": "fastapi", "uvicorn": "uvicorn", "sqlalchemy": "sqlalchemy",
                                "pydantic_settings": "pydantic-settings"}, "cloud"),
    Requirement("cloud ingest", {"paho": "paho-mqtt", "sqlalchemy": "sqlalchemy"}, "cloud"),
    # The broker configuration lives in cloud_sync.ingest, whose import needs SQLAlchemy.
    Requirement("cloud broker-config", {"sqlalchemy": "sqlalchemy"}, "cloud"),
    # edge batch: Ray only for --engine ray; the output's and the source's library only when used.
    Requirement("batch", {"ray": "ray[data]", "pyarrow": "pyarrow"}, "batch", option="engine", flag="--engine ray",
                when=lambda v: v == "ray"),
    Requirement("batch", {"sqlalchemy": "sqlalchemy"}, "batch", option="output", flag="--output {value}",
                when=lambda v: "://" in str(v)),
    Requirement("batch", {"pyarrow": "pyarrow"}, "batch", option="output", flag="--output {value}",
                when=lambda v: "://" not in str(v)),
    Requirement("batch", {"boto3": "boto3"}, "batch", option="source", flag="--source {value}",
                when=lambda v: str(v).startswith("s3://")),
)


def module_missing(name: str) -> bool:
    """True when ``name`` cannot be found. A finder that refuses the module (raising ImportError,
    as an import blocker does) counts as missing too."""
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _missing_backend(command: str, params: Mapping[str, Any]) -> MissingExtraError | None:
    """``--backend NAME``: what it needs comes from the runtime's backend registry, the one list of
    backends, their libraries and their extras (imported only here, when such a command runs)."""
    name = params.get("backend")
    if command not in BACKEND_COMMANDS or not isinstance(name, str):
        return None
    from edge_runtime.backends import BACKENDS

    cls = BACKENDS.get(name)
    if cls is None or cls.available():
        return None
    return MissingExtraError(f"edge {command} --backend {name} needs {' or '.join(cls.modules)}: {cls.install_hint}")


#: commands whose --backend option names a backend of the registry
BACKEND_COMMANDS = ("run", "bench")


def missing_for(command: str, params: Mapping[str, Any]) -> MissingExtraError | None:
    """The error for the first requirement of ``command`` that is not met, or None."""
    backend_error = _missing_backend(command, params)
    if backend_error is not None:
        return backend_error
    for req in REQUIREMENTS:
        if req.command != command or not req.applies(params):
            continue
        missing = [pip for mod, pip in req.modules.items() if module_missing(mod)]
        if missing:
            return MissingExtraError(
                f"{req.describe(params)} needs {', '.join(missing)}: pip install 'edge-runtime[{req.extra}]'")
    return None


def guard_command(cmd: click.Command, command: str) -> click.Command:
    """Make ``cmd`` check the table before its body runs (once per command object)."""
    if cmd.callback is None or getattr(cmd, "_extras_guarded", False):
        return cmd
    if not any(r.command == command for r in REQUIREMENTS) and command not in BACKEND_COMMANDS:
        return cmd
    body = cmd.callback

    @functools.wraps(body)
    def checked(*args: Any, **kwargs: Any) -> Any:
        err = missing_for(command, kwargs)
        if err is not None:
            raise err
        return body(*args, **kwargs)

    cmd.callback = checked
    cmd._extras_guarded = True  # type: ignore[attr-defined]
    return cmd
