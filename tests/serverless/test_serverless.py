"""The serverless hosts: the AWS Lambda handler on events in AWS's documented shapes (API Gateway
REST proxy, HTTP API v2, Function URL), with a signed bundle from (moto's) S3, and the Google Cloud
Functions entry point served by the real functions-framework in a subprocess."""

from __future__ import annotations

import base64
import copy
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.data import MOBILENET_TOP1
from tests.support.keys import Keys
from tests.support.net import free_port, port_open, wait_for
from tests.support.paths import ROOT

# -- events, as AWS documents them (bodies and ids replaced per test) ---------------------------------
# https://docs.aws.amazon.com/apigateway/latest/developerguide/set-up-lambda-proxy-integrations.html
API_GATEWAY_V1 = json.loads("""{
  "resource": "/predict", "path": "/predict", "httpMethod": "POST",
  "headers": {"Accept": "*/*", "Content-Type": "image/png", "Host": "1234567890.execute-api.us-east-1.amazonaws.com",
              "User-Agent": "curl/8.5.0", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Port": "443",
              "X-Forwarded-Proto": "https"},
  "multiValueHeaders": {"Accept": ["*/*"], "Content-Type": ["image/png"],
                        "Host": ["1234567890.execute-api.us-east-1.amazonaws.com"]},
  "queryStringParameters": null, "multiValueQueryStringParameters": null, "pathParameters": null,
  "stageVariables": null,
  "requestContext": {"accountId": "123456789012", "apiId": "1234567890", "resourceId": "abc123", "stage": "prod",
                     "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "extendedRequestId": "JvfVaG0OoAMFQyQ=",
                     "identity": {"sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0", "accountId": null,
                                  "caller": null, "user": null, "userArn": null},
                     "resourcePath": "/predict", "httpMethod": "POST", "path": "/prod/predict",
                     "protocol": "HTTP/1.1", "requestTime": "09/Apr/2015:12:34:56 +0000",
                     "requestTimeEpoch": 1428582896000, "domainName": "1234567890.execute-api.us-east-1.amazonaws.com"},
  "body": null, "isBase64Encoded": true
}""")

# https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
HTTP_API_V2 = json.loads("""{
  "version": "2.0", "routeKey": "POST /predict", "rawPath": "/predict", "rawQueryString": "",
  "headers": {"accept": "*/*", "content-length": "0", "content-type": "application/json",
              "host": "r3pmxmplak.execute-api.us-east-2.amazonaws.com", "user-agent": "curl/8.5.0",
              "x-amzn-trace-id": "Root=1-5e6722a7-cc56xmpl46db7ae02d4da47e", "x-forwarded-for": "205.255.255.176",
              "x-forwarded-port": "443", "x-forwarded-proto": "https"},
  "requestContext": {"accountId": "123456789012", "apiId": "r3pmxmplak",
                     "domainName": "r3pmxmplak.execute-api.us-east-2.amazonaws.com", "domainPrefix": "r3pmxmplak",
                     "http": {"method": "POST", "path": "/predict", "protocol": "HTTP/1.1",
                              "sourceIp": "205.255.255.176", "userAgent": "curl/8.5.0"},
                     "requestId": "JKJaXmPLvHcESHA=", "routeKey": "POST /predict", "stage": "$default",
                     "time": "10/Mar/2020:05:16:23 +0000", "timeEpoch": 1583817383220},
  "body": null, "isBase64Encoded": false
}""")

# https://docs.aws.amazon.com/lambda/latest/dg/urls-invocation.html#urls-payloads
FUNCTION_URL = json.loads("""{
  "version": "2.0", "routeKey": "$default", "rawPath": "/", "rawQueryString": "",
  "headers": {"content-type": "image/png", "host": "a1b2c3d4e5f6g7h8.lambda-url.us-west-2.on.aws",
              "x-amzn-tls-cipher-suite": "ECDHE-RSA-AES128-GCM-SHA256", "x-amzn-tls-version": "TLSv1.2",
              "x-amzn-trace-id": "Root=1-631ff6ac-2dd3a5e26c16f2a52a58b0fa", "x-forwarded-for": "203.0.113.7",
              "x-forwarded-port": "443", "x-forwarded-proto": "https", "user-agent": "curl/8.5.0"},
  "requestContext": {"accountId": "anonymous", "apiId": "a1b2c3d4e5f6g7h8",
                     "domainName": "a1b2c3d4e5f6g7h8.lambda-url.us-west-2.on.aws", "domainPrefix": "a1b2c3d4e5f6g7h8",
                     "http": {"method": "POST", "path": "/", "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7",
                              "userAgent": "curl/8.5.0"},
                     "requestId": "ff6bd73f-2da5-4d4b-a1d6-8d86e4f8b4c0", "routeKey": "$default",
                     "stage": "$default", "time": "13/Sep/2022:03:24:28 +0000", "timeEpoch": 1663039468000},
  "body": null, "isBase64Encoded": true
}""")


