"""Production layout: two replicas sharing PostgreSQL and an S3-compatible object store (moto's
S3 server over HTTP). Whatever one replica did, the other sees: nothing lives in one process."""

from __future__ import annotations

import hashlib
from pathlib import Path

import boto3
import httpx
import pytest

from cloud_sync.service import ServiceSettings, StorageError
from cloud_sync.service._storage import S3Store
from edge_device.client import CloudClient, HTTPStatusError
from tests.support.keys import Keys
from tests.support.paths import SHARED as DATA
from tests.support.service import ADMIN_TOKEN, MakeSigned, NewDatabase, make_bucket, run_service


def _settings(tmp: Path, db: str, endpoint: str, bucket: str, keys: Keys) -> ServiceSettings:
    return ServiceSettings(data_dir=tmp, database_url=db, storage="s3", s3_bucket=bucket, s3_endpoint_url=endpoint,
                           s3_region="us-east-1", s3_access_key_id="testing", s3_secret_access_key="testing",
                           admin_token=ADMIN_TOKEN, trusted_keys=[keys.public])


def test_two_replicas_share_everything(tmp_path: Path, keys: Keys, make_signed: MakeSigned,
                                     postgres: NewDatabase, s3_endpoint: str) -> None:
    db = postgres()
    make_bucket(s3_endpoint, "bundles-a")
    with run_service(_settings(tmp_path / "a", db, s3_endpoint, "bundles-a", keys)) as a, \
            run_service(_settings(tmp_path / "b", db, s3_endpoint, "bundles-a", keys)) as b:
        admin_a = CloudClient(a.url, ADMIN_TOKEN, timeout=60)
        admin_b = CloudClient(b.url, ADMIN_TOKEN, timeout=60)
        rec = admin_a.publish(make_signed(1), channel="stable")
        # the bundle is in the bucket, not on a replica's disk
        s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
        keys_in_bucket = [o["Key"] for o in s3.list_objects_v2(Bucket="bundles-a")["Contents"]]
        assert keys_in_bucket == [f"bundles/mobilenet_v2/1/{rec['sha256']}.tar.gz"]
        assert not list((tmp_path / "a").rglob("*.tar.gz"))
        # replica B serves what A published: listing, ranged download, online inference
        assert admin_b.list_models()[0]["channels"] == {"stable": 1}
        full = make_signed(1).read_bytes()
        r = httpx.get(b.url + rec["url"], headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                   "Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == full[100:200]
        out = admin_b.download(rec["url"], tmp_path / "dl.tar.gz")
        assert hashlib.sha256(out.read_bytes()).hexdigest() == rec["sha256"]
        res = admin_b.classify(DATA / "images" / "potato_chips.png", "mobilenet_v2")
        assert res["top_k"][0]["label"] == "packet"
        # a device registered on A authenticates on B; revoked on B, refused on A
        dev = admin_a.register_device("pi-shared", model="mobilenet_v2")
        assert CloudClient(b.url, dev["token"]).check_update()["version"] == 1
        admin_b.promote("mobilenet_v2", "beta", 1)
        assert admin_a.model("mobilenet_v2")["channels"] == {"stable": 1, "beta": 1}
        admin_b.revoke_device("pi-shared")
        with pytest.raises(HTTPStatusError) as e:
            CloudClient(a.url, dev["token"]).check_update()
        assert e.value.status == 401


def test_s3_store_errors_are_wrapped(s3_endpoint: str, tmp_path: Path) -> None:
    make_bucket(s3_endpoint, "bundles-b")
    s = ServiceSettings(data_dir=tmp_path, storage="s3", s3_bucket="bundles-b", s3_endpoint_url=s3_endpoint,
                        s3_region="us-east-1", s3_access_key_id="testing", s3_secret_access_key="testing")
    store = S3Store(s)
    f = tmp_path / "blob"
    f.write_bytes(b"0123456789")
    store.put_file("m/1/x.tar.gz", f)
    assert store.exists("m/1/x.tar.gz")
    assert b"".join(store.iter_range("m/1/x.tar.gz", 2, 5)) == b"2345"
    assert not store.exists("m/1/missing.tar.gz")
    with pytest.raises(Exception) as e:
        store.iter_range("m/1/missing.tar.gz", 0, 1)
    assert e.value.__class__.__name__ == "NotFoundError"
    missing = S3Store(s.model_copy(update={"s3_bucket": "no-such-bucket"}))
    with pytest.raises(StorageError):
        missing.check()
