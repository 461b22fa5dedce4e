"""Where bundle archives live: a local directory (embedded default) or an S3-compatible object
store through boto3 (production; MinIO, AWS S3, Ceph ...).

Keys are derived from model name, version and content hash, and an object is never rewritten, so
replicas and caches never see a half-written or changed bundle.
"""

from __future__ import annotations

import logging
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._errors import NotFoundError, StorageError
from ._settings import ServiceSettings

__all__ = ["BlobStore", "LocalStore", "S3Store", "open_store"]

log = logging.getLogger(__name__)

CHUNK = 1 << 20


class BlobStore(ABC):
    """Immutable blobs by key."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Store ``path`` under ``key`` (atomically: readers see all of it or nothing)."""

    @abstractmethod
    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        """Bytes ``start``..``end`` inclusive of ``key``, in chunks."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def get_to_file(self, key: str, dest: Path, size: int) -> None:
        tmp = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as f:
            for chunk in self.iter_range(key, 0, size - 1):
                f.write(chunk)
        os.replace(tmp, dest)

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise StorageError if the store cannot be used (readiness)."""


class LocalStore(BlobStore):
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        # Keys are built by the registry from validated names, but check anyway: a key must
        # never reach outside the store.
        p = (self.root / key).resolve()
        if self.root.resolve() not in p.parents:
            raise StorageError(f"storage key {key!r} escapes the store", code="bad_storage_key")
        return p

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.part")
        try:
            shutil.copyfile(path, tmp)
            with tmp.open("rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StorageError(f"cannot write bundle to {target}: {exc.strerror}") from exc

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        p = self._path(key)
        try:
            f = p.open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"bundle data for {key!r} is missing from the store", code="blob_missing") from exc
        except OSError as exc:
            raise StorageError(f"cannot read {p}: {exc.strerror}") from exc
        return self._chunks(f, start, end)

    @staticmethod
    def _chunks(f: Any, start: int, end: int) -> Iterator[bytes]:
        with f:
            f.seek(start)
            left = end - start + 1
            while left > 0:
                data = f.read(min(CHUNK, left))
                if not data:
                    break
                left -= len(data)
                yield data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"bundle directory {self.root} is not writable")


class S3Store(BlobStore):
    """An S3-compatible bucket. boto3/botocore errors become StorageError/NotFoundError here."""

    def __init__(self, settings: ServiceSettings) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise StorageError("storage = 's3' needs boto3: pip install boto3") from exc
        assert settings.s3_bucket is not None  # the settings validator guarantees it
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        self._client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret,
            config=Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3}),
        )

    def _errors(self) -> tuple[type[BaseException], ...]:
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError)

    def _wrap(self, exc: BaseException, key: str) -> Exception:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "") if hasattr(exc, "response") else ""
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFoundError(f"bundle data for {key!r} is missing from the object store", code="blob_missing")
        return StorageError(f"object store error on {key!r}: {exc.__class__.__name__}: {exc}")

    def put_file(self, key: str, path: Path) -> None:
        try:
            self._client.upload_file(str(path), self.bucket, self.prefix + key)
        except self._errors() as exc:
            raise self._wrap(exc, key) from exc

    def iter_range(self, key: str, start: int, end: int) -> Iterator[bytes]:
        try:
            obj = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key, Range=f"bytes={start}-{end}")
        except self._errors() as exc:
            raise self._wrap(exc, key) from exc
        return self._stream(obj["Body"], key)

    def _stream(self, body: Any, key: str) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(CHUNK)
        except self._errors() as exc:
            raise self._wrap(exc, key) from exc
        finally:
            body.close()

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except self._errors() as exc:
            wrapped = self._wrap(exc, key)
            if isinstance(wrapped, NotFoundError):
                return False
            raise wrapped from exc
        return True

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        except self._errors() as exc:
            raise self._wrap(exc, key) from exc

    def check(self) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except self._errors() as exc:
            raise StorageError(f"object store bucket {self.bucket!r} is not reachable: {exc}") from exc


def open_store(settings: ServiceSettings) -> BlobStore:
    if settings.storage == "s3":
        return S3Store(settings)
    return LocalStore(settings.resolved_storage_dir)
