"""``edge cloud serve``: run the cloud service under uvicorn."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

__all__ = ["serve_cmd"]

log = logging.getLogger(__name__)


@click.command("serve")
@click.option("-c", "--config", "config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file with the service settings (EDGE_CLOUD_* variables override it).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="Worker processes (each one a replica sharing the database and the object store).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Home of the embedded defaults (SQLite file, bundles, cache).")
@click.option("--database-url", help="SQLAlchemy URL, e.g. postgresql://edge@db/edge.")
@click.option("--trusted-key", "trusted_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Ed25519 public key (PEM) bundles must be signed with; repeatable.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def serve_cmd(config: Path | None, host: str, port: int, workers: int, data_dir: Path | None,
              database_url: str | None, trusted_keys: tuple[str, ...], log_level: str) -> None:
    """Start the cloud service: registry, online inference, devices, dashboard at /.

    The admin token comes from the config file or EDGE_CLOUD_ADMIN_TOKEN (never from the command
    line, where other users could read it in the process list). Every setting X can be overridden
    by EDGE_CLOUD_X; EDGE_* without CLOUD_ is the device's. The database schema is migrated to the
    newest revision at start-up (see `edge cloud db`).
    """
    import uvicorn

    from cloud_sync.service import CONFIG_ENV, ENV_PREFIX, ServiceSettings, legacy_env_names

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    if trusted_keys:
        overrides["trusted_keys"] = [Path(k) for k in trusted_keys]
    for old, new in legacy_env_names(os.environ).items():
        click.echo(f"warning: {old} is set but the service reads {new} (EDGE_* without CLOUD_ is the "
                   "device's)", err=True)
    settings = ServiceSettings.from_toml(config, **overrides)
    if settings.admin_hash is None:
        click.echo(f"warning: no admin token configured (admin_token or {ENV_PREFIX}ADMIN_TOKEN); admin "
                   "endpoints will refuse every call", err=True)
    if not settings.trusted_keys:
        click.echo("warning: no trusted keys configured; the registry will refuse every upload", err=True)
    click.echo(f"edge cloud service on http://{host}:{port}  (dashboard /, API docs /docs)", err=True)
    if workers == 1:
        from cloud_sync.service import create_app

        with _metrics_dir(create=False):  # one process: per-process metrics, unless the variable asks
            uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
        return
    # Several processes: each builds its own app from the same file and variables (inherited).
    if config is not None:
        os.environ[CONFIG_ENV] = str(config.resolve())
    for key, value in overrides.items():
        os.environ[f"{ENV_PREFIX}{key.upper()}"] = (json.dumps([str(k) for k in value])
                                                    if key == "trusted_keys" else str(value))
    with _metrics_dir():
        uvicorn.run("cloud_sync.service:create_app_from_env", factory=True, host=host, port=port,
                    workers=workers, log_level=log_level)


@contextlib.contextmanager
def _metrics_dir(create: bool = True) -> Iterator[Path | None]:
    """The workers' shared Prometheus directory (prometheus_client's multiprocess mode), set
    before they start so /metrics adds up every worker: the one PROMETHEUS_MULTIPROC_DIR names,
    emptied of an earlier run's files, or else (``create``) a fresh one, removed on the way out."""
    from cloud_sync.service import MULTIPROC_ENV, clean_multiprocess_dir

    given = os.environ.get(MULTIPROC_ENV)
    if given:
        path = Path(given)
        clean_multiprocess_dir(path)
        yield path
        return
    if not create:
        yield None
        return
    path = Path(tempfile.mkdtemp(prefix="edge-cloud-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)
