"""The 32-bit proof: Debian's armhf Python with apt's OpenCV runs MobileNet V2 as ONNX on opencv-dnn.

What 32-bit Raspberry Pi OS (armhf) has: no onnxruntime wheel, so the rpi-4b-armv7 profile runs ONNX
models on OpenCV's DNN module. Here the interpreter is Debian 12's armhf python3.11 and numpy 1.24,
Pillow 9.4 and OpenCV 4.6 are Debian's armhf packages (python3-numpy, python3-pil, python3-opencv),
all unpacked from the .debs debootstrap fetched; only the pure-Python or armv7l-wheel dependencies
Debian 12 lacks or has too old (pydantic 2 with pydantic-core, click, ...) come from PyPI, pinned as
requirements/pi-onnx.txt pins them. The project is this checkout. qemu-arm is invoked explicitly
with ``-L ROOT`` (no binfmt_misc). The model is the shared quantized MobileNet V2, converted from
TFLite to ONNX by tf2onnx on the host and bundled with ``edge bundle``.

Run it alone with:  python -m pytest tests/deploy/test_armhf.py -m slow -q -s   (-s prints timings)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.data import MOBILENET_REFERENCE
from tests.support.debian_roots import armv7l_site, debian_root_armhf
from tests.support.paths import ROOT, env_with_project

pytestmark = pytest.mark.slow

#: what PyPI supplies to the armhf Python: Debian 12 has no pydantic 2 (pydantic-core has armv7l wheels)
PYPI_PACKAGES = ("pydantic", "pydantic-core", "annotated-types", "typing-extensions", "typing-inspection", "click")
#: the Debian packages' home inside the root
DIST_PACKAGES = "usr/lib/python3/dist-packages"
EM_ARM = 40  # ELF e_machine of 32-bit ARM
ELFCLASS32 = 1


def _pins(names: tuple[str, ...]) -> list[str]:
    """``name==version`` for each of ``names``, as the Pi's ONNX lock file pins them."""
    text = (ROOT / "requirements" / "pi-onnx.txt").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M))
    missing = [n for n in names if n not in pins]
    assert not missing, f"requirements/pi-onnx.txt pins no {missing}"
    return [f"{n}=={pins[n]}" for n in names]


@pytest.fixture(scope="module")
def armhf_root() -> Path:
    if (shutil.which("qemu-arm-static") or shutil.which("qemu-arm")) is None:
        pytest.fail("qemu-arm-static not found: apt-get install qemu-user-static")
    return debian_root_armhf()


@pytest.fixture(scope="module")
def armhf_python(armhf_root: Path) -> list[str]:
    qemu = shutil.which("qemu-arm-static") or shutil.which("qemu-arm")
    assert qemu is not None
    return [qemu, "-L", str(armhf_root), str(armhf_root / "usr/bin/python3.11")]


@pytest.fixture(scope="module")
def armhf_site() -> Path:
    return armv7l_site(_pins(PYPI_PACKAGES))


