"""The Open Inference Protocol as NVIDIA's tritonclient speaks it: the real service under uvicorn,
driven by ``tritonclient.http`` (sync, geventhttpclient) and ``tritonclient.http.aio`` (aiohttp),
with JSON and binary tensors both ways, versioned routes, gzip/deflate request bodies, and
errors that tritonclient can print. MobileNet V2 must give the reference top-1 labels."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as th
import tritonclient.http.aio as tha
from tritonclient.utils import InferenceServerException

import edge_runtime
from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient
from tests.support.data import MOBILENET_TOP1
from tests.support.keys import Keys
from tests.support.service import ADMIN_TOKEN, MakeSigned, Running, run_service

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
MODEL = "mobilenet_v2"


def auth() -> dict[str, str]:
    """A new headers dict for every call: tritonclient writes Inference-Header-Content-Length and
    Content-Encoding into the dict it is given, so a shared one carries them into the next call."""
    return dict(AUTH)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, keys: Keys, make_signed: MakeSigned) -> Iterator[Running]:
    settings = ServiceSettings(data_dir=tmp_path_factory.mktemp("svc-triton"), admin_token=ADMIN_TOKEN,
                               trusted_keys=[keys.public], max_batch_wait_ms=1)
    with run_service(settings) as running:
        CloudClient(running.url, ADMIN_TOKEN, timeout=120).publish(make_signed(1), channel="stable")
        yield running


@pytest.fixture(scope="module")
def local(make_signed: MakeSigned) -> Iterator[edge_runtime.Model]:
    """The same bundle in this process: what the service must answer."""
    model = edge_runtime.Model.load(make_signed(1), threads=1)
    yield model
    model.close()


@pytest.fixture(scope="module")
def images(local: edge_runtime.Model, reference_images: dict[str, Path]) -> dict[str, np.ndarray]:
    return {name: local.preprocess(edge_runtime.load_image(path))[0] for name, path in reference_images.items()}


def _host(service: Running) -> str:
    return service.url.removeprefix("http://")


def _inputs(x: np.ndarray, binary: bool, cls: type = th.InferInput) -> list:
    inp = cls("input", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=binary)
    return [inp]


def test_sync_client_json_and_binary_both_ways(service: Running, local: edge_runtime.Model,
                                               images: dict[str, np.ndarray], imagenet_labels: list[str]) -> None:
    out_name = local.manifest.outputs[0].name
    with th.InferenceServerClient(_host(service), network_timeout=120) as client:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL, headers=auth())
        meta = client.get_model_metadata(MODEL, headers=auth())
        assert meta["inputs"][0]["datatype"] == "UINT8" and meta["outputs"][0]["name"] == out_name
        for name, x in images.items():
            want = local.infer([x])[0]
            for binary_in in (False, True):
                # no outputs named: tritonclient asks for every output in binary (binary_data_output)
                res = client.infer(MODEL, _inputs(x, binary_in), headers=auth())
                assert res.get_output(out_name)["parameters"]["binary_data_size"] == want.nbytes
                np.testing.assert_array_equal(res.as_numpy(out_name), want)
                for binary_out in (False, True):
                    res = client.infer(MODEL, _inputs(x, binary_in), headers=auth(),
                                       outputs=[th.InferRequestedOutput(out_name, binary_data=binary_out)])
                    got = res.as_numpy(out_name)
                    assert ("data" in res.get_output(out_name)) is not binary_out
                    np.testing.assert_array_equal(got, want)
                    assert got.dtype == np.uint8 and got.shape == (1, 1001)
            # the real image's top-1 through the service is the reference label
            assert imagenet_labels[int(res.as_numpy(out_name)[0].argmax())] == MOBILENET_TOP1[name]


def test_aio_client_json_and_binary(service: Running, local: edge_runtime.Model,
                                    images: dict[str, np.ndarray], imagenet_labels: list[str]) -> None:
    out_name = local.manifest.outputs[0].name

    async def run() -> dict[tuple[str, bool, bool], np.ndarray]:
        got = {}
        async with tha.InferenceServerClient(_host(service), conn_timeout=120) as client:
            assert await client.is_model_ready(MODEL, "1", headers=auth())
            for name, x in images.items():
                for binary_in in (False, True):
                    for binary_out in (False, True):
                        res = await client.infer(MODEL, _inputs(x, binary_in, tha.InferInput), headers=auth(),
                                                 outputs=[tha.InferRequestedOutput(out_name, binary_data=binary_out)])
                        got[name, binary_in, binary_out] = res.as_numpy(out_name)
            # concurrent callers (batched by the service) each get their own answer
            xs = list(images.items()) * 3
            many = await asyncio.gather(*(client.infer(MODEL, _inputs(x, True, tha.InferInput), headers=auth())
                                          for _, x in xs))
            for (name, _), res in zip(xs, many, strict=True):
                got[name, True, True] = res.as_numpy(out_name)
        return got

    got = asyncio.run(run())
    for (name, _, _), arr in got.items():
        np.testing.assert_array_equal(arr, local.infer([images[name]])[0])
        assert imagenet_labels[int(arr[0].argmax())] == MOBILENET_TOP1[name]


def test_versioned_routes_and_request_id(service: Running, local: edge_runtime.Model,
                                         images: dict[str, np.ndarray]) -> None:
    x = images["cat.png"]
    with th.InferenceServerClient(_host(service), network_timeout=120) as client:
        assert client.is_model_ready(MODEL, "1", headers=auth())
        assert not client.is_model_ready(MODEL, "7", headers=auth())
        assert not client.is_model_ready("no_such_model", headers=auth())
        assert client.get_model_metadata(MODEL, "1", headers=auth())["parameters"]["version"] == 1
        res = client.infer(MODEL, _inputs(x, True), model_version="1", headers=auth(), request_id="req-42")
        assert res.get_response()["id"] == "req-42"
        assert res.get_response()["model_version"] == "1"
        np.testing.assert_array_equal(res.as_numpy(local.manifest.outputs[0].name), local.infer([x])[0])
        # no id in the request: none in the answer (not "id": null)
        assert "id" not in client.infer(MODEL, _inputs(x, False), headers=auth()).get_response()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(service: Running, local: edge_runtime.Model, images: dict[str, np.ndarray],
                             algorithm: str) -> None:
    x = images["sunflower.png"]
    want = local.infer([x])[0]
    out_name = local.manifest.outputs[0].name
    with th.InferenceServerClient(_host(service), network_timeout=120) as client:
        for binary in (False, True):
            res = client.infer(MODEL, _inputs(x, binary), headers=auth(), request_compression_algorithm=algorithm,
                               response_compression_algorithm=algorithm)
            np.testing.assert_array_equal(res.as_numpy(out_name), want)

    async def run() -> np.ndarray:
        async with tha.InferenceServerClient(_host(service), conn_timeout=120) as client:
            res = await client.infer(MODEL, _inputs(x, False, tha.InferInput), headers=auth(),
                                     request_compression_algorithm=algorithm,
                                     response_compression_algorithm=algorithm)
            return res.as_numpy(out_name)

    np.testing.assert_array_equal(asyncio.run(run()), want)


def test_errors_are_strings_tritonclient_can_print(service: Running, images: dict[str, np.ndarray]) -> None:
    with th.InferenceServerClient(_host(service), network_timeout=120) as client:
        with pytest.raises(InferenceServerException) as e:
            client.infer("no_such_model", _inputs(images["cat.png"], True), headers=auth())
        assert e.value.status() == "404"
        assert "no_such_model" in str(e.value) and "decoding" not in str(e.value)
        wrong = np.zeros((1, 100, 100, 3), np.uint8)
        for binary in (False, True):
            with pytest.raises(InferenceServerException) as e:
                client.infer(MODEL, _inputs(wrong, binary), headers=auth())
            assert e.value.status() == "400"
            assert "[1, 100, 100, 3]" in str(e.value) and "224" in str(e.value), str(e.value)
        with pytest.raises(InferenceServerException) as e:
            client.get_model_metadata(MODEL, headers={"Authorization": "Bearer wrong"})
        assert e.value.status() == "401" and "token" in str(e.value)

    async def run() -> str:
        async with tha.InferenceServerClient(_host(service), conn_timeout=120) as client:
            try:
                await client.infer(MODEL, _inputs(wrong, False, tha.InferInput), headers=auth())
            except InferenceServerException as exc:
                return str(exc)
        return ""

    assert "224" in asyncio.run(run())
    # on the wire: the protocol's {"error": "<string>"}, the code in a header
    r = httpx.post(f"{service.url}/v2/models/{MODEL}/infer", headers=auth(), timeout=60,
                   json={"inputs": [{"name": "input", "shape": [1, 2], "datatype": "UINT8", "data": [1, 2]}]})
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    assert r.headers["edge-error-code"] == "bad_shape"
    r = httpx.get(f"{service.url}/v2/models/{MODEL}/versions/abc/ready", headers=auth())
    assert r.status_code == 422 and isinstance(r.json()["error"], str)
    # outside /v2 the service's own form stays
    r = httpx.get(f"{service.url}/api/v1/models/nope", headers=auth())
    assert r.json()["error"]["code"]


def test_raw_protocol_edges(service: Running, images: dict[str, np.ndarray]) -> None:
    """What tritonclient does not exercise: a gzip body with the binary layout, a corrupt or
    bomb-sized compressed body, a Content-Encoding the service does not speak."""
    x = images["cat.png"]
    head = (b'{"inputs":[{"name":"input","shape":[1,224,224,3],"datatype":"UINT8",'
            b'"parameters":{"binary_data_size":150528}}],"parameters":{"binary_data_output":true}}')
    r = httpx.post(f"{service.url}/v2/models/{MODEL}/infer", content=gzip.compress(head + x.tobytes()), timeout=60,
                   headers={**AUTH, "Content-Encoding": "gzip", "Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200, r.text
    n = int(r.headers["inference-header-content-length"])
    meta = httpx.Response(200, content=r.content[:n]).json()
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == len(r.content) - n == 1001
    # the answer compressed as asked (httpx asks for gzip and inflates it), or not at all
    assert r.headers["content-encoding"] == "gzip"
    for accept, encoding in (("deflate", "deflate"), ("identity", None), ("br", None)):
        plain = httpx.post(f"{service.url}/v2/models/{MODEL}/infer", content=head + x.tobytes(), timeout=60,
                           headers={**AUTH, "Accept-Encoding": accept,
                                    "Inference-Header-Content-Length": str(len(head))})
        assert plain.headers.get("content-encoding") == encoding and plain.content == r.content
    bad = httpx.post(f"{service.url}/v2/models/{MODEL}/infer", content=b"not gzip at all", timeout=60,
                     headers={**AUTH, "Content-Encoding": "gzip"})
    assert bad.status_code == 400 and bad.headers["edge-error-code"] == "bad_encoding"
    bomb = gzip.compress(b" " * (300 * 1024 * 1024))
    big = httpx.post(f"{service.url}/v2/models/{MODEL}/infer", content=bomb, timeout=60,
                     headers={**AUTH, "Content-Encoding": "gzip"})
    assert big.status_code == 413
    odd = httpx.post(f"{service.url}/v2/models/{MODEL}/infer", content=b"{}", timeout=60,
                     headers={**AUTH, "Content-Encoding": "br"})
    assert odd.status_code == 415 and isinstance(odd.json()["error"], str)


def test_classification_extension(service: Running, local: edge_runtime.Model, images: dict[str, np.ndarray],
                                  imagenet_labels: list[str]) -> None:
    """``InferRequestedOutput(..., class_count=k)``: the top k as Triton writes them,
    "<value>:<index>:<label>", in JSON or binary BYTES."""
    out_name = local.manifest.outputs[0].name
    with th.InferenceServerClient(_host(service), network_timeout=120) as client:
        for name, x in images.items():
            raw = local.infer([x])[0][0]
            for binary in (False, True):
                res = client.infer(MODEL, _inputs(x, True), headers=auth(),
                                   outputs=[th.InferRequestedOutput(out_name, binary_data=binary, class_count=3)])
                got = res.as_numpy(out_name)
                assert got.shape == (1, 3) and res.get_output(out_name)["datatype"] == "BYTES"
                top = [(e.decode() if isinstance(e, bytes) else e).split(":", 2) for e in got[0]]
                assert top[0][2] == MOBILENET_TOP1[name]
                for value, index, label in top:
                    assert int(value) == raw[int(index)] and label == imagenet_labels[int(index)]
                assert [int(v) for v, _, _ in top] == sorted(raw.tolist(), reverse=True)[:3]
