"""Shared CLI plumbing: error reporting, JSON output."""

from __future__ import annotations

import json
import sys
from typing import IO, Any

import click

__all__ = ["CliError", "echo_json", "fail", "run_cli", "show_click_error"]


class CliError(click.ClickException):
    """A user error: one ``error: ...`` line and exit code 1, also under click's own runner."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def show_click_error(exc: click.ClickException) -> None:
    """click's report in our style: usage errors keep their usage line and hint, and every error
    is one line starting with ``error:`` (click's default is ``Error:``)."""
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        click.echo(exc.ctx.get_usage(), err=True)
        if exc.ctx.command.get_help_option(exc.ctx) is not None:
            click.echo(f"Try '{exc.ctx.command_path} {exc.ctx.help_option_names[0]}' for help.", err=True)
    click.echo(f"error: {exc.format_message()}", err=True)


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
        show_click_error(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except user_errors() as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def user_errors() -> tuple[type[BaseException], ...]:
    """Base errors of the packages, looked up only if those packages are already imported (a
    package that was never imported raised nothing), so ``edge --help`` imports none of them."""
    found: list[type[BaseException]] = []
    for module, name in (
        ("edge_runtime", "EdgeError"),
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
    raise CliError(message)
