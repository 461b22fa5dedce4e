"""A pickle runs code when it is loaded: `edge convert` reads one only when told the file is trusted."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from converters import SourceLoadError, convert
from edge_cli import main


class _Boom:
    """Unpickling this writes a file: what any hostile pickle could do, and worse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_a_pickle_is_not_loaded_without_trust(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(SourceLoadError, match="--trust-pickle"):
        convert(tmp_path / "model.pkl", tmp_path / "out", to="onnx")
    assert not marker.exists(), "the pickle ran although it was not trusted"


def test_the_cli_says_how_to_trust_it_and_help_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "ran"
    (tmp_path / "model.joblib").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(SystemExit) as info:
        main(["convert", str(tmp_path / "model.joblib"), "--to", "onnx", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "--trust-pickle" in err and not marker.exists()
    try:
        main(["convert", "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    assert "runs whatever code" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


def test_trusted_means_loaded(tmp_path: Path) -> None:
    # With trust, the file is read (and this one is no estimator, which is then the error).
    marker = tmp_path / "ran"
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(Exception):  # noqa: B017 - whatever the estimator check says, the pickle ran
        convert(tmp_path / "model.pkl", tmp_path / "out", to="onnx", trust_pickle=True)
    assert marker.read_text() == "pwned"
