"""Profiles name backends as the runtime's registry does (profiles sit below the runtime and cannot
import the registry themselves, so this is where the one list is enforced)."""

from __future__ import annotations

import pytest

from device_profiles import Profile, list_profiles, load_profile
from edge_deploy import install_plan
from edge_runtime.backends import BACKEND_NAMES


@pytest.mark.parametrize("name", [p.name for p in list_profiles()])
def test_every_shipped_profile_names_registered_backends(name: str) -> None:
    profile = load_profile(name)
    unknown = [b for b in profile.backends if b not in BACKEND_NAMES]
    assert unknown == [], f"profile {name} names backends the runtime does not have: {unknown}"


def test_install_plan_follows_the_registry() -> None:
    # A 32-bit Pi: ai-edge-litert and onnxruntime publish no wheel there; tflite-runtime may stand in.
    armv7 = next(p for p in list_profiles() if p.arch == "armv7l")
    plan = install_plan(armv7)
    assert "tflite" not in plan.extras and "onnx" not in plan.extras
    assert ("tflite-runtime" in plan.optional_pip) == ("litert" in armv7.backends)
    pi64 = next(p for p in list_profiles() if p.arch == "aarch64" and "litert" in p.backends)
    assert "tflite" in install_plan(pi64).extras and "tflite-runtime" not in install_plan(pi64).optional_pip


def test_a_profile_backend_name_must_look_like_one() -> None:
    with pytest.raises(ValueError):
        Profile.from_dict({**load_profile(list_profiles()[0].name).to_dict(), "backends": ["Not A Name"]})
