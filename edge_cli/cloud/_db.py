"""``edge cloud db upgrade | current``: the cloud database's schema (Alembic migrations)."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["db_group"]

_db_opt = click.option("--db", "db_url", metavar="URL",
                       help="SQLAlchemy URL (default: the service's database_url from --config or "
                            "EDGE_CLOUD_DATABASE_URL, else the embedded SQLite file).")
_config_opt = click.option("-c", "--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                           help="The service's TOML file (`edge cloud serve --config`), for its database_url.")


def _database_url(db_url: str | None, config: Path | None) -> str:
    if db_url is not None:
        return db_url
    from cloud_sync.service import ServiceSettings

    return ServiceSettings.from_toml(config).resolved_database_url


@click.group("db")
def db_group() -> None:
    """The cloud database's schema: one database for the service and the ingester, migrated with
    Alembic. Both also upgrade it when they start; this is for doing it (or checking) beforehand."""


@db_group.command("upgrade")
@_db_opt
@_config_opt
def upgrade_cmd(db_url: str | None, config: Path | None) -> None:
    """Migrate the schema to the newest revision (a database made before migrations is adopted
    with its data). Running it again does nothing."""
    from cloud_sync.db import make_engine, upgrade

    engine = make_engine(_database_url(db_url, config), create_tables=False)
    try:
        before, after = upgrade(engine)
    finally:
        engine.dispose()
    where = engine.url.render_as_string(hide_password=True)
    if before == after:
        click.echo(f"{where}: already at revision {after}")
    else:
        click.echo(f"{where}: migrated from {before or 'no revision'} to {after}")


@db_group.command("current")
@_db_opt
@_config_opt
def current_cmd(db_url: str | None, config: Path | None) -> None:
    """Show the database's revision and the newest one this version knows."""
    from cloud_sync.db import current_revision, head_revision, make_engine

    engine = make_engine(_database_url(db_url, config), create_tables=False)
    try:
        current = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    state = "up to date" if current == head else "not the newest: `edge cloud db upgrade` migrates it"
    click.echo(f"{engine.url.render_as_string(hide_password=True)}: revision {current or 'none'} "
               f"(newest: {head}; {state})")
