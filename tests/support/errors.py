"""The service's error answers, in either of its two forms: ``{"error": {"code", "message"}}``,
and on the Open Inference Protocol routes (/v2) the protocol's ``{"error": "<message>"}`` with the
code in the ``Edge-Error-Code`` header."""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR_CODE_HEADER", "error_of"]

ERROR_CODE_HEADER = "Edge-Error-Code"


def error_of(response: Any) -> dict[str, str]:
    """``{"code", "message"}`` of an error answer (an httpx or requests response), whichever form."""
    err = response.json()["error"]
    if isinstance(err, str):
        return {"code": _header(response.headers, ERROR_CODE_HEADER), "message": err}
    return dict(err)


def _header(headers: Any, name: str) -> str:
    # httpx and requests match names case-insensitively; schemathesis gives a plain dict of lists.
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value[0] if isinstance(value, list) else value)
    return ""
