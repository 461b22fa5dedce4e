"""The README is true for a new user.

- Every `edge ...` command line in the README's shell blocks names commands and options that exist
  (checked against the real click command tree, so a renamed flag fails here, not for a user).
- The quick-start block (the one after ``<!-- readme-test: quick-start -->``) runs as written, with bash
  -e, in a folder where ``make demo`` has just left its ``demo-out/``.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from edge_cli import cli

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(text: str) -> list[tuple[str, str, int]]:
    """(language, body, line number) of every fenced block."""
    return [(m.group(1), m.group(2), text[:m.start()].count("\n") + 1) for m in FENCE.finditer(text)]


def _command_lines(body: str, console: bool) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", body)
    lines = []
    for raw in joined.splitlines():
        line = raw.strip()
        if console:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        line = line.split(" #")[0].strip()
        for part in re.split(r"\s*(?:&&|\|\||\||;)\s*", line):
            part = part.strip().removesuffix("&").strip()
            if part.startswith(("edge ", ".venv/bin/edge ")):
                lines.append(part)
    return lines


def _readme_commands() -> list[tuple[int, str]]:
    text = README.read_text()
    found = []
    for lang, body, lineno in _blocks(text):
        if lang in ("bash", "sh", "console", "shell"):
            found.extend((lineno, c) for c in _command_lines(body, console=lang == "console"))
    return found


def _resolve(tokens: list[str]) -> tuple[click.Command, list[str]]:
    ctx = click.Context(cli)
    cmd: click.Command = cli
    rest = tokens
    while isinstance(cmd, click.Group) and rest and not rest[0].startswith("-"):
        sub = cmd.get_command(ctx, rest[0])
        if sub is None:
            raise AssertionError(f"`{rest[0]}` is not a subcommand of `{cmd.name}`")
        cmd, rest = sub, rest[1:]
    return cmd, rest


def _options(cmd: click.Command) -> set[str]:
    opts = {"--help", "-h"}
    for p in cmd.params:
        opts.update(p.opts)
        opts.update(p.secondary_opts)
    return opts


COMMANDS = _readme_commands()


def test_the_readme_has_commands_to_check() -> None:
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("lineno", "line"), COMMANDS, ids=[f"L{n}" for n, _ in COMMANDS])
def test_every_readme_command_and_option_exists(lineno: int, line: str) -> None:
    tokens = shlex.split(line.replace("...", "X"))[1:]
    # global options of `edge` itself come before the verb
    while tokens and tokens[0] in ("-v", "-vv", "--verbose"):
        tokens = tokens[1:]
    cmd, rest = _resolve(tokens)
    known = _options(cmd)
    used = {t.split("=")[0] for t in rest if t.startswith("-") and t not in ("-", "--")}
    unknown = sorted(u for u in used if u not in known and not re.fullmatch(r"-\d.*", u))
    assert unknown == [], f"README line {lineno}: `{line}`: {cmd.name} has no option(s) {unknown}"


def test_the_checker_catches_a_wrong_flag() -> None:
    cmd, _rest = _resolve(["run", "bundle", "--no-such-flag"])
    assert cmd.name == "run" and "--no-such-flag" not in _options(cmd)
    with pytest.raises(AssertionError):
        _resolve(["no-such-verb"])


def _quick_start() -> str:
    text = README.read_text()
    marker = text.index("<!-- readme-test: quick-start -->")
    lang, body, _ = _blocks(text[marker:])[0]
    assert lang == "bash"
    return body


@pytest.mark.slow
def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    # What `make demo` leaves behind, made the same way (scripts/demo.py is what `make demo` runs).
    subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--out", str(tmp_path / "demo-out")],
                   check=True, cwd=ROOT, capture_output=True, timeout=900)
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + _quick_start()
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"quick start failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    # what the block promises: a CSV with one row per photo, and a signed v2 bundle that verifies
    csv = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv) == 1 + 3 and "Egyptian cat" in "\n".join(csv)
    assert shutil.which("bash")
