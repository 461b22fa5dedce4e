"""Batch inputs: what to run on (``list_inputs``) and reading one input's bytes (``InputReader``).

A source is a directory, a glob pattern, a list file (``.txt``/``.lst``/``.list``: one local path,
``s3://`` or ``http(s)://`` URL a line; ``#`` starts a comment), or an S3 prefix
(``s3://bucket/prefix``). Every input has a *key*, the string the output rows are keyed by: the
absolute path of a local file, the URL of anything else. Listing happens once, in the driver;
reading happens where the model runs (a Ray actor or the local loop), so that a cluster's workers
fetch their own inputs.
"""

from __future__ import annotations

import glob as _glob
import io
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import MAX_IMAGE_PIXELS, DecodeError, load_image

from ._errors import BatchError

__all__ = ["LIST_SUFFIXES", "InputItem", "InputReader", "list_inputs", "split_s3_url"]

log = logging.getLogger(__name__)

#: a source file with one of these suffixes is a list of inputs, one a line
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list"})
_HTTP_TIMEOUT_S = 30.0
_MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class InputItem:
    """One input: its ``key`` (the rows' source key) and its position in the listing (``frame``)."""

    key: str
    frame: int


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    rest = url[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise BatchError(f"{url!r}: an S3 URL needs a bucket (s3://bucket/prefix)")
    return bucket, key


def s3_client(endpoint_url: str | None) -> Any:
    """A boto3 S3 client; ``endpoint_url`` (or AWS_ENDPOINT_URL) points at MinIO, moto or another
    S3-compatible store."""
    try:
        import boto3
    except ImportError as exc:
        raise BatchError("S3 sources need boto3: pip install 'edge-runtime[batch]'") from exc
    return boto3.client("s3", endpoint_url=endpoint_url or os.environ.get("AWS_ENDPOINT_URL") or None)


def list_inputs(source: str, *, s3_endpoint_url: str | None = None, recursive: bool = False) -> list[InputItem]:
    """Every input of ``source``, sorted, each key once. A source that lists nothing is an error
    (an empty run would look like success); a missing file *named in a list* is not: it becomes
    an error row when it is read."""
    if source.startswith("s3://"):
        keys = _list_s3(source, s3_endpoint_url)
    else:
        p = Path(source)
        if p.is_dir():
            files = p.rglob("*") if recursive else p.iterdir()
            keys = [os.path.abspath(f) for f in files
                    if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts)]
        elif any(ch in source for ch in "*?["):
            keys = [os.path.abspath(f) for f in _glob.glob(source, recursive=True) if os.path.isfile(f)]
            if not keys:
                raise BatchError(f"{source}: the pattern matches no file")
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            keys = _read_list(p)
        elif p.is_file():
            keys = [os.path.abspath(p)]
        else:
            raise BatchError(f"{source}: no such file or directory (sources: a directory, a glob pattern, "
                             "a list file .txt/.lst/.list, or s3://bucket/prefix)")
    unique = sorted(set(keys))
    if len(unique) != len(keys):
        log.info("%s: %d duplicate input(s) listed once", source, len(keys) - len(unique))
    if not unique:
        raise BatchError(f"{source}: no inputs")
    return [InputItem(key, i) for i, key in enumerate(unique)]


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"{path}: cannot read the list file ({exc})") from exc
    keys = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        keys.append(entry if "://" in entry else os.path.abspath(entry))
    return keys


def _list_s3(url: str, endpoint_url: str | None) -> list[str]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_url(url)
    client = s3_client(endpoint_url)
    keys: list[str] = []
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", [])
                        if not obj["Key"].endswith("/"))
    except (BotoCoreError, ClientError) as exc:
        raise BatchError(f"{url}: cannot list the S3 prefix ({exc})") from exc
    return keys


class InputReader:
    """Reads and decodes one input to an RGB array; every failure is a ``DecodeError`` naming the
    input, which the caller turns into an error row. Holds one S3 client, made on first use."""

    def __init__(self, s3_endpoint_url: str | None = None) -> None:
        self.s3_endpoint_url = s3_endpoint_url
        self._s3: Any = None

    def image(self, key: str) -> np.ndarray:
        if key.startswith("s3://"):
            return _decode(key, self._read_s3(key))
        if key.startswith(("http://", "https://")):
            return _decode(key, self._read_http(key))
        if "://" in key:
            raise DecodeError(f"{key}: unsupported URL scheme (local paths, s3:// and http(s):// are read)")
        return load_image(key)

    def _read_s3(self, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, name = split_s3_url(key)
        if self._s3 is None:
            self._s3 = s3_client(self.s3_endpoint_url)
        try:
            obj = self._s3.get_object(Bucket=bucket, Key=name)
            if obj.get("ContentLength", 0) > _MAX_DOWNLOAD_BYTES:
                raise DecodeError(f"{key}: larger than {_MAX_DOWNLOAD_BYTES} bytes")
            data: bytes = obj["Body"].read()
            return data
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise DecodeError(f"{key}: no such S3 object") from exc
            raise DecodeError(f"{key}: cannot read from S3 ({code or exc})") from exc
        except BotoCoreError as exc:
            raise DecodeError(f"{key}: cannot read from S3 ({exc})") from exc

    def _read_http(self, key: str) -> bytes:
        try:
            with urllib.request.urlopen(key, timeout=_HTTP_TIMEOUT_S) as resp:  # http(s) only: checked above
                data: bytes = resp.read(_MAX_DOWNLOAD_BYTES + 1)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DecodeError(f"{key}: cannot download ({exc})") from exc
        if len(data) > _MAX_DOWNLOAD_BYTES:
            raise DecodeError(f"{key}: larger than {_MAX_DOWNLOAD_BYTES} bytes")
        return data


def _decode(key: str, data: bytes) -> np.ndarray:
    """``load_image`` for bytes: the same checks and messages, naming the input's key."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise DecodeError(f"{key}: {im.width}x{im.height} is larger than {MAX_IMAGE_PIXELS} pixels")
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError as exc:
        raise DecodeError(f"{key}: not an image Pillow can read") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"{key}: image is corrupt or truncated ({exc})") from exc


def iter_chunks(items: list[InputItem], size: int) -> Iterator[list[InputItem]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