def event(template: dict[str, Any], body: bytes | str | None, *, b64: bool | None = None,
          content_type: str | None = None, method: str | None = None) -> dict[str, Any]:
    ev = copy.deepcopy(template)
    if isinstance(body, bytes):
        ev["body"], ev["isBase64Encoded"] = base64.b64encode(body).decode(), True
    else:
        ev["body"], ev["isBase64Encoded"] = body, False
    if b64 is not None:
        ev["isBase64Encoded"] = b64
    if content_type is not None:
        key = "Content-Type" if "httpMethod" in ev else "content-type"
        ev["headers"][key] = content_type
    if method is not None:
        if "httpMethod" in ev:
            ev["httpMethod"] = ev["requestContext"]["httpMethod"] = method
        else:
            ev["requestContext"]["http"]["method"] = method
    return ev


def oip_body(bundle: Path, image: Path) -> dict[str, Any]:
    from edge_runtime import Model, load_image

    with Model.load(bundle) as m:
        (t,) = m.preprocess(load_image(image))
        name = m.manifest.inputs[0].name
    return {"inputs": [{"name": name, "datatype": "UINT8", "shape": list(t.shape), "data": t.reshape(-1).tolist()}]}


# -- a signed bundle in S3 ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signed_archive(tmp_path_factory: pytest.TempPathFactory, mobilenet_bundle: Path, keys: Keys) -> Path:
    from edge_runtime import load_private_key, pack_bundle, sign_bundle

    d = tmp_path_factory.mktemp("signed")
    shutil.copytree(mobilenet_bundle, d / "mobilenet")
    sign_bundle(d / "mobilenet", load_private_key(keys.private))
    return pack_bundle(d / "mobilenet", d / "mobilenet.tar.gz")


@pytest.fixture(scope="module")
def s3_bucket(s3_endpoint: str, signed_archive: Path, mobilenet_bundle: Path) -> Iterator[str]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="test",
                      aws_secret_access_key="test")
    s3.create_bucket(Bucket="models")
    s3.upload_file(str(signed_archive), "models", "mobilenet_v2-1.tar.gz")
    for f in mobilenet_bundle.iterdir():  # the unsigned directory, as a prefix
        s3.upload_file(str(f), "models", f"unsigned/mobilenet/{f.name}")
    yield "models"


@pytest.fixture
def lambda_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str, s3_bucket: str, keys: Keys) -> Iterator[None]:
    from cloud_sync import serverless

    for k, v in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1", "EDGE_BUNDLE": f"s3://{s3_bucket}/mobilenet_v2-1.tar.gz",
                 "EDGE_BUNDLE_PUBKEY": str(keys.public)}.items():
        monkeypatch.setenv(k, v)
    serverless.unload()
    yield
    serverless.unload()


def answer(resp: dict[str, Any], status: int = 200) -> dict[str, Any]:
    assert resp["statusCode"] == status, resp
    assert resp["headers"]["Content-Type"] == "application/json"
    assert resp["isBase64Encoded"] is False
    doc: dict[str, Any] = json.loads(resp["body"])
    return doc


# -- AWS Lambda ----------------------------------------------------------------------------------------
def test_lambda_answers_every_event_shape_from_one_bundle_load(
        lambda_env: None, reference_images: dict[str, Path], mobilenet_bundle: Path) -> None:
    from cloud_sync import serverless

    cat = reference_images["cat.png"].read_bytes()
    rec = answer(serverless.lambda_handler(event(API_GATEWAY_V1, cat), None))
    assert rec["top_k"][0]["label"] == "Egyptian cat"
    assert rec["source"] == "lambda:c6af9ac6-7b61-11e6-9a41-93e8deadbeef"
    assert rec["model"] == {"name": "mobilenet_v2", "version": 1} and rec["path"] == "local"
    assert serverless.load_stats["signed"] is True
    host = serverless.get_host()

    body = json.dumps(oip_body(mobilenet_bundle, reference_images["grace_hopper.png"]))
    rec = answer(serverless.lambda_handler(event(HTTP_API_V2, body), None))
    assert rec["top_k"][0]["label"] == "military uniform"

    for name, path in reference_images.items():
        rec = answer(serverless.lambda_handler(event(FUNCTION_URL, path.read_bytes()), None))
        assert rec["top_k"][0]["label"] == MOBILENET_TOP1[name]
    assert serverless.get_host() is host  # loaded once, at the first request

    info = answer(serverless.lambda_handler(event(HTTP_API_V2, None, method="GET"), None))
    assert info["model"]["name"] == "mobilenet_v2" and info["model"]["inputs"][0]["shape"] == [1, 224, 224, 3]


