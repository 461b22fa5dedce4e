"""The boundaries ARCHITECTURE.md promises, checked on the source (import-linter checks the layers).

No package reaches into another package's private (``_``-prefixed) modules: what a package offers
the others is in its ``__all__``. Imports inside functions count too; that is where cycles hide.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("device_profiles", "edge_runtime", "edge_device", "converters", "cloud_sync", "edge_deploy", "edge_cli")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found.extend((node.lineno, f"{node.module}.{a.name}") for a in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return found


def _private_reach(importer_pkg: str | None, module: str) -> bool:
    parts = module.split(".")
    if parts[0] not in PACKAGES or parts[0] == importer_pkg:
        return False
    return any(p.startswith("_") and not p.startswith("__") for p in parts[1:])


def _sources() -> list[Path]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    files += list((ROOT / "scripts").glob("*.py")) + list((ROOT / "examples").rglob("*.py"))
    return sorted(files)


def test_no_package_imports_another_packages_private_module() -> None:
    offenders = []
    for path in _sources():
        rel = path.relative_to(ROOT)
        pkg = rel.parts[0] if rel.parts[0] in PACKAGES else None
        for line, module in _imports(path):
            if _private_reach(pkg, module):
                offenders.append(f"{rel}:{line}: {module}")
    assert offenders == []


def test_the_checker_sees_a_private_reach() -> None:
    # The rule above must be able to fail: an import inside a function of another package.
    assert _private_reach("cloud_sync", "edge_runtime._signing.PublicKey")
    assert not _private_reach("edge_runtime", "edge_runtime._signing")
    assert not _private_reach("cloud_sync", "edge_runtime.PublicKey")


@pytest.mark.parametrize("pkg", PACKAGES)
def test_every_public_name_is_importable(pkg: str) -> None:
    module = __import__(pkg)
    for name in getattr(module, "__all__", []):
        assert hasattr(module, name), f"{pkg}.__all__ names {name}, which it does not define"
