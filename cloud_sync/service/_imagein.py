"""Images arriving over HTTP: a raw ``image/*`` body or a multipart form field ``image``."""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.types import Message

from edge_runtime import MAX_IMAGE_PIXELS

from ._errors import BadRequestError, UnprocessableError, UnsupportedMediaTypeError
from ._http import content_type, read_limited

__all__ = ["DECODE_LIMITS", "DecodeLimits", "decode_image", "image_from_request", "open_bounded"]


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


class DecodeLimits:
    """How large an image may be decoded (pixels its header declares) and how many decodes run at
    once in this process. The service sets it from its settings at start-up (``configure``)."""

    def __init__(self, max_pixels: int = 24_000_000, concurrent: int = 2) -> None:
        self.configure(max_pixels, concurrent)

    def configure(self, max_pixels: int, concurrent: int) -> None:
        self.max_pixels = min(max_pixels, MAX_IMAGE_PIXELS)
        self.slots = threading.BoundedSemaphore(concurrent)


#: the process-wide bounds (``Service.build`` configures them)
DECODE_LIMITS = DecodeLimits()


def open_bounded(data: bytes, *, target: tuple[int, int] | None = None,
                 limits: DecodeLimits | None = None) -> Image.Image:
    """``Image.open`` without decoding: refuse (422) an image whose header declares more pixels
    than the bound. A JPEG over the bound is set to decode reduced (``draft``, a power-of-two
    scale, never below ``target``) when that brings it under; anything else over it is refused."""
    lim = limits or DECODE_LIMITS
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise UnprocessableError("the body is not an image Pillow can read (JPEG, PNG, ...)", code="bad_image") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise UnprocessableError(f"the image is corrupt or truncated ({exc})", code="bad_image") from exc
    w, h = im.size
    if w * h > lim.max_pixels and im.format == "JPEG" and target is not None:
        tw, th = target
        # draft picks the largest reduction (1/2, 1/4, 1/8) that keeps the image >= the size asked
        im.draft("RGB", (max(tw, -(-w // 8)), max(th, -(-h // 8))))
    if im.size[0] * im.size[1] > lim.max_pixels:
        im.close()
        raise UnprocessableError(f"image is {w}x{h} ({w * h} pixels); this service decodes at most "
                                 f"{lim.max_pixels} pixels", code="image_too_large")
    return im


def decode_image(data: bytes, target: tuple[int, int] | None = None) -> np.ndarray:
    """Decode like ``edge_runtime.load_image`` does for files, so cloud and device see the same pixels
    (an image over the pixel bound is refused from its header; a huge JPEG is decoded reduced
    towards ``target``, the model's input size). At most ``max_concurrent_decodes`` run at once."""
    with DECODE_LIMITS.slots:
        im = open_bounded(data, target=target)
        try:
            with im:
                return np.asarray(im.convert("RGB"))
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise UnprocessableError(f"the image is corrupt or truncated ({exc})", code="bad_image") from exc
