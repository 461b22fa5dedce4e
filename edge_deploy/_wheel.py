"""Build the project's own wheel, for images and devices that install edge from a file."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ._errors import DeployInputError, ToolError

__all__ = ["build_wheel", "check_wheel", "project_root"]

log = logging.getLogger(__name__)

# 1980-01-01, the earliest time a zip file can hold: with it the same sources give the same wheel bytes.
_EPOCH = "315532800"
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist", ".*")


def project_root() -> Path | None:
    """The source checkout this package runs from, or None when it runs from an installed wheel."""
    root = Path(__file__).resolve().parents[1]  # edge_deploy/ sits at the top of the checkout
    pyproject = root / "pyproject.toml"
    try:
        text = pyproject.read_text()
    except OSError:
        return None
    return root if 'name = "edge-runtime"' in text else None


def check_wheel(path: Path) -> Path:
    """``path`` if it is a wheel of this project; DeployInputError naming the problem otherwise."""
    if path.suffix != ".whl" or not path.name.startswith("edge_runtime-"):
        raise DeployInputError(f"{path}: not an edge-runtime wheel (expected edge_runtime-VERSION-...whl)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except FileNotFoundError as exc:
        raise DeployInputError(f"{path}: no such wheel file") from exc
    except (zipfile.BadZipFile, OSError) as exc:
        raise DeployInputError(f"{path}: not a readable wheel (zip) file: {exc}") from exc
    if "edge_runtime/__init__.py" not in names:
        raise DeployInputError(f"{path}: the wheel does not contain the edge_runtime package")
    return path


def build_wheel(out_dir: Path, root: Path | None = None) -> Path:
    """Build the wheel of the checkout ``root`` (default: the one running) into ``out_dir``.

    The sources are copied first so the build leaves no build/ or .egg-info in the checkout.
    """
    root = root or project_root()
    if root is None:
        raise DeployInputError(
            "edge runs from an installed package, not a source checkout: pass --wheel PATH "
            "(e.g. downloaded with `pip download --no-deps edge-runtime`)"
        )
    with tempfile.TemporaryDirectory(prefix="edge-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for entry in sorted(root.iterdir()):
            if entry.is_file() and (
                entry.name in {"pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in"}
                or entry.name.startswith(("README", "LICENSE"))
            ):
                shutil.copy2(entry, src / entry.name)
            elif entry.is_dir() and (entry / "__init__.py").is_file():
                shutil.copytree(entry, src / entry.name, ignore=_SKIP)
        cmd = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
               "-w", str(out_dir)]
        if importlib.util.find_spec("setuptools") is not None:
            # Build with the installed setuptools: no download, works offline.
            cmd += ["--no-build-isolation", "--no-index"]
        cmd.append(str(src))
        env = {**os.environ, "SOURCE_DATE_EPOCH": _EPOCH}
        log.info("building the edge-runtime wheel from %s", root)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                                  check=False)
        except OSError as exc:
            raise ToolError(f"cannot run pip to build the wheel: {exc.strerror or exc}") from exc
        if proc.returncode != 0:
            tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
            raise ToolError(f"building the edge-runtime wheel from {root} failed: {tail}; or pass --wheel PATH")
    wheels = sorted(out_dir.glob("edge_runtime-*.whl"))
    if not wheels:
        raise ToolError(f"pip reported success but wrote no edge_runtime wheel into {out_dir}")
    return wheels[-1]
