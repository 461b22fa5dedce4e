"""`edge profiles list/show/detect` through the real top-level `edge` command."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from device_profiles import ProfileNotFoundError, load_profile, profile_names
from edge_cli import cli, main


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_list_text(runner):
    result = runner.invoke(cli, ["profiles", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["NAME", "ARCH", "CORES", "MEMORY"]
    assert [line.split()[0] for line in lines[1:]] == profile_names()
    zero = next(line for line in lines if line.startswith("rpi-zero-2w "))
    assert "512 MB" in zero and "picamera2" in zero and "Raspberry Pi Zero 2 W" in zero


def test_list_json(runner):
    result = runner.invoke(cli, ["profiles", "list", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [p["name"] for p in data] == profile_names()
    armv7 = next(p for p in data if p["name"] == "rpi-4b-armv7")
    assert armv7["backends"] == ["litert", "opencv-dnn"]
    assert armv7["threads"] == 4


def test_show_text(runner):
    result = runner.invoke(cli, ["profiles", "show", "rpi-4b"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("rpi-4b: Raspberry Pi 4 Model B\n")
    assert "litert, onnxruntime, opencv-dnn" in out
    assert "sold with 1 GB, 2 GB, 4 GB, 8 GB" in out
    assert "--system-site-packages" in out


def test_show_json_is_the_profile(runner):
    result = runner.invoke(cli, ["profiles", "show", "jetson-nano", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == load_profile("jetson-nano").to_dict(json=True)


def test_show_validates_a_custom_file(runner, tmp_path):
    from importlib import resources

    text = resources.files("device_profiles").joinpath("data", "rpi-5.toml").read_text(encoding="utf-8")
    good = tmp_path / "lab-pi.toml"
    good.write_text(text.replace("threads = 4", "threads = 2"), encoding="utf-8")
    result = runner.invoke(cli, ["profiles", "show", str(good), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["threads"] == 2


def test_detect_json(runner, board):
    result = runner.invoke(cli, ["profiles", "detect", "--root", str(board("rpi-5")), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["name"] == "rpi-5"
    assert data["profile"]["name"] == "rpi-5"
    assert data["evidence"]["device_tree_model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert data["memory_mb"] == 8052
    assert data["memory_ceiling_mb"] == 1024


def test_detect_text(runner, board):
    result = runner.invoke(cli, ["profiles", "detect", "--root", str(board("jetson-nano"))])
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("profile: jetson-nano (NVIDIA Jetson Nano Developer Kit)\n")
    assert "contains 'NVIDIA Jetson Nano'" in out
    assert "memory:  3963 MB detected" in out
    assert "cpu_part" in out and "0xd07 (Cortex-A57)" in out


def test_detect_machine_option(runner, board):
    args = ["profiles", "detect", "--root", str(board("rpi-4b")), "--machine", "armv7l", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["name"] == "rpi-4b-armv7"


def test_detect_missing_root_is_a_usage_error(runner, tmp_path):
    result = runner.invoke(cli, ["profiles", "detect", "--root", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_unknown_profile_through_the_click_group(runner):
    result = runner.invoke(cli, ["profiles", "show", "nope"])
    assert result.exit_code == 1
    assert isinstance(result.exception, ProfileNotFoundError)


def test_unknown_profile_is_one_error_line(capsys):
    # `edge` (main) turns ProfileError into one line on stderr and exit code 1.
    with pytest.raises(SystemExit) as info:
        main(["profiles", "show", "rpi4"])
    assert info.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: unknown device profile 'rpi4' (did you mean 'rpi-4b'?); known profiles: "
    )
    assert "generic-x86_64" in lines[0]


def test_broken_file_is_one_error_line(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("title = 'x'\nthreads = 'four'\n", encoding="utf-8")
    with pytest.raises(SystemExit) as info:
        main(["profiles", "show", str(bad)])
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {bad}: ") and "threads:" in err


def test_undetectable_copy_is_one_error_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["profiles", "detect", "--root", str(tmp_path)])
    assert info.value.code == 1
    assert capsys.readouterr().err.startswith("error: cannot tell the machine architecture")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["profiles", "--help"], "latency budget"),
        (["profiles", "list", "--help"], "--json"),
        (["profiles", "show", "--help"], "NAME is a shipped profile"),
        (["profiles", "detect", "--help"], "--root"),
        (["--help"], "List, show and detect device profiles."),
    ],
)
def test_help(runner, args, expected):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0
    assert expected in result.output