def test_lambda_bad_requests_are_4xx_json(lambda_env: None, mobilenet_bundle: Path,
                                          reference_images: dict[str, Path]) -> None:
    from cloud_sync.serverless import lambda_handler

    err = answer(lambda_handler(event(FUNCTION_URL, b"\x89PNG but truncated"), None), 400)["error"]
    assert err["code"] == "bad_image" and "image" in err["message"]

    wrong = oip_body(mobilenet_bundle, reference_images["cat.png"])
    wrong["inputs"][0]["shape"] = [1, 224, 224]
    err = answer(lambda_handler(event(HTTP_API_V2, json.dumps(wrong)), None), 400)["error"]
    assert err["code"] == "bad_shape" and "[1, 224, 224, 3]" in err["message"]

    err = answer(lambda_handler(event(HTTP_API_V2, "{\"inputs\": ["), None), 400)["error"]
    assert err["code"] == "bad_json"
    err = answer(lambda_handler(event(API_GATEWAY_V1, "not base64!", b64=True), None), 400)["error"]
    assert err["code"] == "bad_base64"
    # A REST API without binary media types hands the image over as text: say what to configure.
    err = answer(lambda_handler(event(API_GATEWAY_V1, "\ufffdPNG\r\n", b64=False), None), 400)["error"]
    assert "binaryMediaTypes" in err["message"]
    err = answer(lambda_handler(event(API_GATEWAY_V1, None), None), 400)["error"]
    assert err["code"] == "empty_body"
    resp = lambda_handler(event(HTTP_API_V2, "{}", method="DELETE"), None)
    assert answer(resp, 405)["error"]["code"] == "method_not_allowed"


def test_lambda_direct_invocation(lambda_env: None, reference_images: dict[str, Path]) -> None:
    from cloud_sync.serverless import lambda_handler

    img = base64.b64encode(reference_images["sunflower.png"].read_bytes()).decode()
    assert lambda_handler({"image": img}, None)["top_k"][0]["label"] == "daisy"
    assert lambda_handler({"hello": 1}, None)["error"]["code"] == "bad_event"


def test_a_bundle_the_key_did_not_sign_is_refused(lambda_env: None, monkeypatch: pytest.MonkeyPatch,
                                                  s3_bucket: str, reference_images: dict[str, Path]) -> None:
    from cloud_sync import serverless

    monkeypatch.setenv("EDGE_BUNDLE", f"s3://{s3_bucket}/unsigned/mobilenet/")
    resp = serverless.lambda_handler(event(FUNCTION_URL, reference_images["cat.png"].read_bytes()), None)
    err = answer(resp, 500)["error"]
    assert err["code"] == "bundle_unavailable" and "sign" in err["message"].lower(), err
    # Without a key the same prefix is downloaded and served.
    monkeypatch.delenv("EDGE_BUNDLE_PUBKEY")
    rec = answer(serverless.lambda_handler(event(FUNCTION_URL, reference_images["cat.png"].read_bytes()), None))
    assert rec["top_k"][0]["label"] == "Egyptian cat"
    assert serverless.load_stats["signed"] is False


def test_the_bundle_in_the_package_directory_is_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            mobilenet_bundle: Path,
                                                            reference_images: dict[str, Path]) -> None:
    from cloud_sync import serverless

    shutil.copytree(mobilenet_bundle, tmp_path / "bundle")
    monkeypatch.delenv("EDGE_BUNDLE", raising=False)
    monkeypatch.delenv("EDGE_BUNDLE_PUBKEY", raising=False)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", str(tmp_path))
    serverless.unload()
    try:
        rec = answer(serverless.lambda_handler(event(FUNCTION_URL, reference_images["cat.png"].read_bytes()), None))
        assert rec["top_k"][0]["label"] == "Egyptian cat"
        shutil.rmtree(tmp_path / "bundle")
        serverless.unload()
        err = answer(serverless.lambda_handler(event(FUNCTION_URL, b"x"), None), 500)["error"]
        assert "EDGE_BUNDLE" in err["message"]
    finally:
        serverless.unload()


