"""Where a serverless function finds its bundle, loaded once per cold start.

``EDGE_BUNDLE`` names it: a directory or ``.tar.gz`` (relative paths are read from the function's
package directory: ``LAMBDA_TASK_ROOT`` on AWS, the working directory elsewhere), or an
``s3://bucket/key.tar.gz`` object or ``s3://bucket/prefix/`` of a bundle directory, downloaded with
boto3 into ``/tmp`` (its endpoint and credentials from the usual AWS variables, ``AWS_ENDPOINT_URL``
included). Unset, ``bundle/`` or ``bundle.tar.gz`` in the package directory is used.

``EDGE_BUNDLE_PUBKEY`` (a PEM file path, relative like the bundle, or the PEM text itself), when
set, makes the signature mandatory: a bundle it did not sign is refused.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from edge_runtime import EdgeError, PublicKey, load_public_key

from .._host import BundleHost, HostError

__all__ = ["BUNDLE_ENV", "DEFAULT_NAMES", "PUBKEY_ENV", "get_host", "load_host", "load_stats", "package_dir", "unload"]

log = logging.getLogger(__name__)

BUNDLE_ENV = "EDGE_BUNDLE"
PUBKEY_ENV = "EDGE_BUNDLE_PUBKEY"
#: looked for in the package directory when EDGE_BUNDLE is not set
DEFAULT_NAMES = ("bundle", "bundle.tar.gz")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")

_host: BundleHost | None = None
_lock = threading.Lock()
#: how the current host was loaded: seconds per step, where from (for logs and benchmarks)
load_stats: dict[str, Any] = {}


def package_dir() -> Path:
    return Path(os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd())


def get_host() -> BundleHost:
    """The bundle of this function instance, loaded at the first call (the cold start) only."""
    global _host
    host = _host
    if host is not None:
        return host
    with _lock:
        if _host is None:
            _host = load_host()
        return _host


def unload() -> None:
    """Forget the loaded bundle (the next call loads it again): for tests and benchmarks."""
    global _host
    with _lock:
        if _host is not None:
            _host.close()
        _host = None
        load_stats.clear()


def load_host(spec: str | None = None, pubkey: str | None = None) -> BundleHost:
    """Fetch (if remote), verify and load the bundle that ``spec`` (default ``EDGE_BUNDLE``) names."""
    t0 = time.perf_counter()
    spec = spec if spec is not None else os.environ.get(BUNDLE_ENV) or None
    pubkey = pubkey if pubkey is not None else os.environ.get(PUBKEY_ENV) or None
    path = _fetch_s3(spec) if spec and spec.startswith("s3://") else _local(spec)
    t1 = time.perf_counter()
    keys = [_public_key(pubkey)] if pubkey else None
    host = BundleHost.open(path, pubkey=keys)
    t2 = time.perf_counter()
    load_stats.clear()
    load_stats.update({"bundle": spec or str(path), "fetch_s": round(t1 - t0, 4), "load_s": round(t2 - t1, 4),
                       "signed": keys is not None})
    log.info("bundle %s loaded: %s", spec or path, load_stats)
    return host


def _local(spec: str | None) -> Path:
    base = package_dir()
    if spec:
        p = Path(spec)
        p = p if p.is_absolute() else base / p
        if not p.exists():
            raise HostError(f"{BUNDLE_ENV}={spec}: no such bundle ({p})")
        return p
    for name in DEFAULT_NAMES:
        if (base / name).exists():
            return base / name
    raise HostError(f"no bundle: set {BUNDLE_ENV} to a path or s3:// URL, or put one of "
                    f"{', '.join(DEFAULT_NAMES)} in {base}")


def _public_key(value: str) -> PublicKey:
    try:
        if value.lstrip().startswith("-----BEGIN"):
            with tempfile.NamedTemporaryFile("w", suffix=".pub", delete=False) as f:
                f.write(value)
            try:
                return load_public_key(f.name)
            finally:
                os.unlink(f.name)
        p = Path(value)
        return load_public_key(p if p.is_absolute() else package_dir() / p)
    except EdgeError as exc:
        raise HostError(f"{PUBKEY_ENV}: {exc}") from exc


def _fetch_s3(url: str) -> Path:
    try:
        import boto3
        import botocore.exceptions
    except ImportError as exc:  # in Lambda's runtime boto3 is always there; elsewhere it is the [cloud] extra
        raise HostError(f"{BUNDLE_ENV}={url} needs boto3: pip install boto3") from exc
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket or not key:
        raise HostError(f"{BUNDLE_ENV}={url}: expected s3://BUCKET/KEY.tar.gz or s3://BUCKET/PREFIX/")
    dest = Path(tempfile.mkdtemp(prefix="edge-bundle-"))
    s3 = boto3.client("s3")
    try:
        if key.endswith(_ARCHIVE_SUFFIXES):
            out = dest / Path(key).name
            s3.download_file(bucket, key, str(out))
            return out
        prefix = key.rstrip("/") + "/"
        n = 0
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(prefix):]
                if not rel or rel.endswith("/"):
                    continue
                target = (dest / rel).resolve()
                if dest.resolve() not in target.parents:
                    raise HostError(f"{url}: object {obj['Key']!r} would land outside the bundle directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, obj["Key"], str(target))
                n += 1
        if n == 0:
            raise HostError(f"{BUNDLE_ENV}={url}: no objects under that prefix")
        return dest
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise HostError(f"cannot download the bundle {url}: {exc}") from exc
