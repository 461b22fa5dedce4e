"""A bundle made from the command line passes a device's DEFAULT update policy, and a refusal by
policy is not a verdict on the version.

Everything goes through the real `edge` command, as an operator types it: `edge keys generate`,
`edge bundle ... --sample --expires --sign-key`, `edge convert`, `edge sign`, `edge agent install`
with an agent.toml that says nothing about [updates] (every default in force).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from edge_device.agent import (
    POLICY_REASONS,
    REFUSAL_REASONS,
    VERDICT_REASONS,
    AgentConfig,
    UpdateRefused,
    check_rules,
    load_config,
)
from edge_runtime import load_private_key, load_public_key, make_bundle, open_bundle, pack_bundle, safe_extract

ROOT = Path(__file__).resolve().parents[2]
NAME = "mobilenet_v2"


def edge(*args: Any, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, "-m", "edge_cli", *[str(a) for a in args]], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=300)
    assert "Traceback" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_config(path: Path, *, bundle: Path, pubkey: Path, state: Path, source: Path,
                 updates: dict[str, Any] | None = None) -> Path:
    """An agent.toml with only what a device must say; [updates] only when a test relaxes it."""
    lines = [f"device_id = {toml_value('policy-1')}", f"state_dir = {toml_value(state)}", "",
             "[model]", f"bundle = {toml_value(bundle)}", f"trusted_keys = {toml_value([pubkey])}", "threads = 1", "",
             "[source]", f"spec = {toml_value(source)}", ""]
    if updates:
        lines += ["[updates]", *[f"{k} = {toml_value(v)}" for k, v in updates.items()], ""]
    path.write_text("\n".join(lines))
    return path


def status(config: Path) -> dict[str, Any]:
    r = edge("agent", "status", "--config", config, "--json", "--no-load", check=True)
    return dict(json.loads(r.stdout))


@pytest.fixture(scope="module")
def release_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    r = edge("keys", "generate", "--out", d, check=True)
    assert "edge_signing.key" in r.stdout
    return d / "edge_signing.key", d / "edge_signing.pub"


@pytest.fixture(scope="module")
def bundle_cli(tmp_path_factory: pytest.TempPathFactory, shared_data: Path, mobilenet_tflite: Path,
               release_keys: tuple[Path, Path]) -> Any:
    """``bundle_cli(version, *extra_args)`` → a .tar.gz made by `edge bundle` with the labels."""
    out = tmp_path_factory.mktemp("bundles")

    def make(version: int, *args: Any, tag: str = "") -> Path:
        target = out / f"{NAME}-v{version}{tag}.tar.gz"
        edge("bundle", mobilenet_tflite, "--labels", shared_data / "labels" / "imagenet_labels.txt", "--name", NAME,
             "--version", version, "--resize", "224x224", *args, "-o", target, "--force", check=True)
        return target

    return make


def test_a_cli_bundle_passes_the_default_policy_and_policy_refusals_are_not_verdicts(
        tmp_path: Path, shared_data: Path, mobilenet_tflite: Path, release_keys: tuple[Path, Path],
        bundle_cli: Any) -> None:
    priv, pub = release_keys
    cat = shared_data / "images" / "cat.png"
    good = ("--sample", cat, "--expires", "90d", "--sign-key", priv)
    v1 = bundle_cli(1, *good)
    m = open_bundle(v1, pubkey=load_public_key(pub)).manifest
    assert m.samples == ["samples/cat.png"] and "samples/cat.png" in m.files and m.expires is not None
    state, frames = tmp_path / "state", tmp_path / "frames"
    frames.mkdir()
    config = write_config(tmp_path / "agent.toml", bundle=v1, pubkey=pub, state=state, source=frames)
    cfg = load_config(config, environ={})
    assert cfg.updates.require_samples and cfg.updates.require_expiry  # the defaults are in force

    # the full journey: a signed CLI bundle with a sample and an expiry installs; its sample ran
    r = edge("-v", "agent", "install", bundle_cli(2, *good), "--config", config)
    assert r.returncode == 0, r.stderr
    assert "installed v2 (health check passed on 1 sample(s))" in r.stdout
    assert re.search(r"health check: version 2 answers 'Egyptian cat' \(0\.\d+\) on its sample samples/cat.png",
                     r.stderr), r.stderr

    # without samples: refused by policy, not remembered as bad; the same version fixed installs
    no_samples = bundle_cli(3, "--expires", "90d", "--sign-key", priv, tag="-nosamples")
    r = edge("agent", "install", no_samples, "--config", config)
    assert r.returncode == 1 and "refused (no-samples)" in r.stderr and "not marked bad" in r.stderr, r.stderr
    assert "3" not in status(config)["bad_versions"]
    r = edge("agent", "install", bundle_cli(3, *good), "--config", config)
    assert r.returncode == 0 and "installed v3" in r.stdout, r.stderr

    # without samples nor expiry: refused by each policy in turn; once the config allows it, installs
    bare = bundle_cli(4, "--sign-key", priv, tag="-bare")
    r = edge("agent", "install", bare, "--config", config)
    assert r.returncode == 1 and "refused (expired)" in r.stderr and "has no expiry date" in r.stderr, r.stderr
    write_config(config, bundle=v1, pubkey=pub, state=state, source=frames, updates={"require_expiry": False})
    r = edge("agent", "install", bare, "--config", config)
    assert r.returncode == 1 and "refused (no-samples)" in r.stderr, r.stderr
    st = status(config)
    assert "4" not in st["bad_versions"] and st["current"]["version"] == 3
    write_config(config, bundle=v1, pubkey=pub, state=state, source=frames,
                 updates={"require_expiry": False, "require_samples": False})
    r = edge("agent", "install", bare, "--config", config)
    assert r.returncode == 0 and "installed v4" in r.stdout, r.stderr

    # a tampered bundle stays refused, however relaxed the policy: a hash mismatch is a verdict
    d = tmp_path / "tampered"
    safe_extract(bundle_cli(5, *good), d)
    labels = d / "labels.txt"
    labels.write_text(labels.read_text().replace("Egyptian cat", "Egyptian dog"))
    tampered = pack_bundle(d, tmp_path / "tampered-v5.tar.gz")
    for _ in range(2):
        r = edge("agent", "install", tampered, "--config", config)
        assert r.returncode == 1 and "refused (integrity)" in r.stderr and "not marked bad" not in r.stderr
    assert status(config)["current"]["version"] == 4

    # a failed health check is a verdict on the signed content: the version is bad for good, even
    # when a corrected bundle of it comes (made with the library, skipping the check at the source)
    broken = make_bundle(mobilenet_tflite, tmp_path / "broken-v5.tar.gz", name=NAME, version=5,
                         labels=(shared_data / "labels" / "imagenet_labels.txt").read_text().splitlines(),
                         preprocess={"size": (224, 224)}, samples=["samples/row.npy"], check_samples=False,
                         extra_files={"samples/row.npy": _npy(np.zeros(7, np.float32), tmp_path / "row.npy")},
                         expires="2099-01-01T00:00:00Z", sign_key=load_private_key(priv))
    r = edge("agent", "install", broken, "--config", config)
    assert r.returncode == 1 and "refused (health)" in r.stderr and "samples/row.npy" in r.stderr, r.stderr
    assert "5" in status(config)["bad_versions"]
    r = edge("agent", "install", bundle_cli(5, *good, tag="-fixed"), "--config", config)
    assert r.returncode == 1 and "refused (bad-version)" in r.stderr, r.stderr
    st = status(config)
    assert set(st["bad_versions"]) == {"5"} and st["current"]["version"] == 4


def _npy(arr: np.ndarray, path: Path) -> Path:
    np.save(path, arr, allow_pickle=False)
    return path


def test_bad_samples_and_expiries_are_clear_errors_at_bundle_time(tmp_path: Path, shared_data: Path,
                                                                   mobilenet_tflite: Path) -> None:
    base = [mobilenet_tflite, "--labels", shared_data / "labels" / "imagenet_labels.txt"]
    junk = tmp_path / "photo.jpg"
    junk.write_bytes(b"this is no JPEG")
    cases: list[tuple[list[Any], str, str]] = [
        (["--sample", junk], "--sample", "photo.jpg: not an image Pillow can read"),
        (["--sample", tmp_path / "missing.png"], "--sample", "missing.png: no such file"),
        (["--sample", _npy(np.zeros(7, np.float32), tmp_path / "row.npy")], "--sample",
         "sample samples/row.npy: the model cannot run it"),
        (["--sample", tmp_path / "notes.txt"], "--sample", "unknown sample type '.txt'"),
        (["--expires", "2020-01-01"], "--expires", "is in the past"),
        (["--expires", "soon"], "--expires", "write a duration such as 90d"),
        (["--expires", "0d"], "--expires", "must be positive"),
    ]
    (tmp_path / "notes.txt").write_text("hello")
    for i, (args, param, text) in enumerate(cases):
        out = tmp_path / f"out-{i}"
        r = edge("bundle", *base, *args, "-o", out)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert f"Invalid value for {param}" in r.stderr and text in r.stderr, (args, r.stderr)
        assert not out.exists(), args  # nothing half-made is left behind
    # a bundle the default policy will refuse is made, with a note saying why
    r = edge("bundle", *base, "-o", tmp_path / "plain")
    assert r.returncode == 0
    assert "note: devices with the default update policy will refuse this bundle; add --sign-key, --sample, " \
           "--expires" in r.stderr


def test_edge_convert_bundles_pass_the_default_policy(tmp_path: Path, release_keys: tuple[Path, Path]) -> None:
    import joblib
    from sklearn.datasets import load_wine
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    priv, pub = release_keys
    x, y = load_wine(return_X_y=True)
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[::2], y[::2]),
                tmp_path / "wine.joblib")
    np.savez(tmp_path / "heldout.npz", x=x[1::2], y=y[1::2])
    bundles = []
    for version in (1, 2):
        out = tmp_path / f"out-v{version}"
        r = edge("convert", tmp_path / "wine.joblib", "--trust-pickle",
                 "--to", "onnx", "--eval", tmp_path / "heldout.npz",
                 "--runs", "2", "--version", version, "-o", out, "--json")
        assert r.returncode == 0, r.stderr
        report = json.loads(r.stdout)
        assert not [w for w in report["warnings"] if "update policy" in w], report["warnings"]
        b = out / "wine-onnx-float"
        m = open_bundle(b).manifest
        assert m.samples == ["samples/row-0.npy", "samples/row-1.npy", "samples/row-2.npy"]
        assert all(s in m.files for s in m.samples)
        assert m.expires is not None and m.expires > "2026"  # 365 days from now by default
        edge("sign", b, "--key", priv, check=True)
        bundles.append(b)
    frames = tmp_path / "rows"
    frames.mkdir()
    config = write_config(tmp_path / "agent.toml", bundle=bundles[0], pubkey=pub, state=tmp_path / "state",
                          source=frames)
    r = edge("agent", "install", bundles[1], "--config", config)
    assert r.returncode == 0, r.stderr
    assert "installed v2 (health check passed on 3 sample(s))" in r.stdout
    # --expires none and --samples 0 are allowed, and the report says what a device will do with them
    r = edge("convert", tmp_path / "wine.joblib", "--trust-pickle",
             "--to", "onnx", "--eval", tmp_path / "heldout.npz", "--runs", "2",
             "--samples", "0", "--expires", "none", "-o", tmp_path / "bare", "--json")
    assert r.returncode == 0, r.stderr
    warnings = json.loads(r.stdout)["warnings"]
    assert any("no samples (--samples 0)" in w for w in warnings) and any("no expiry" in w for w in warnings)
    m = open_bundle(tmp_path / "bare" / "wine-onnx-float").manifest
    assert m.samples == [] and m.expires is None
    r = edge("convert", tmp_path / "wine.joblib", "--trust-pickle",
             "--to", "onnx", "--expires", "2001-01-01", "-o", tmp_path / "x")
    assert r.returncode == 2 and "Invalid value for --expires" in r.stderr and "in the past" in r.stderr


def test_refusal_reasons_are_either_policy_or_verdict() -> None:
    assert set(POLICY_REASONS).isdisjoint(VERDICT_REASONS)
    assert set(REFUSAL_REASONS) == set(POLICY_REASONS) | set(VERDICT_REASONS)
    assert {"expired", "no-samples", "min-runtime"} <= set(POLICY_REASONS)
    assert {"signature", "integrity", "health", "downgrade", "bad-version"} <= set(VERDICT_REASONS)
    assert UpdateRefused("no-samples", "x").policy and not UpdateRefused("integrity", "x").policy
    with pytest.raises(ValueError, match="unknown refusal reason"):
        UpdateRefused("because", "x")


def test_a_bundle_for_a_newer_runtime_is_refused_by_policy(mobilenet_bundle: Path) -> None:
    b = open_bundle(mobilenet_bundle)
    rules: dict[str, Any] = dict(highest=0, bad={}, expected_name=None, require_expiry=False, require_samples=False)
    for ok in ("0.1", "0.1.0", "0.0.9"):
        check_rules(b.manifest.replace(min_runtime=ok), runtime_version="0.1.0", **rules)
    with pytest.raises(UpdateRefused, match="needs runtime 0.2.0rc1 or newer, this device has 0.1.0") as e:
        check_rules(b.manifest.replace(min_runtime="0.2.0rc1"), runtime_version="0.1.0", **rules)
    assert e.value.reason == "min-runtime" and e.value.policy
    # the verdicts come before the policy: a known-bad version is refused as such
    with pytest.raises(UpdateRefused) as e:
        check_rules(b.manifest.replace(min_runtime="9"), **{**rules, "bad": {1: "rolled back"}})
    assert e.value.reason == "bad-version" and not e.value.policy
    b.close()


# -- edge agent example-config -------------------------------------------------------------------
_LINE = re.compile(r"^(?P<off>#\s*)?(?P<key>[a-z_]+)\s*=\s*(?P<rest>.*)$")


def _example_keys(text: str) -> dict[tuple[str, ...], list[tuple[str, bool]]]:
    """section path → [(key line, commented out)], from the example's text."""
    out: dict[tuple[str, ...], list[tuple[str, bool]]] = {(): []}
    section: tuple[str, ...] = ()
    for line in text.splitlines():
        header = re.match(r"^\[([a-z_.]+)\]\s*$", line)
        if header:
            section = tuple(header.group(1).split("."))
            out.setdefault(section, [])
            continue
        m = _LINE.match(line)
        if m:
            out.setdefault(section, []).append((line, bool(m.group("off"))))
    return out


