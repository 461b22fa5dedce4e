"""HTTP plumbing shared by the routes: bounded body reading, Range parsing, error bodies."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.requests import Request

from ._errors import BadRequestError, PayloadTooLargeError, RangeNotSatisfiableError

__all__ = ["content_type", "parse_range", "read_limited", "spool_limited"]

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_MAX_DIGITS = 18


def content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _declared_length(request: Request, limit: int, what: str) -> None:
    cl = request.headers.get("content-length")
    if cl is not None:
        try:
            n = int(cl)
        except ValueError:
            raise BadRequestError("Content-Length is not a number", code="bad_header") from None
        if n > limit:
            raise PayloadTooLargeError(f"{what} is {n} bytes; the limit is {limit}")


async def read_limited(request: Request, limit: int, what: str = "request body") -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit``, whatever Content-Length said."""
    _declared_length(request, limit, what)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise PayloadTooLargeError(f"{what} is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def spool_limited(request: Request, dest: Path, limit: int, what: str = "upload") -> int:
    """Stream the body into ``dest`` (never all in memory), refusing (413) past ``limit``."""
    _declared_length(request, limit, what)
    total = 0
    with dest.open("wb") as f:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise PayloadTooLargeError(f"{what} is larger than the limit of {limit} bytes")
            f.write(chunk)
    return total


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single ``bytes=`` range, None for "send everything".

    Multiple ranges and other units are ignored (RFC 9110 lets a server do that); a range that
    starts past the end is a 416.
    """
    if header is None:
        return None
    m = _RANGE.match(header.strip().replace(" ", ""))
    if m is None:
        return None
    a, b = m.groups()
    if a == "" and b == "":
        return None
    # Positions are bounded before int() sees them: Python refuses to convert more than 4300
    # digits, and no object is anywhere near 10**18 bytes.
    if a == "":  # suffix: the last b bytes
        n = int(b) if len(b) <= _MAX_DIGITS else size
        if n == 0:
            raise RangeNotSatisfiableError("a zero-length suffix range selects nothing", size=size)
        return max(0, size - n), size - 1
    if len(a) > _MAX_DIGITS:
        raise RangeNotSatisfiableError(f"range start {a[:24]}... is outside the {size}-byte bundle", size=size)
    start = int(a)
    end = int(b) if b and len(b) <= _MAX_DIGITS else size - 1
    if start >= size or (b and end < start):
        raise RangeNotSatisfiableError(f"range {header[:64]} is outside the {size}-byte bundle", size=size)
    return start, min(end, size - 1)
