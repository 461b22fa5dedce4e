"""The one exception hierarchy of ``edge_runtime``.

Every error the runtime raises on purpose is an :class:`EdgeError`; errors from third-party
libraries (LiteRT, onnxruntime, OpenCV, Pillow, cryptography, sqlite3) are wrapped at the
boundary with ``raise ... from exc`` so callers only ever catch this tree::

    EdgeError
    ├── BundleError                 a bundle cannot be used
    │   ├── ManifestError           manifest.json missing, not JSON, or not schema-valid
    │   ├── IntegrityError          a file's size or sha256 differs from the manifest, or is missing
    │   ├── SignatureError          signature missing, malformed, or not made by the trusted key
    │   └── UnsafeArchiveError      a .tar.gz entry would land outside the target directory
    ├── ModelError                  the model file itself cannot be read or described
    ├── BackendError                a backend cannot serve the request
    │   ├── BackendUnavailableError its library is not installed (says which pip install fixes it)
    │   └── InferenceError          the backend failed while running the model
    ├── InputError                  an input does not fit the model (shape, channels, dtype)
    │   └── DecodeError             an image or data row cannot be decoded
    ├── SourceError                 a source cannot be opened or read
    ├── SinkError                   a sink cannot be opened or written
    └── KeyFileError                a key file is missing or malformed

Messages name the file or value at fault and, where one exists, the fix, so the CLI can print
them as they are on one line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "BundleError",
    "DecodeError",
    "EdgeError",
    "InferenceError",
    "InputError",
    "IntegrityError",
    "KeyFileError",
    "ManifestError",
    "ModelError",
    "SignatureError",
    "SinkError",
    "SourceError",
    "UnsafeArchiveError",
]


class EdgeError(Exception):
    """Base of every error raised on purpose by edge_runtime."""


class BundleError(EdgeError):
    """A bundle (directory or .tar.gz) cannot be used."""


class ManifestError(BundleError):
    """manifest.json is missing, unreadable, or does not follow the schema."""


class IntegrityError(BundleError):
    """A bundle file is missing or its size/sha256 differs from the manifest."""


class SignatureError(BundleError):
    """The manifest signature is missing, malformed, or not made by the trusted key."""


class UnsafeArchiveError(BundleError):
    """An archive entry would be written outside the extraction directory."""


class ModelError(EdgeError):
    """A model file cannot be read or described (truncated, wrong format, corrupt)."""


class BackendError(EdgeError):
    """A backend cannot serve the request."""


class BackendUnavailableError(BackendError):
    """The backend's library is not installed; the message says how to install it."""


class InferenceError(BackendError):
    """The backend raised while running the model."""


class InputError(EdgeError):
    """An input does not fit the model: wrong shape, channel count or dtype."""


class DecodeError(InputError):
    """An image or tabular row cannot be decoded."""


class SourceError(EdgeError):
    """A source (file, directory, camera, stream) cannot be opened or read."""


class SinkError(EdgeError):
    """A sink (file, database, outbox) cannot be opened or written."""


class KeyFileError(EdgeError):
    """A signing or verification key file is missing or malformed."""


def first_line(exc: BaseException, *, last: bool = False, typed: bool = False) -> str:
    """One line of a third-party error for our own messages.

    Native libraries put the useful line first (onnxruntime, LiteRT) or last (OpenCV's C++
    traceback: ``last=True``); a SQLAlchemy error's driver error (``.orig``) is what names the cause.
    ``typed=True`` puts the error's class name in front.
    """
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    line = (lines[-1] if last else lines[0]) if lines else ""
    if typed:
        return f"{type(inner).__name__}: {line}"
    return line or type(inner).__name__


