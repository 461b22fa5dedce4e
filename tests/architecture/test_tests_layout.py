"""The tests' own layout: helpers come from tests/support only, fixtures by name.

A test that imports from a conftest or from another test module couples two folders through
something neither owns: renaming a fixture file or a test then breaks a folder that looked
unrelated, and pytest may import the same file twice under two names (two copies of a class, two
brokers). Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SUPPORT = "tests.support"


def _checked_files() -> list[Path]:
    files = [p for p in TESTS.rglob("*.py") if p.name.startswith("test_") or p.name == "conftest.py"]
    return sorted(p for p in files if p.relative_to(TESTS).parts[0] != "support")


def _imported(path: Path, source: str | None = None) -> list[tuple[int, str]]:
    """Every module ``path`` imports from, relative imports resolved against its package."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    package = list(path.relative_to(TESTS.parent).parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    found.append((node.lineno, ".".join([*base, node.module])))
                else:  # ``from . import x`` imports the module x of that package
                    found.extend((node.lineno, ".".join([*base, a.name])) for a in node.names)
            else:
                found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names)
    return found


def offending(module: str) -> bool:
    """Any conftest, or a module under tests/ that is not in tests.support."""
    parts = module.split(".")
    if "conftest" in parts:
        return True
    return parts[0] == "tests" and not (module == SUPPORT or module.startswith(SUPPORT + "."))


def test_tests_import_helpers_from_tests_support_only() -> None:
    offenders = [f"{path.relative_to(TESTS.parent)}:{line}: {module}"
                 for path in _checked_files() for line, module in _imported(path) if offending(module)]
    assert offenders == [], "import helpers from tests.support, take fixtures by name:\n" + "\n".join(offenders)


def test_the_checker_sees_every_way_to_reach_another_test_module() -> None:
    # The rule above must be able to fail: relative, absolute, inside a function.
    source = ("from .conftest import agent_config\nfrom . import _servers\nimport tests.telemetry.fixtures\n"
              "def f():\n    from tests.cloud_ingest.test_ingest import RawClient\n"
              "from tests.support.servers import Mosquitto\nfrom edge_runtime._model import Model\n")
    found = [m for _, m in sorted(_imported(TESTS / "agent" / "test_probe.py", source))]
    assert found == ["tests.agent.conftest", "tests.agent._servers", "tests.telemetry.fixtures",
                     "tests.cloud_ingest.test_ingest", "tests.support.servers", "edge_runtime._model"]
    assert [offending(m) for m in found] == [True, True, True, True, False, False]
    assert offending("conftest") and offending("tests.supported_elsewhere")
