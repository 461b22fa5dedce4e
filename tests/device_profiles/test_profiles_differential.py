"""Profile and DetectRules are stdlib records (device_profiles.checked), not pydantic models, so that
a device's run imports no pydantic: here they are proven to accept, refuse and normalise profiles
exactly as the pydantic models they replaced (tests/support/pydantic_mirrors.py), on every shipped
profile and on hostile profiles made from them. What the device accepts is written down in
tests/support/differential.py."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from device_profiles import DetectRules, Profile, ProfileFormatError, profile_names, read_profile
from device_profiles._model import _data_dir
from tests.support import pydantic_mirrors as old
from tests.support.differential import assert_same, mutated, outcome_pydantic

SHIPPED: list[dict[str, Any]] = [
    {**tomllib.loads(_data_dir().joinpath(f"{name}.toml").read_text(encoding="utf-8")), "name": name}
    for name in profile_names()
]
KEYS = sorted({k for p in SHIPPED for k in p} | {k for p in SHIPPED for k in p.get("detect", {})})


@pytest.mark.parametrize("doc", SHIPPED, ids=[p["name"] for p in SHIPPED])
def test_shipped_profiles_read_the_same(doc: dict[str, Any]) -> None:
    assert assert_same(Profile, old.Profile, doc)[0] == "ok"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(SHIPPED, KEYS))
def test_hostile_profiles_are_judged_as_pydantic_judged_them(doc: Any) -> None:
    assert_same(Profile, old.Profile, doc)


@settings(max_examples=200, deadline=None)
@given(mutated([p["detect"] for p in SHIPPED if "detect" in p], KEYS))
def test_hostile_detect_tables_are_judged_as_pydantic_judged_them(doc: Any) -> None:
    assert_same(DetectRules, old.DetectRules, doc)


@pytest.mark.parametrize("key, value", [("threads", "4"), ("threads", 4.0), ("cpu_mhz", True),
                                        ("latency_budget_ms", "100"), ("memory_mb", "4096")])
def test_lax_coercions_are_refused(tmp_path: Path, key: str, value: Any) -> None:
    doc = {**SHIPPED[0], key: value}
    assert outcome_pydantic(old.Profile, doc, strict=False)[0] == "ok"  # the old lax device took it
    text = "\n".join(f"{k} = {_toml(v)}" for k, v in doc.items() if k not in ("name", "detect"))
    path = tmp_path / "board.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileFormatError, match=rf"board\.toml: {key}: Input should be a valid"):
        read_profile(path)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_nan_and_infinity_are_no_numbers(tmp_path: Path, value: str) -> None:
    text = "\n".join(f"{k} = {_toml(v)}" for k, v in SHIPPED[0].items() if k not in ("name", "detect"))
    path = tmp_path / "board.toml"
    path.write_text(text.replace("latency_budget_ms = ", f"latency_budget_ms = {value} #"), encoding="utf-8")
    with pytest.raises(ProfileFormatError, match=r"board\.toml: latency_budget_ms: Input should be a finite number"):
        read_profile(path)