def describe_validation_error(exc: Any, what: str, *, where: str | None = None, limit: int = 5,
                              model: type[Any] | None = None,
                              origins: Mapping[tuple[str, ...], str] | None = None,
                              show_values: bool = False) -> str:
    """pydantic's ValidationError (or a record's :class:`device_profiles.checked.Invalid`, which has
    the same ``errors()``) as one line naming each bad key (the first ``limit``): the one
    formatter of validation errors above ``device_profiles`` (settings, config files, the agent's
    config).

    ``where`` (a file name) goes in front. With ``model`` (the validated class), keys are described
    against it: an unknown key gets the closest known one (``did you mean ...?``) or the list of
    known keys, a missing one says it is required. ``show_values`` echoes the value given, never
    for a key whose name says it is a secret (token, password, secret). ``origins`` maps a key
    (or its parent) to the environment variable it came from, named after the problem.
    """
    problems = []
    for err in exc.errors()[:limit]:
        loc = tuple(str(p) for p in err["loc"])
        kind = err["type"]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if model is not None and kind == "extra_forbidden":
            msg = "unknown key" + suggest_key(model, loc)
        elif model is not None and kind == "missing":
            msg = "missing (required)"
        if show_values and kind not in ("missing", "extra_forbidden") and loc \
                and not any(s in loc[-1] for s in _SECRET_WORDS) and not isinstance(err.get("input"), dict):
            msg += f" (got {err.get('input')!r})"
        sources = [var for oloc, var in (origins or {}).items() if loc[:len(oloc)] == oloc]
        if sources:
            msg += f" [from {sources[-1]}]"
        problems.append(f"{'.'.join(loc) or what}: {msg}")
    more = f" (+{exc.error_count() - limit} more)" if exc.error_count() > limit else ""
    return (f"{where}: " if where else "") + f"invalid {what}: " + "; ".join(problems) + more


_SECRET_WORDS = ("token", "password", "secret")

_M = TypeVar("_M")


def validated(model: type[_M], data: Mapping[str, Any], what: str, error: type[Exception], *,
              where: str | None = None) -> _M:
    """``model.model_validate(data)`` (a pydantic model) or ``model.from_dict(data)`` (a record of
    device_profiles.checked), its validation error raised as ``error`` with the message of
    :func:`describe_validation_error` (settings objects' ``build``, settings files)."""
    from device_profiles.checked import Checked, Invalid

    if issubclass(model, Checked):
        try:
            return model.from_dict(data)
        except Invalid as exc:
            raise error(describe_validation_error(exc, what, where=where)) from exc
    from pydantic import ValidationError

    try:
        return model.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError as exc:
        raise error(describe_validation_error(exc, what, where=where)) from exc


def suggest_key(model: type[Any], loc: tuple[str, ...]) -> str:
    """For an unknown key at ``loc`` of ``model`` (a pydantic model or a device_profiles record): the
    known key it is closest to, or all of them. List positions and dict keys in ``loc`` are passed
    over (``inputs.0.nme`` is a TensorSpec's key)."""
    import difflib

    inner: type[Any] | None = model
    container = False
    for part in loc[:-1]:
        if container:  # the position in a list or the key in a dict
            container = False
            continue
        if inner is None:
            break
        inner, container = _nested_model(inner, part)
    keys = _model_keys(inner) if inner is not None and not container else None
    if not keys:
        return ""
    close = difflib.get_close_matches(loc[-1], keys, n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (known keys: {', '.join(keys)})"


def _model_keys(model: type[Any]) -> list[str] | None:
    from device_profiles.checked import Checked

    if issubclass(model, Checked):
        return model.field_names()
    fields = getattr(model, "model_fields", None)
    return list(fields) if isinstance(fields, dict) else None


def _nested_model(model: type[Any], key: str) -> tuple[type[Any] | None, bool]:
    """The model (class) of ``model``'s field ``key`` when that field holds one (``X | None`` too),
    and whether it holds them in a list or dict."""
    import typing

    from device_profiles.checked import Checked

    if issubclass(model, Checked):
        ann = model.field_type(key)
    else:
        field = getattr(model, "model_fields", {}).get(key)
        ann = field.annotation if field is not None else None
    container = typing.get_origin(ann) in (list, tuple, dict)
    for c in typing.get_args(ann) or (ann,):
        if isinstance(c, type) and (issubclass(c, Checked) or hasattr(c, "model_fields")):
            return c, container
    return None, False
