"""Running `edge` in-process for the deploy tests: exit code, stdout and stderr."""

from __future__ import annotations

import pytest

from edge_cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
