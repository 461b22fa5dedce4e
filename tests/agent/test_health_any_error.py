"""Whatever a candidate model raises during its health check is a refusal of that version, never a
crash of the updater (which would fetch and try the same version again on every poll)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_device.agent import ModelOptions, UpdateRefused, health_check
from edge_runtime import Model, make_bundle, open_bundle


@pytest.fixture
def bundle_with_sample(tmp_path: Path, mobilenet_tflite: Path, imagenet_labels: list[str],
                       reference_images: dict[str, Path]) -> Path:
    sample = next(iter(reference_images.values()))
    return make_bundle(mobilenet_tflite, tmp_path / "b", name="mobilenet_v2", version=3, labels=imagenet_labels,
                       sample_files=[sample])


@pytest.mark.parametrize("error", [MemoryError(), RuntimeError("native library aborted"), ValueError("bad")])
def test_any_exception_while_predicting_a_sample_is_a_health_refusal(
        bundle_with_sample: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    def explode(self: Model, x: object) -> None:
        raise error

    monkeypatch.setattr(Model, "predict", explode)
    with pytest.raises(UpdateRefused) as info:
        health_check(open_bundle(bundle_with_sample), ModelOptions(threads=1))
    assert info.value.reason == "health"
    assert type(error).__name__ in str(info.value) and "version 3" in str(info.value)


def test_any_exception_while_loading_is_a_health_refusal(
        bundle_with_sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise MemoryError()

    monkeypatch.setattr(Model, "load", explode)
    with pytest.raises(UpdateRefused) as info:
        health_check(open_bundle(bundle_with_sample), ModelOptions(threads=1))
    assert info.value.reason == "health" and "MemoryError" in str(info.value)


def test_the_sample_still_passes_when_nothing_is_wrong(bundle_with_sample: Path) -> None:
    model = health_check(open_bundle(bundle_with_sample), ModelOptions(threads=1))
    assert model.manifest.version == 3
    model.close()
