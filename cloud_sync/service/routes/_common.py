"""What several route modules declare alike: path parameters and the documented error answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path as PathParam

from .. import _schemas as S

__all__ = ["CHANNEL", "ERRORS", "NAME", "V2_ERRORS", "Channel", "ModelName", "Version"]

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
CHANNEL = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ModelName = Annotated[str, PathParam(pattern=NAME, description="model name")]
Channel = Annotated[str, PathParam(pattern=CHANNEL, description="channel name, e.g. stable or beta")]
Version = Annotated[int, PathParam(ge=1, le=2**31 - 1)]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": S.ErrorBody, "description": "bad request"},
    401: {"model": S.ErrorBody, "description": "missing or invalid token"},
    403: {"model": S.ErrorBody, "description": "token may not do this"},
    404: {"model": S.ErrorBody, "description": "not found"},
    422: {"model": S.ErrorBody, "description": "unusable input"},
}

#: the same answers on the Open Inference Protocol routes (/v2), whose error is a string
V2_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {**answer, "model": S.V2ErrorBody} for status, answer in ERRORS.items()}
