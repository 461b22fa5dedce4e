"""`edge devices add|list|revoke` as subprocesses against the real service under uvicorn."""

from __future__ import annotations

import json

import pytest

from edge_device.client import CloudClient, HTTPStatusError
from tests.support.cli import edge_against as edge
from tests.support.net import free_port
from tests.support.service import Running


def test_add_list_revoke(service: Running) -> None:
    url = service.url
    r = edge("devices", "add", "cam-1", "--channel", "beta", "--model", "mobilenet_v2", "--json", url=url)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert (rec["id"], rec["channel"], rec["model"], rec["revoked"]) == ("cam-1", "beta", "mobilenet_v2", False)
    token = rec["token"]
    assert len(token) >= 20 and "shown only once" in r.stderr

    # The printed token is a working device token.
    me = CloudClient(url, token, timeout=10).whoami()
    assert (me["id"], me["channel"]) == ("cam-1", "beta")
    assert "token" not in me

    r = edge("devices", "list", "--json", url=url)
    assert r.returncode == 0, r.stderr
    listed = {d["id"]: d for d in json.loads(r.stdout)}
    assert listed["cam-1"]["model"] == "mobilenet_v2" and listed["cam-1"]["revoked"] is False
    assert all("token" not in d for d in listed.values())
    r = edge("devices", "list", url=url)
    row = next(line for line in r.stdout.splitlines() if line.startswith("cam-1 "))
    assert "beta" in row and "mobilenet_v2" in row and "never" in row

    r = edge("devices", "revoke", "cam-1", "--json", url=url)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["revoked"] is True
    with pytest.raises(HTTPStatusError) as refused:
        CloudClient(url, token, timeout=10).whoami()
    assert (refused.value.status, refused.value.code) == (401, "revoked")
    r = edge("devices", "list", url=url)
    assert next(line for line in r.stdout.splitlines() if line.startswith("cam-1 ")).endswith("revoked")


def test_add_prints_the_token_once_in_text(service: Running) -> None:
    r = edge("devices", "add", "cam-text", url=service.url)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "registered device cam-text (channel stable, model none)"
    token = lines[1].removeprefix("token: ")
    assert "shown only once" in r.stdout
    assert "no --model" in r.stderr
    assert CloudClient(service.url, token, timeout=10).whoami()["id"] == "cam-text"
    # Nothing afterwards shows it again.
    assert token not in edge("devices", "list", "--json", url=service.url).stdout


def test_duplicate_add_is_a_clear_error(service: Running) -> None:
    assert edge("devices", "add", "cam-dup", url=service.url).returncode == 0
    r = edge("devices", "add", "cam-dup", "--json", url=service.url)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == (f"error: a device 'cam-dup' is already registered at {service.url} "
                                "(HTTP 409 device_exists); its token cannot be shown again: register the "
                                "device under another name")


def test_errors_name_the_problem(service: Running) -> None:
    url = service.url
    r = edge("devices", "revoke", "nobody", url=url)
    assert r.returncode == 1 and "no device 'nobody' is registered" in r.stderr and "HTTP 404" in r.stderr

    r = edge("devices", "list", url=url, token="not-the-admin-token")
    assert r.returncode == 1 and "refused the token (HTTP 401" in r.stderr
    assert "not-the-admin-token" not in r.stderr

    device_token = json.loads(edge("devices", "add", "cam-403", "--json", url=url).stdout)["token"]
    r = edge("devices", "add", "cam-other", url=url, token=device_token)
    assert r.returncode == 1 and "not the service's admin token (HTTP 403" in r.stderr

    r = edge("devices", "add", "bad/name", url=url)
    assert r.returncode == 1 and "HTTP 422" in r.stderr and "Traceback" not in r.stderr

    dead = f"http://127.0.0.1:{free_port()}"
    r = edge("devices", "list", url=dead)
    assert r.returncode == 1 and f"cannot reach the cloud service at {dead}" in r.stderr
    assert "Traceback" not in r.stderr

    r = edge("devices", "list", url=url, token=None)
    assert r.returncode == 2 and "Missing option '--token'" in r.stderr