def _walk(model: type[BaseModel], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str, Any]]:
    fields = []
    for name, f in model.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            fields += _walk(ann, (*path, name))
        else:
            fields.append((path, name, f))
    return fields


def test_example_config_shows_every_key_with_a_comment_and_validates(tmp_path: Path) -> None:
    r = edge("agent", "example-config", check=True)
    text = r.stdout
    found = _example_keys(text)
    fields = _walk(AgentConfig)
    assert len(fields) > 50
    for section, name, field in fields:
        lines = [(line, off) for line, off in found.get(section, []) if _LINE.match(line).group("key") == name]  # type: ignore[union-attr]
        where = ".".join((*section, name))
        assert len(lines) == 1, f"{where} is not shown exactly once in the example config"
        line, off = lines[0]
        value_text, sep, comment = _LINE.match(line).group("rest").partition("#")  # type: ignore[union-attr]
        assert sep and comment.strip(), f"{where} has no comment"
        if off:
            continue  # unset: its default applies, the comment says what that is
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
        if not field.is_required() and field.default_factory is None and field.default is not None:
            default = field.default.get_secret_value() if hasattr(field.default, "get_secret_value") else field.default
            if value != (str(default) if isinstance(default, Path) else default):
                assert "default" in comment, f"{where} = {value!r} differs from its default {default!r}, " \
                                             "and its comment does not say the default"
    # no key in the example that the model does not know, and the whole example validates
    known = {(*s, n) for s, n, _ in fields}
    for section, lines in found.items():
        for line, _ in lines:
            key = (*section, _LINE.match(line).group("key"))  # type: ignore[union-attr]
            assert key in known, f"{'.'.join(key)} in the example is not a config key"
    p = tmp_path / "agent.toml"
    p.write_text(text)
    cfg = load_config(p, environ={})
    assert cfg.updates.require_samples and cfg.updates.require_expiry
    assert "--sample" in text and "--expires" in text  # says how to make bundles that pass