# -- Google Cloud Functions: the real functions-framework --------------------------------------------
@pytest.fixture(scope="module")
def gcf_url(tmp_path_factory: pytest.TempPathFactory, mobilenet_bundle: Path) -> Iterator[str]:
    d = tmp_path_factory.mktemp("gcf")
    (d / "main.py").write_text("from cloud_sync.serverless import http_predict as predict\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "LAMBDA_"))}
    env.update({"EDGE_BUNDLE": str(mobilenet_bundle), "PYTHONPATH": str(ROOT)})
    log = (d / "ff.log").open("w")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("functions-framework")), "--source",
                             str(d / "main.py"), "--target", "predict", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 120, "functions-framework")
        assert proc.poll() is None, (d / "ff.log").read_text()
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(30)


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            assert r.headers["Content-Type"] == "application/json"
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["Content-Type"] == "application/json"
        return exc.code, json.loads(exc.read())


def test_cloud_function_answers_an_image_and_a_json_tensor(gcf_url: str, reference_images: dict[str, Path],
                                                           mobilenet_bundle: Path) -> None:
    status, rec = post(gcf_url, reference_images["potato_chips.png"].read_bytes(), "image/png")
    assert status == 200 and rec["top_k"][0]["label"] == "packet", rec
    assert rec["source"].startswith("gcf:")
    body = json.dumps(oip_body(mobilenet_bundle, reference_images["cat.png"])).encode()
    status, rec = post(gcf_url, body, "application/json")
    assert status == 200 and rec["top_k"][0]["label"] == "Egyptian cat", rec
    assert rec["latency_ms"]["preprocess"] == 0.0


def test_cloud_function_bad_requests_are_4xx_json(gcf_url: str) -> None:
    status, doc = post(gcf_url, b"GIF89a... not really", "image/gif")
    assert status == 400 and doc["error"]["code"] == "bad_image"
    status, doc = post(gcf_url, b'{"inputs": [{"name": "nope", "datatype": "UINT8", "shape": [1], "data": [1]}]}',
                       "application/json")
    assert status == 400 and doc["error"]["code"] == "unknown_input" and "nope" in doc["error"]["message"]


def test_rest_api_headers_may_come_only_as_multi_value_headers(lambda_env: None, mobilenet_bundle: Path,
                                                               reference_images: dict[str, Path]) -> None:
    from cloud_sync.serverless import lambda_handler

    body = json.dumps(oip_body(mobilenet_bundle, reference_images["sunflower.png"]))
    ev = event(API_GATEWAY_V1, body)
    ev["headers"] = None
    ev["multiValueHeaders"] = {"Content-Type": ["application/json"]}
    assert answer(lambda_handler(ev, None))["top_k"][0]["label"] == "daisy"


_PRELOAD = """
import base64, json, sys
from cloud_sync.serverless import load_stats
assert not load_stats
import cloud_sync.serverless.lambda_function as fn
loaded = dict(load_stats)  # at import: Lambda's init phase
r = fn.lambda_handler({"image": base64.b64encode(open(sys.argv[1], "rb").read()).decode()}, None)
print(json.dumps({"loaded_at_import": bool(loaded), "label": r["top_k"][0]["label"]}))
"""


def test_the_preloading_handler_loads_the_bundle_at_import(mobilenet_bundle: Path,
                                                           reference_images: dict[str, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "LAMBDA_"))}
    env.update({"EDGE_BUNDLE": str(mobilenet_bundle), "PYTHONPATH": str(ROOT)})
    proc = subprocess.run([sys.executable, "-c", _PRELOAD, str(reference_images["cat.png"])], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"loaded_at_import": True, "label": "Egyptian cat"}


def test_cloud_function_get_describes_the_model(gcf_url: str) -> None:
    with urllib.request.urlopen(gcf_url, timeout=120) as r:
        doc = json.loads(r.read())
    assert doc["model"]["name"] == "mobilenet_v2" and doc["model"]["inputs"][0]["datatype"] == "UINT8"
