"""Property-based tests from the OpenAPI schema (schemathesis), against the real service:
no 5xx for anything generated, every 4xx is a JSON error, and every protected endpoint refuses
an anonymous call. Bounded (few examples per operation) so it runs in about a minute."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from cloud_sync.service import ServiceSettings
from edge_device.client import CloudClient
from tests.support.errors import error_of
from tests.support.keys import Keys
from tests.support.service import ADMIN_TOKEN, MakeSigned, Running, run_service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, keys: Keys, make_signed: MakeSigned) -> Iterator[Running]:
    settings_ = ServiceSettings(data_dir=tmp_path_factory.mktemp("svc-fuzz"), admin_token=ADMIN_TOKEN,
                                trusted_keys=[keys.public], max_upload_bytes=8 * 1024 * 1024)
    with run_service(settings_) as running:
        admin = CloudClient(running.url, ADMIN_TOKEN, timeout=60)
        admin.publish(make_signed(1), channel="stable")
        admin.register_device("pi-fuzz", model="mobilenet_v2")
        yield running


@pytest.fixture(scope="module")
def api_schema(service: Running) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(service.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")
# Bundle uploads and images are raw bytes: generate them like any binary body.
schemathesis.serializer.alias(["application/gzip", "image/jpeg", "image/png"], "application/octet-stream")


def _json_error_if_4xx(case: schemathesis.Case, response: schemathesis.Response) -> None:
    status = response.status_code
    if 400 <= status < 500 and case.method != "HEAD":  # HEAD answers carry no body
        body = response.json()
        if case.path.startswith("/v2"):  # the Open Inference Protocol's form: a string, the code in a header
            assert isinstance(body["error"], str) and body["error"], body
            assert response.headers["edge-error-code"], body
        else:
            assert set(body["error"]) >= {"code", "message"}, body


@schema.parametrize()
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_no_server_errors_with_admin_token(case: schemathesis.Case, service: Running) -> None:
    response = case.call(base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
    _json_error_if_4xx(case, response)


@schema.parametrize()
@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_protected_endpoints_refuse_anonymous_calls(case: schemathesis.Case, service: Running) -> None:
    response = case.call(base_url=service.url, timeout=60)
    case.validate_response(response, checks=[not_a_server_error])
    # (schemathesis also tries undeclared methods, e.g. TRACE, which get a 405 before any auth)
    if case.operation.definition.raw.get("security") and case.method.upper() == case.operation.method.upper():
        assert response.status_code == 401, (case.method, case.path, response.status_code, response.text[:200])
        if case.method != "HEAD":
            assert error_of(response)["code"] in ("missing_token", "invalid_token")


def test_the_schema_marks_every_non_public_route_as_protected(service: Running) -> None:
    doc = httpx.get(service.url + "/openapi.json").json()
    public = {"/v2", "/v2/health/live", "/v2/health/ready", "/metrics"}
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path in public:
                assert not op.get("security"), (method, path)
            else:
                assert op.get("security"), f"{method.upper()} {path} is not marked as needing a token"
    page = httpx.get(service.url + "/docs")
    assert page.status_code == 200
    # The API page works offline: Swagger UI comes from the service itself, not a CDN.
    assert "/docs-assets/swagger-ui-bundle.js" in page.text and "cdn." not in page.text
    js = httpx.get(service.url + "/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
