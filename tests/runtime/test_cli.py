"""The `edge` command line, run as a user runs it: a subprocess, real files, exit codes, stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.data import MOBILENET_REFERENCE
from tests.support.paths import ROOT


def edge(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "edge_cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"edge {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(errors) == 1, proc.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])


def test_help_lists_every_verb() -> None:
    out = edge("--help").stdout
    for verb in ("inspect", "bundle", "keys", "sign", "verify", "run", "bench", "profiles"):
        assert verb in out
    assert "Example" in edge("run", "--help").stdout


def test_inspect_model_text_and_json(mobilenet_tflite: Path) -> None:
    text = edge("inspect", str(mobilenet_tflite)).stdout
    assert "[1, 224, 224, 3]" in text and "scale=0.0078125 zero_point=128" in text
    data = json.loads(edge("inspect", str(mobilenet_tflite), "--json").stdout)
    assert data["kind"] == "model" and data["format"] == "tflite"
    assert data["inputs"][0]["quantization"] == {"scale": 0.0078125, "zero_point": 128}
    assert data["outputs"][0]["shape"] == [1, 1001]


def test_bundle_sign_verify_inspect_run(tmp_path: Path, mobilenet_tflite: Path, shared_data: Path) -> None:
    labels = shared_data / "labels" / "imagenet_labels.txt"
    edge("keys", "generate", "--out", str(tmp_path / "keys"))
    key, pub = tmp_path / "keys" / "edge_signing.key", tmp_path / "keys" / "edge_signing.pub"
    assert key.stat().st_mode & 0o077 == 0, "the private key must not be readable by others"
    arc = tmp_path / "mb.tar.gz"
    edge("bundle", str(mobilenet_tflite), "--labels", str(labels), "--name", "mobilenet_v2", "--version", "3",
         "--sign-key", str(key), "-o", str(arc))
    verified = json.loads(edge("verify", str(arc), "--pubkey", str(pub), "--json").stdout)
    assert verified["valid"] and verified["version"] == 3
    info = json.loads(edge("inspect", str(arc), "--json").stdout)
    assert info["kind"] == "bundle" and info["signed"] and info["labels"] == 1001
    assert info["manifest"]["name"] == "mobilenet_v2"
    run = edge("run", str(arc), "--source", str(shared_data / "images"), "--pubkey", str(pub), "--top-k", "1")
    records = [json.loads(x) for x in run.stdout.splitlines()]
    assert {Path(r["source"]).name: r["top_k"][0]["label"] for r in records} == {
        k: v[0] for k, v in MOBILENET_REFERENCE.items()}
    assert all(len(r["top_k"]) == 1 for r in records)
    assert "4 frame(s), 0 error(s)" in run.stderr


def test_verify_failures_are_one_line(tmp_path: Path, mobilenet_tflite: Path, shared_data: Path) -> None:
    labels = shared_data / "labels" / "imagenet_labels.txt"
    edge("keys", "generate", "--out", str(tmp_path / "a"))
    edge("keys", "generate", "--out", str(tmp_path / "b"))
    b = tmp_path / "bundle"
    edge("bundle", str(mobilenet_tflite), "--labels", str(labels), "-o", str(b),
         "--sign-key", str(tmp_path / "a" / "edge_signing.key"))
    assert_user_error(edge("verify", str(b), "--pubkey", str(tmp_path / "b" / "edge_signing.pub"), check=False),
                      "signature does not match")
    (b / "labels.txt").write_text("tampered\n")
    assert_user_error(edge("verify", str(b), "--pubkey", str(tmp_path / "a" / "edge_signing.pub"), check=False),
                      "labels.txt")
    assert_user_error(edge("run", str(b), "--source", str(shared_data / "images"), check=False), "labels.txt")
    assert_user_error(edge("sign", str(b), "--key", str(tmp_path / "a" / "edge_signing.pub"), check=False),
                      "not a PEM private key")


def test_bad_inputs_give_one_line_errors(tmp_path: Path, mobilenet_tflite: Path, shared_data: Path,
                                         mobilenet_bundle: Path) -> None:
    trunc = tmp_path / "trunc.tflite"
    trunc.write_bytes(mobilenet_tflite.read_bytes()[:4096])
    assert_user_error(edge("inspect", str(trunc), check=False), "trunc.tflite")
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\n")
    assert_user_error(edge("bundle", str(mobilenet_tflite), "--labels", str(labels), "-o", str(tmp_path / "x"),
                           check=False), "2 labels", "1001 classes")
    assert_user_error(edge("bundle", str(mobilenet_tflite), "--resize", "224by224", "-o", str(tmp_path / "y"),
                           check=False), "WIDTHxHEIGHT")
    assert_user_error(edge("run", str(mobilenet_bundle), "--source", str(tmp_path / "nothing-here"), check=False),
                      "no such file")
    assert_user_error(edge("run", str(mobilenet_tflite), "--source", str(shared_data / "images"), check=False),
                      "edge bundle")
    evil = tmp_path / "evil.tar.gz"
    import io
    import tarfile

    with tarfile.open(evil, "w:gz") as tf:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    assert_user_error(edge("inspect", str(evil), check=False), "escapes the target directory")
    assert not (tmp_path.parent / "escape.txt").exists()


def test_run_with_only_bad_frames_exits_nonzero(tmp_path: Path, mobilenet_bundle: Path) -> None:
    d = tmp_path / "junk"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"not a jpeg")
    proc = edge("run", str(mobilenet_bundle), "--source", str(d), check=False)
    assert proc.returncode == 1
    rec = json.loads(proc.stdout)
    assert "a.jpg" in rec["error"] and rec["frame"] == 0


def test_outputs_to_files(tmp_path: Path, mobilenet_bundle: Path, shared_data: Path) -> None:
    jl, db = tmp_path / "r.jsonl", tmp_path / "r.db"
    edge("run", str(mobilenet_bundle), "--source", str(shared_data / "images" / "cat.png"),
         "--output", str(jl), "--output", f"sqlite:///{db}")
    assert json.loads(jl.read_text())["top_k"][0]["label"] == "Egyptian cat"
    import sqlite3

    assert sqlite3.connect(db).execute("SELECT top_label FROM records").fetchall() == [("Egyptian cat",)]


def test_bench_reports_runtime_and_raw(mobilenet_bundle: Path) -> None:
    data = json.loads(edge("bench", str(mobilenet_bundle), "--runs", "30", "--warmup", "3", "--threads", "1",
                           "--json").stdout)
    assert data["backend"] == "litert" and data["threads"] == 1 and data["runs"] == 30
    for row in ("runtime_infer", "raw_backend", "runtime_predict"):
        assert {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_per_s"} <= set(data[row])
        assert 0 < data[row]["p50_ms"] <= data[row]["p99_ms"]
    assert data["ratio_p50"] == pytest.approx(data["runtime_infer"]["p50_ms"] / data["raw_backend"]["p50_ms"],
                                              rel=1e-3)
    assert data["peak_rss_mb"] > 10


def test_import_is_light() -> None:
    code = ("import sys, edge_runtime, edge_runtime.sources, edge_runtime.backends; "
            "print(','.join(sorted(m for m in ('tensorflow', 'torch', 'fastapi', 'sqlalchemy', 'onnxruntime', "
            "'ai_edge_litert', 'cv2', 'paho', 'onnx', 'sklearn', 'uvicorn') if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import edge_runtime pulled in: {out.stdout}"
