"""Shared CLI plumbing: error reporting, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from edge_runtime import EdgeError

__all__ = ["echo_json", "fail", "run_cli"]


def run_cli(cli: click.Group, argv: list[str] | None = None) -> Any:
    """Run the click group, turning every user error into one line on stderr and exit code 2 or 1.

    User errors (EdgeError and any error class a package registers by subclassing its own base)
    never show a traceback; a real bug still does.
    """
    try:
        return cli.main(args=argv, prog_name="edge", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except EdgeError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except user_errors() as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def user_errors() -> tuple[type[BaseException], ...]:
    """Base errors of the other packages, looked up only if those packages are already imported."""
    found: list[type[BaseException]] = []
    for module, name in (
        ("device_profiles", "ProfileError"),
        ("converters", "ConversionError"),
        ("cloud_sync", "CloudError"),
    ):
        mod = sys.modules.get(module)
        cls = getattr(mod, name, None) if mod else None
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def fail(message: str) -> None:
    raise click.ClickException(message)
