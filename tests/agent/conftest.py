"""Fixtures of the agent tests: signed releases of the shared MobileNet V2 (good, expiring, signed
by another key, failing their health check, and a model that passes its health check but fails on
real frames) and a folder of real frames. Keys, Mosquitto and the service come from tests/support."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import edge_runtime
from edge_runtime import load_private_key
from tests.support.agent import FAR_FUTURE, IMAGES, LABELS, MODEL, NAME
from tests.support.keys import Keys
from tests.support.models import nan_model_onnx


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory, keys: Keys, other_keys: Keys) -> Callable[..., Path]:
    """``release(version, kind="good", key="release", expires=FAR_FUTURE)`` → a signed .tar.gz.

    kinds: ``good`` (MobileNet V2 with a cat sample whose top-1 is declared), ``bad-labels`` (its
    labels shifted by one: the declared sample top-1 no longer comes out), ``nan`` (``nan_model_onnx``, named
    like the release), ``unsigned``, ``no-samples``.
    """
    out = tmp_path_factory.mktemp("releases")
    labels = LABELS.read_text().splitlines()
    cache: dict[tuple[Any, ...], Path] = {}
    black = out / "black.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(black)

    def make(version: int, kind: str = "good", key: str = "release", expires: str | None = FAR_FUTURE,
             pad_bytes: int = 0) -> Path:
        k = (version, kind, key, expires, pad_bytes)
        if k in cache:
            return cache[k]
        priv = load_private_key((keys if key == "release" else other_keys)[0])
        target = out / f"{NAME}-v{version}-{kind}-{key}-{len(cache)}.tar.gz"
        extra: dict[str, Any] = {"samples/cat.png": IMAGES / "cat.png"}
        if pad_bytes:
            extra["extra/pad.bin"] = np.random.default_rng(version).bytes(pad_bytes)  # incompressible
        metrics = {"sample_top1": {"samples/cat.png": "Egyptian cat"}}
        common: dict[str, Any] = dict(name=NAME, version=version, expires=expires, overwrite=True,
                                      sign_key=None if kind == "unsigned" else priv)
        if kind == "nan":
            onnx_path = nan_model_onnx(out / f"nan-{version}.onnx")
            edge_runtime.make_bundle(onnx_path, target, labels=["dark", "bright"],
                                     preprocess={"size": (8, 8), "mean": [0.0], "std": [255.0]},
                                     postprocess={"softmax": False, "top_k": 1},
                                     samples=["samples/black.png"], extra_files={"samples/black.png": black},
                                     layouts=["NHWC"], **common)
        else:
            lab = [*labels[1:], "(none)"] if kind == "bad-labels" else labels
            edge_runtime.make_bundle(MODEL, target, labels=lab, preprocess={"size": (224, 224)},
                                     samples=[] if kind == "no-samples" else ["samples/cat.png"],
                                     extra_files=extra, metrics=metrics, **common)
        cache[k] = target
        return target

    return make


@pytest.fixture()
def images_dir(tmp_path: Path) -> Path:
    """The four reference images and the eleven tomato leaves: fifteen real frames."""
    d = tmp_path / "frames"
    d.mkdir()
    for p in [*sorted(IMAGES.glob("*.png")), *sorted((IMAGES / "leaves").iterdir())]:
        (d / p.name).symlink_to(p)
    return d
