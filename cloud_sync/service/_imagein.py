"""Images arriving over HTTP: a raw ``image/*`` body or a multipart form field ``image``."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from edge_runtime import MAX_IMAGE_PIXELS

from ._errors import BadRequestError, UnprocessableError, UnsupportedMediaTypeError
from ._http import content_type, read_limited

__all__ = ["decode_image", "image_from_request"]


async def image_from_request(request: Request, limit: int) -> bytes:
    ctype = content_type(request)
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        data = await read_limited(request, limit, "image")
    elif ctype == "multipart/form-data":
        body = await read_limited(request, limit + 64 * 1024, "form")
        data = await _form_image(request, body)
    else:
        raise UnsupportedMediaTypeError(f"send the image as image/jpeg, image/png ... or as multipart field "
                                        f"'image', not {ctype or 'no content type'}")
    if not data:
        raise BadRequestError("the image is empty (0 bytes)", code="empty_image")
    return data


def replay_request(request: Request, body: bytes) -> Request:
    """The request again, with ``body`` (already read and size-checked) as its whole body, so
    Starlette's form parser can run on it without reading the socket a second time."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(request.scope, receive)


async def _form_image(request: Request, body: bytes) -> bytes:
    replay = replay_request(request, body)
    try:
        async with replay.form(max_files=1, max_fields=8) as form:
            field = form.get("image")
            if not isinstance(field, UploadFile):
                raise BadRequestError("multipart body has no file field 'image'", code="missing_image")
            return await field.read()
    except (ValueError, KeyError, AssertionError) as exc:
        raise BadRequestError(f"multipart body cannot be parsed: {exc}", code="bad_multipart") from exc


def decode_image(data: bytes) -> np.ndarray:
    """Decode like ``edge_runtime.load_image`` does for files, so cloud and device see the same pixels."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise UnprocessableError(f"image is {im.width}x{im.height}, more than {MAX_IMAGE_PIXELS} pixels",
                                         code="image_too_large")
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError as exc:
        raise UnprocessableError("the body is not an image Pillow can read (JPEG, PNG, ...)", code="bad_image") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnprocessableError(f"the image is corrupt or truncated ({exc})", code="bad_image") from exc
