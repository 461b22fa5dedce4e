"""A verb whose optional library is missing says so in one line, with the install that fixes it.

The CLI runs in a subprocess whose import system refuses the library (as a machine without the
extra would), so nothing is uninstalled from the shared environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from edge_cli._extras import missing_for, module_missing
from tests.support.cli import edge_without

ROOT = Path(__file__).resolve().parents[2]

def assert_one_error_line(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    assert proc.stdout == ""


def test_run_mqtt_without_paho_is_one_line_before_any_work(mobilenet_bundle: Path, shared_data: Path,
                                                           tmp_path: Path) -> None:
    proc = edge_without("paho", "run", str(mobilenet_bundle), "--source", str(shared_data / "images" / "cat.png"),
                        "--mqtt", "mqtt://127.0.0.1:9", "--device-id", "dev-1", "--outbox", str(tmp_path / "o.db"))
    assert_one_error_line(proc, "edge run --mqtt needs paho-mqtt", "pip install 'edge-runtime[device]'")
    assert not (tmp_path / "o.db").exists(), "the check must come before the run starts"


def test_run_without_mqtt_does_not_need_paho(mobilenet_bundle: Path, shared_data: Path) -> None:
    proc = edge_without("paho", "run", str(mobilenet_bundle), "--source", str(shared_data / "images" / "cat.png"))
    assert proc.returncode == 0, proc.stderr
    assert '"Egyptian cat"' in proc.stdout


@pytest.mark.parametrize("source", ["0", "rtsp://127.0.0.1:9/stream", "clip.mp4"])
def test_camera_and_video_sources_without_opencv(mobilenet_bundle: Path, source: str) -> None:
    proc = edge_without("cv2", "run", str(mobilenet_bundle), "--source", source)
    assert_one_error_line(proc, f"edge run --source {source} needs opencv-python-headless",
                          "pip install 'edge-runtime[camera]'")


def test_cloud_serve_without_the_cloud_extra(tmp_path: Path) -> None:
    proc = edge_without("fastapi,uvicorn", "cloud", "serve", "--data-dir", str(tmp_path))
    assert_one_error_line(proc, "edge cloud serve needs fastapi, uvicorn", "pip install 'edge-runtime[cloud]'")


@pytest.mark.parametrize("verb", ["ingest", "broker-config"])
def test_other_cloud_verbs_without_sqlalchemy(verb: str, tmp_path: Path) -> None:
    devices = tmp_path / "fleet.toml"
    devices.write_text('[[devices]]\nid = "dev-1"\n')
    args = {"ingest": ["--mqtt", "mqtt://127.0.0.1:9", "--db", f"sqlite:///{tmp_path / 't.db'}"],
            "broker-config": ["--devices", str(devices), "-o", str(tmp_path / "broker")]}[verb]
    proc = edge_without("sqlalchemy", "cloud", verb, *args)
    assert_one_error_line(proc, f"edge cloud {verb} needs sqlalchemy", "pip install 'edge-runtime[cloud]'")


def test_the_table_looks_at_options_and_values() -> None:
    assert missing_for("run", {"mqtt_url": None, "source": "photos/"}) is None
    assert module_missing("surely_not_an_installed_module_xyz")
    assert not module_missing("click")


def test_click_errors_print_lowercase_error() -> None:
    from edge_cli import cli

    proc = subprocess.run([sys.executable, "-m", "edge_cli", "run", "--no-such-option"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.lower().startswith("error")] == [
        "error: No such option '--no-such-option'."]
    # Also under click's own runner (how other tests drive the group), errors of ours keep the style.
    result = CliRunner().invoke(cli, ["run", "--help"])
    assert result.exit_code == 0 and "--recursive" in result.output
    from edge_cli._common import CliError

    @click.command()
    def failing() -> None:
        raise CliError("it broke")

    result = CliRunner().invoke(failing, [])
    assert result.exit_code == 1
    assert result.output.strip() == "error: it broke"


@pytest.mark.parametrize(("backend", "blocked", "extra"), [("onnxruntime", "onnxruntime", "onnx"),
                                                           ("opencv-dnn", "cv2", "camera"),
                                                           ("litert", "ai_edge_litert,tflite_runtime,tensorflow",
                                                            "tflite")])
def test_a_named_backend_without_its_library_says_what_the_registry_says(mobilenet_bundle: Path, backend: str,
                                                                         blocked: str, extra: str) -> None:
    # The message comes from the backend registry (its modules and install hint), not from a copy here.
    proc = edge_without(blocked, "run", str(mobilenet_bundle), "--source", "x.png", "--backend", backend)
    assert_one_error_line(proc, f"edge run --backend {backend} needs", f"pip install 'edge-runtime[{extra}]'")