@pytest.fixture(scope="module")
def armhf_env(armhf_site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "EDGE_"))}
    env.update({"PYTHONPATH": f"{ROOT}{os.pathsep}{armhf_site}", "PYTHONNOUSERSITE": "1",
                "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def _tflite_to_onnx(tflite: Path, out: Path, *extra: str) -> Path:
    """tf2onnx's conversion of the quantized TFLite model, weights dequantized to float."""
    proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite", str(tflite), "--dequantize",
                           *extra, "--output", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _probabilities_out(path: Path) -> Path:
    """Drop the QuantizeLinear tf2onnx keeps after the softmax, so the model answers float probabilities.

    ``--dequantize`` leaves the uint8 output of the TFLite model, and an ONNX output carries no
    quantization parameters the bundle could record: its scores would be the raw 0-255 values.
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    out = graph.output[0]
    quant = next(n for n in graph.node if out.name in n.output)
    assert quant.op_type == "QuantizeLinear", quant.op_type
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == quant.input[0]:
                node.output[i] = out.name
    graph.node.remove(quant)
    used = {name for node in graph.node for name in node.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)
    out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _bundle(model: Path, out: Path, labels: Path) -> Path:
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "bundle", str(model), "--labels", str(labels),
                           "--name", "mobilenet_v2", "-o", str(out)],
                          env=env_with_project(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def onnx_bundle(tmp_path_factory: pytest.TempPathFactory, mobilenet_tflite: Path, shared_data: Path) -> Path:
    """MobileNet V2 as ONNX opset 10: OpenCV 4.6 reads Clip (the ReLU6s) only with attribute bounds,
    which opset 11 turned into inputs (see test_an_opset_15_export_is_refused_naming_the_node)."""
    d = tmp_path_factory.mktemp("mobilenet-onnx")
    model = _probabilities_out(_tflite_to_onnx(mobilenet_tflite, d / "mobilenet_v2.onnx", "--opset", "10"))
    return _bundle(model, d / "bundle", shared_data / "labels" / "imagenet_labels.txt")


def _record(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[0])


@pytest.fixture(scope="module")
def host_reference(onnx_bundle: Path, reference_images: dict[str, Path]) -> dict:
    """The same bundle and image on this machine's onnxruntime (x86-64)."""
    proc = subprocess.run([sys.executable, "-m", "edge_cli", "run", str(onnx_bundle), "--source",
                           str(reference_images["cat.png"]), "--backend", "onnxruntime", "--json"],
                          env=env_with_project(), capture_output=True, text=True, timeout=600)
    return _record(proc)


def _elf_header(path: str) -> tuple[bytes, int, int]:
    """(magic, EI_CLASS, e_machine) of an ELF file."""
    with open(path, "rb") as f:
        header = f.read(20)
    return header[:4], header[4], int.from_bytes(header[18:20], "little")


def test_the_interpreter_really_is_armhf_with_debians_numpy_pillow_and_opencv(
        armhf_python, armhf_env, armhf_root, armhf_site):
    code = ("import json, platform, struct, sys, numpy, cv2, PIL, pydantic_core; "
            "print(json.dumps({'machine': platform.machine(), 'bits': struct.calcsize('P') * 8, "
            "'version': sys.version_info[:2], 'numpy': [numpy.__version__, numpy.__file__], "
            "'cv2': [cv2.__version__, cv2.__file__], 'PIL': [PIL.__version__, PIL.__file__], "
            "'pydantic_core': pydantic_core._pydantic_core.__file__}))")
    proc = subprocess.run([*armhf_python, "-c", code], env=armhf_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    # qemu-arm's default CPU reports armv7l; an ARMv8 core in 32-bit mode says armv8l: both are armhf.
    assert info["machine"] in ("armv7l", "armv8l")
    assert info["bits"] == 32
    assert info["version"] == [3, 11]
    dist = str(armhf_root / DIST_PACKAGES)
    for name, major_minor in (("numpy", "1.24."), ("cv2", "4.6."), ("PIL", "9.4.")):
        version, path = info[name]
        assert path.startswith(dist + "/"), f"{name} from {path}, not Debian's armhf package"
        assert version.startswith(major_minor), (name, version)
    # The OpenCV extension is a 32-bit ARM ELF, not an x86-64 one that happened to load.
    assert info["cv2"][1].endswith("arm-linux-gnueabihf.so")
    assert _elf_header(info["cv2"][1]) == (b"\x7fELF", ELFCLASS32, EM_ARM)
    assert info["pydantic_core"].startswith(str(armhf_site) + "/")
    assert _elf_header(info["pydantic_core"]) == (b"\x7fELF", ELFCLASS32, EM_ARM)
    assert not [p.name for p in armhf_site.iterdir() if p.name.lower().startswith(("numpy", "pil", "cv2", "opencv"))]


def test_mobilenet_onnx_says_egyptian_cat_on_opencv_dnn_under_armhf(
        armhf_python, armhf_env, onnx_bundle, host_reference, reference_images, record_property):
    label, score = MOBILENET_REFERENCE["cat.png"]
    host_top = host_reference["top_k"][0]
    # The host reference itself: the converted model still is the shared model (the TFLite one
    # scores 0.79 on LiteRT; the dequantized float graph lands within a few output steps of it).
    assert host_reference["backend"] == "onnxruntime"
    assert host_top["label"] == label
    assert abs(host_top["score"] - score) <= 4 / 256

    start = time.monotonic()
    proc = subprocess.run(
        [*armhf_python, "-m", "edge_cli", "run", str(onnx_bundle), "--source", str(reference_images["cat.png"]),
         "--backend", "opencv-dnn", "--json"],
        env=armhf_env, capture_output=True, text=True, timeout=1200,
    )
    wall = time.monotonic() - start
    record = _record(proc)
    assert record["backend"] == "opencv-dnn"
    assert record["top_k"][0]["label"] == label
    assert abs(record["top_k"][0]["score"] - host_top["score"]) <= 2 / 256
    # The rest of the top 5 agrees with onnxruntime's too: the whole network ran, not just its argmax.
    assert [t["label"] for t in record["top_k"][:3]] == [t["label"] for t in host_reference["top_k"][:3]]
    timings = {"wall_s": round(wall, 2), **{f"{k}_ms": v for k, v in record["latency_ms"].items()}}
    record_property("armhf_qemu_user_timings", timings)
    print(f"\narmhf under qemu-user emulation (not Pi hardware): {timings}; host onnxruntime "
          f"{host_reference['latency_ms']}")


def test_an_opset_15_export_is_refused_naming_the_node(
        armhf_python, armhf_env, tmp_path, mobilenet_tflite, shared_data, reference_images):
    """tf2onnx's default opset writes Clip with min/max inputs, which OpenCV 4.6 cannot import:
    the error must say so (OpenCV's own message ends in a bare ``>`` line)."""
    model = _probabilities_out(_tflite_to_onnx(mobilenet_tflite, tmp_path / "opset15.onnx", "--opset", "15"))
    bundle = _bundle(model, tmp_path / "bundle", shared_data / "labels" / "imagenet_labels.txt")
    proc = subprocess.run(
        [*armhf_python, "-m", "edge_cli", "run", str(bundle), "--source", str(reference_images["cat.png"]),
         "--backend", "opencv-dnn", "--json"],
        env=armhf_env, capture_output=True, text=True, timeout=1200,
    )
    assert proc.returncode != 0
    assert proc.stdout == ""
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
    assert "OpenCV DNN cannot load it" in error
    assert "Node [Clip@ai.onnx]" in error and "node_proto.input_size() == 1" in error, error


def test_profile_detection_in_the_guest_picks_the_32_bit_pi_4(armhf_python, armhf_env):
    """With the Pi 4 cpuinfo of the root (a 32-bit kernel's) and a 32-bit interpreter."""
    proc = subprocess.run([*armhf_python, "-m", "edge_cli", "profiles", "detect", "--json"],
                          env=armhf_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    evidence = data["evidence"]
    assert evidence["machine"] == "armv7l"
    assert evidence["machine_source"] == "platform.machine()"
    assert evidence["cpuinfo_model"].startswith("Raspberry Pi 4 Model B")
    assert data["name"] == "rpi-4b-armv7"
    assert data["profile"]["backends"] == ["litert", "opencv-dnn"]
