"""Shared fixtures: copies of /proc (and Android's build.prop) as real boards print them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def board() -> Callable[[str], Path]:
    """The root directory of a board's copied files, e.g. ``board("rpi-4b")``."""

    def _root(name: str) -> Path:
        root = FIXTURES / name
        assert root.is_dir(), f"no fixture {name}"
        return root

    return _root


@pytest.fixture
def board_copy(tmp_path: Path) -> Callable[[str], Path]:
    """A writable copy of a board's files, to remove or change some of them."""

    def _copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(FIXTURES / name, dest)
        return dest

    return _copy
